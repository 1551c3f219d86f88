"""Instruments outside the catalog, for research: `--tick-size`, `--contract-multiplier`,
`--calendar` on a symbol the catalog does not list (a 6E or EURUSD file, a crypto pair).

The backtester runs the live strategy classes, session calendars and fill model, which all find an
instrument's properties through `config.instruments.CATALOG`. So a research instrument is added to
that process's catalog (`ensure_registered`), in the backtest process and in each sweep worker
(it travels with the data: `MarketData.instrument`), and never in the trading service: the API's
backtest jobs run in their own process. A symbol the catalog already has keeps its real contract
properties: giving it other ones is refused.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from config.instruments import CATALOG, AssetClass, Instrument, Symbol, UnknownSymbolError, canonical_symbol

_SHAPE = re.compile(r"^/?[A-Z0-9][A-Z0-9._]{0,19}$")


class InstrumentError(ValueError):
    """The instrument options cannot be used; one line for the user."""


def catalog_symbol(raw: str) -> Symbol | None:
    try:
        return canonical_symbol(raw)
    except UnknownSymbolError:
        return None


def research_instrument(symbol: str, tick_size: str | None, multiplier: str | None, calendar: str | None) -> Instrument | None:
    """The instrument a backtest trades: None for a catalog symbol given no other properties (the
    catalog's instrument is used), a research instrument for a symbol outside the catalog.
    "/6E" is a future, "EURUSD" an equity-like instrument (the asset class only matters for the
    broker checks of a live ticker)."""
    known = catalog_symbol(symbol)
    if known is not None:
        inst = CATALOG[known]
        given = {"--tick-size": (tick_size, inst.tick_size), "--contract-multiplier": (multiplier, inst.multiplier),
                 "--calendar": (calendar, inst.calendar)}
        for flag, (value, real) in given.items():
            if value is None:
                continue
            if not (value == real if flag == "--calendar" else _same_number(value, real)):  # type: ignore[arg-type]
                raise InstrumentError(f"{known} is in the catalog ({inst.description}: tick {inst.tick_size}, "
                                      f"multiplier {inst.multiplier}, calendar {inst.calendar}); {flag} is for "
                                      "symbols outside it")
        if known in _REGISTERED:
            return CATALOG[known]
        return None
    text = symbol.strip().upper()
    if not _SHAPE.match(text):
        raise InstrumentError(f"--symbol {symbol[:24]!r}: letters, digits, '.' or '_' (up to 20), optionally after '/'")
    if tick_size is None:
        raise InstrumentError(f"--symbol {text} is not in the catalog ({', '.join(CATALOG)}): give its --tick-size "
                              "(and --contract-multiplier, --calendar)")
    tick = _positive("--tick-size", tick_size)
    mult = _positive("--contract-multiplier", multiplier) if multiplier is not None else Decimal(1)
    cal = calendar or "24/7"
    from market_data.calendars import UnknownCalendarError, check_calendar_name

    try:
        check_calendar_name(cal)
    except UnknownCalendarError as exc:
        raise InstrumentError(f"--calendar: {exc}") from None
    future = text.startswith("/")
    return Instrument(
        symbol=Symbol(text), root=text.lstrip("/"), asset_class=AssetClass.FUTURE if future else AssetClass.EQUITY,
        description=f"{text} · tick {tick} · multiplier {mult}", exchange=cal, tick_size=tick,
        multiplier=mult, currency="", calendar=cal, typical_price=Decimal(0), daily_volatility=0.0,
    )


_REGISTERED: set[Symbol] = set()


def ensure_registered(instrument: Instrument | None) -> None:
    """Make a research instrument known to this process's catalog (idempotent). A catalog symbol
    is never replaced."""
    if instrument is None:
        return
    current = CATALOG.get(instrument.symbol)
    if current is None:
        CATALOG[instrument.symbol] = instrument
        _REGISTERED.add(instrument.symbol)
    elif current != instrument:
        raise InstrumentError(f"{instrument.symbol} is already known with other properties "
                              f"(tick {current.tick_size}, multiplier {current.multiplier}, calendar {current.calendar})")


def forget_all() -> None:
    """Remove every research instrument `ensure_registered` added (the end of an in-process run)."""
    for symbol in list(_REGISTERED):
        CATALOG.pop(symbol, None)
        _REGISTERED.discard(symbol)


def _positive(flag: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InstrumentError(f"{flag} must be a number, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise InstrumentError(f"{flag} must be a positive number, got {raw!r}")
    return value


def _same_number(raw: str, real: Decimal) -> bool:
    try:
        return Decimal(raw) == real
    except InvalidOperation:
        return False
