"""The instrument catalog: every symbol the product trades, with its real contract properties.

Symbols are accepted as "/MES" or "MES" and stored canonically as "/MES" for futures, plain
tickers for equities and the index. Prices that reach an order are `Decimal` multiples of the
instrument's tick size (`Instrument.round_price`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import NewType

Symbol = NewType("Symbol", str)  # canonical catalog symbol: "/MES", "NVDA", "SPX"


class AssetClass(StrEnum):
    FUTURE = "future"
    EQUITY = "equity"
    INDEX = "index"
    OPTION = "option"


class UnknownSymbolError(ValueError):
    """The symbol is not in the catalog (or is not a plausible symbol at all)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: Symbol
    root: str  # exchange product code: "MES", "NVDA", "SPX"
    asset_class: AssetClass
    description: str
    exchange: str
    tick_size: Decimal
    multiplier: Decimal  # currency per 1.0 point per contract/share
    currency: str
    calendar: str  # pandas-market-calendars name
    typical_price: Decimal  # starting level for the simulated feed
    daily_volatility: float  # typical daily return stdev, for the simulated feed

    @property
    def tick_value(self) -> Decimal:
        return self.tick_size * self.multiplier

    @property
    def is_future(self) -> bool:
        return self.asset_class is AssetClass.FUTURE

    @property
    def file_stem(self) -> str:
        """Name used for per-instrument log files: "/MES" -> "MES"."""
        return self.root

    def round_price(self, price: float | Decimal) -> Decimal:
        """Round to the nearest tick; the result is safe to put in an order."""
        ticks = (Decimal(str(price)) / self.tick_size).to_integral_value(rounding=ROUND_HALF_UP)
        return (ticks * self.tick_size).quantize(self.tick_size)

    def to_ticks(self, price: float | Decimal) -> int:
        return int((Decimal(str(price)) / self.tick_size).to_integral_value(rounding=ROUND_HALF_UP))


def _future(root: str, description: str, tick: str, multiplier: str, price: str, vol: float) -> Instrument:
    return Instrument(
        symbol=Symbol("/" + root), root=root, asset_class=AssetClass.FUTURE, description=description,
        exchange="CME", tick_size=Decimal(tick), multiplier=Decimal(multiplier), currency="USD",
        calendar="CME_Equity", typical_price=Decimal(price), daily_volatility=vol,
    )


def _equity(root: str, description: str, price: str, vol: float) -> Instrument:
    return Instrument(
        symbol=Symbol(root), root=root, asset_class=AssetClass.EQUITY, description=description,
        exchange="NASDAQ", tick_size=Decimal("0.01"), multiplier=Decimal(1), currency="USD",
        calendar="NYSE", typical_price=Decimal(price), daily_volatility=vol,
    )


CATALOG: dict[Symbol, Instrument] = {
    i.symbol: i
    for i in (
        # CME Group contract specs: tick size and multiplier (tick value = tick x multiplier).
        _future("MES", "Micro E-mini S&P 500", "0.25", "5", "6000", 0.011),  # $1.25/tick
        _future("ES", "E-mini S&P 500", "0.25", "50", "6000", 0.011),  # $12.50/tick
        _future("MNQ", "Micro E-mini Nasdaq-100", "0.25", "2", "21000", 0.014),  # $0.50/tick
        _future("NQ", "E-mini Nasdaq-100", "0.25", "20", "21000", 0.014),  # $5.00/tick
        _future("M2K", "Micro E-mini Russell 2000", "0.10", "5", "2300", 0.015),  # $0.50/tick
        _future("RTY", "E-mini Russell 2000", "0.10", "50", "2300", 0.015),  # $5.00/tick
        _equity("MSTR", "MicroStrategy (Strategy Inc.)", "350", 0.05),
        _equity("TSLA", "Tesla", "350", 0.035),
        _equity("NVDA", "NVIDIA", "180", 0.03),
        Instrument(
            symbol=Symbol("SPX"), root="SPX", asset_class=AssetClass.INDEX, description="S&P 500 Index",
            exchange="CBOE", tick_size=Decimal("0.01"), multiplier=Decimal(100), currency="USD",
            calendar="CBOE_Index_Options", typical_price=Decimal("6000"), daily_volatility=0.011,
        ),
    )
}

# SPX options: $100 multiplier; CBOE minimum tick 0.05 below $3.00, 0.10 at or above.
SPX_OPTION_MULTIPLIER = Decimal(100)

_SYMBOL_SHAPE = re.compile(r"^/?[A-Za-z0-9]{1,10}$")


def canonical_symbol(raw: object) -> Symbol:
    """Map user input ("MES", "/mes", " NVDA ") to the catalog's canonical symbol.

    Raises UnknownSymbolError for anything not in the catalog, including path-like input.
    """
    if type(raw) is str and raw in CATALOG:  # already canonical (the hot path: every order and trade)
        return raw  # type: ignore[return-value]
    if not isinstance(raw, str):
        raise UnknownSymbolError("symbol must be a string")
    text = raw.strip().upper()
    if not _SYMBOL_SHAPE.match(text):
        raise UnknownSymbolError(f"symbol {raw[:20]!r} is not a valid symbol")
    bare = text.lstrip("/")
    for candidate in (Symbol("/" + bare), Symbol(bare)):
        if candidate in CATALOG:
            return candidate
    raise UnknownSymbolError(f"symbol {bare!r} is not in the catalog ({', '.join(CATALOG)})")


def get_instrument(raw: object) -> Instrument:
    return CATALOG[canonical_symbol(raw)]
