"""Venue codes for catalog instruments, and the front-month roll for equity-index futures.

CME equity-index futures (ES, MES, NQ, MNQ, RTY, M2K) are quarterly: March (H), June (M),
September (U), December (Z). They expire on the third Friday of the contract month. Roll rule
(stated, and tested across a roll date): we trade the next contract from the **second Thursday of
the expiry month** onward (8 days before expiry), the day CME's own roll calendar moves open
interest. Before that day, the expiring contract is the front month.

Codes per venue for the December 2025 Micro E-mini S&P:
- Databento (GLBX.MDP3) raw symbol `MESZ5`, continuous `MES.c.0` (calendar) / `MES.v.0` (volume)
- Tastytrade `/MESZ5`
- Schwab `/MESZ25` (quotes only: Schwab's trading API has no futures)
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from config.instruments import CATALOG, AssetClass, Instrument, Symbol, canonical_symbol

NEW_YORK = ZoneInfo("America/New_York")
QUARTER_MONTHS = (3, 6, 9, 12)
MONTH_CODES = {1: "F", 2: "G", 3: "H", 4: "J", 5: "K", 6: "M", 7: "N", 8: "Q", 9: "U", 10: "V", 11: "X", 12: "Z"}

DATABENTO_FUTURES_DATASET = "GLBX.MDP3"
# Databento US Equities Mini: trades and OHLCV aggregated across the exchanges and ATSs whose own
# feeds Databento captures, rather than XNAS.ITCH's Nasdaq prints alone (README, Databento).
DATABENTO_EQUITIES_DATASET = "EQUS.MINI"


def third_friday(year: int, month: int) -> date:
    first_weekday, _ = calendar.monthrange(year, month)  # Monday = 0
    first_friday = 1 + (4 - first_weekday) % 7
    return date(year, month, first_friday + 14)


def roll_date(year: int, month: int) -> date:
    """Second Thursday of the expiry month: 8 days before the third-Friday expiry."""
    return third_friday(year, month) - timedelta(days=8)


@dataclass(frozen=True, slots=True)
class FutureContract:
    root: str  # "MES"
    year: int
    month: int

    @property
    def month_code(self) -> str:
        return MONTH_CODES[self.month]

    @property
    def expiration(self) -> date:
        return third_friday(self.year, self.month)

    @property
    def databento(self) -> str:
        return f"{self.root}{self.month_code}{self.year % 10}"

    @property
    def tastytrade(self) -> str:
        return f"/{self.root}{self.month_code}{self.year % 10}"

    @property
    def schwab(self) -> str:
        return f"/{self.root}{self.month_code}{self.year % 100:02d}"

    @property
    def key(self) -> str:
        """How the book and reconciliation name a position in this contract ("/MESZ25"): one key
        per contract month, so positions in two months never collapse into one."""
        return f"/{self.root}{self.month_code}{self.year % 100:02d}"


_CONTRACT_KEY = re.compile(r"^/([A-Z0-9]+?)([FGHJKMNQUVXZ])(\d{2})$")
_CODE_MONTHS = {code: month for month, code in MONTH_CODES.items()}


def contract_from_key(key: str) -> FutureContract | None:
    """"/MESZ25" -> the December 2025 MES contract; None for anything else ("/MES", "NVDA", OCC)."""
    match = _CONTRACT_KEY.match(key)
    if match is None or Symbol("/" + match.group(1)) not in CATALOG:
        return None
    return FutureContract(match.group(1), 2000 + int(match.group(3)), _CODE_MONTHS[match.group(2)])


def contract_from_venue(code: str, near: date) -> FutureContract | None:
    """A venue's contract code ("/MESZ5" Tastytrade, "MESZ5" Databento, "/MESZ25" Schwab) -> the
    contract; a one-digit year is the one within the decade around `near`. None for other codes."""
    match = _RAW_FUTURE.match(code.strip().upper().lstrip("/"))
    if match is None or Symbol("/" + match.group(1)) not in CATALOG:
        return None
    digits = match.group(3)
    if len(digits) == 2:
        year = 2000 + int(digits)
    else:  # the year ending in that digit nearest `near` (a contract listed up to a few years out)
        year = min((near.year - 5 + k for k in range(10) if (near.year - 5 + k) % 10 == int(digits)),
                   key=lambda y: abs(y - near.year))
    return FutureContract(match.group(1), year, _CODE_MONTHS[match.group(2)])


def new_york_date(ts_ns: int) -> date:
    """The New York calendar date of a moment: the roll rule is stated in exchange (ET) days."""
    return datetime.fromtimestamp(ts_ns / 1e9, NEW_YORK).date()


def contract_key_at(symbol: str | Symbol, ts_ns: int) -> str | None:
    """The front-month contract key a futures symbol trades at `ts_ns` (New York date); None for
    an instrument that is not a future."""
    instrument = CATALOG[canonical_symbol(symbol)]
    if instrument.asset_class is not AssetClass.FUTURE:
        return None
    return front_month(instrument.root, new_york_date(ts_ns)).key


def front_month(root: str, on: date) -> FutureContract:
    """The contract we trade on `on` under the roll rule above."""
    year, month = on.year, on.month
    while True:
        quarter = next((m for m in QUARTER_MONTHS if m >= month), None)
        if quarter is None:
            year, month = year + 1, 1
            continue
        if on < roll_date(year, quarter):
            return FutureContract(root, year, quarter)
        month = quarter + 1
        if month > 12:
            year, month = year + 1, 1


@dataclass(frozen=True, slots=True)
class VenueSymbols:
    databento_dataset: str | None
    databento: str | None  # raw symbol to subscribe to (None: Databento has no feed, e.g. SPX index)
    databento_continuous: str | None
    tastytrade: str
    schwab: str


def venue_symbols(symbol: str | Symbol, on: date) -> VenueSymbols:
    instrument: Instrument = CATALOG[canonical_symbol(symbol)]
    if instrument.asset_class is AssetClass.FUTURE:
        contract = front_month(instrument.root, on)
        return VenueSymbols(
            DATABENTO_FUTURES_DATASET, contract.databento, f"{instrument.root}.c.0",
            contract.tastytrade, contract.schwab,
        )
    if instrument.asset_class is AssetClass.INDEX:
        # Databento carries no index values; SPX comes from a broker quote or the simulated feed.
        return VenueSymbols(None, None, None, instrument.root, f"${instrument.root}")
    return VenueSymbols(DATABENTO_EQUITIES_DATASET, instrument.root, None, instrument.root, instrument.root)


_RAW_FUTURE = re.compile(r"^([A-Z0-9]+?)([FGHJKMNQUVXZ])(\d{1,2})$")


def catalog_symbol_for_raw(raw: str) -> Symbol | None:
    """Map a venue/raw contract code back to the catalog symbol: "ESH4" -> "/ES", "MESZ25" ->
    "/MES", "/MESZ5" -> "/MES", "ES.c.0" -> "/ES", "NVDA" -> "NVDA", "$SPX" -> "SPX". None when the
    code is not one of our instruments (e.g. a spread "ESZ4-ESH5" or an option)."""
    text = raw.strip().upper().lstrip("/$")
    if "." in text:  # Databento continuous symbol: ROOT.c.0 / ROOT.v.0
        text = text.split(".", 1)[0]
        candidate = Symbol("/" + text)
        return candidate if candidate in CATALOG else None
    match = _RAW_FUTURE.match(text)
    if match:
        candidate = Symbol("/" + match.group(1))
        if candidate in CATALOG:
            return candidate
    for candidate in (Symbol(text), Symbol("/" + text)):
        if candidate in CATALOG and (CATALOG[candidate].asset_class is not AssetClass.FUTURE or candidate == "/" + text):
            return candidate
    return None
