"""Ticker configurations: what `add-ticker` stores and `get-ticker` returns.

`TickerConfig.from_payload` is the single validator for the dashboard's JSON, the engine's
stored configs and the backtest CLI flags. It raises `TickerValidationError` naming the field.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, Mapping

from config.instruments import CATALOG, AssetClass, UnknownSymbolError, canonical_symbol
from config.timeframes import Timeframe, TimeframeError
from domain.parsing import NumberError, ParseError, parse_bool, parse_float, parse_int


class StrategyName(StrEnum):
    EMA = "ema"
    SUPERTREND = "supertrend"
    ZERODAY = "zeroday"


class TrendLine(StrEnum):
    EMA = "EMA"
    SMA = "SMA"
    WILDER = "WilderSmoother"


class StartBehavior(StrEnum):
    """What a ticker does on its first start (no saved state) when the book holds nothing.

    `wait_for_signal`: stays flat until its rules signal on a live bar (a crossover waits for the
    next cross). `join_current`: takes the position its rules hold after the warm-up (the side of
    the last cross, or the Supertrend position still open on the last history bar), at the market,
    then trades its rules from there; a strategy whose rules hold nothing stays flat. NinjaTrader
    calls the two "wait until flat" and "immediately submit"."""

    WAIT_FOR_SIGNAL = "wait_for_signal"
    JOIN_CURRENT = "join_current"


class TickerValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


MAX_QUANTITY = 10_000
MAX_PERIOD = 1_000
_STOP_LOSS_CHOICE = ("stop_loss_ticks", "stop_loss_atr")  # ema: a stop in ticks or in ATRs


def parse_strategy(raw: object) -> StrategyName:
    if not isinstance(raw, str):
        raise TickerValidationError("strategy", "must be one of ema, supertrend, zeroday")
    try:
        return StrategyName(raw.strip().lower())
    except ValueError:
        raise TickerValidationError("strategy", f"{raw[:20]!r} is not one of ema, supertrend, zeroday") from None


def parse_start_behavior(raw: object, strategy: StrategyName) -> StartBehavior:
    choices = ", ".join(b.value for b in StartBehavior)
    if not isinstance(raw, str):
        raise TickerValidationError("start_behavior", f"must be one of {choices}")
    try:
        behavior = StartBehavior(raw.strip().lower())
    except ValueError:
        raise TickerValidationError("start_behavior", f"{raw[:30]!r} is not one of {choices}") from None
    if behavior is StartBehavior.JOIN_CURRENT and strategy is StrategyName.ZERODAY:
        raise TickerValidationError("start_behavior", "join_current is for ema and supertrend: zeroday buys "
                                    "today's option on a live signal only")
    return behavior


def _whole(payload: Mapping[str, Any], name: str, default: int | None, minimum: int, maximum: int) -> int:
    raw = payload.get(name, default)
    if raw is None:
        raise TickerValidationError(name, "is required")
    try:
        return parse_int(raw, minimum, maximum)
    except NumberError as exc:
        raise TickerValidationError(name, exc.message) from None


def _number(payload: Mapping[str, Any], name: str, default: float, minimum: float, maximum: float) -> float:
    try:
        return parse_float(payload.get(name, default), minimum, maximum)
    except NumberError as exc:
        raise TickerValidationError(name, exc.message) from None


def _bool(payload: Mapping[str, Any], name: str, default: bool | None) -> bool:
    try:
        return parse_bool(payload.get(name, default))
    except ParseError as exc:
        raise TickerValidationError(name, exc.message) from None


def parse_trend_line(raw: object, name: str = "trend_line") -> TrendLine:
    if isinstance(raw, str):
        text = raw.strip().lower()
        for line in TrendLine:
            if text == line.value.lower() or (line is TrendLine.WILDER and text == "wilder"):
                return line
    raise TickerValidationError(name, "must be EMA, SMA or WilderSmoother")


def _trend_line(payload: Mapping[str, Any], name: str) -> TrendLine:
    return parse_trend_line(payload.get(name, "EMA"), name)


@dataclass(frozen=True, slots=True)
class TickerConfig:
    strategy: StrategyName
    symbol: str  # canonical
    timeframe: str  # raw form
    trade_enabled: bool
    schwab_quantity: int
    tastytrade_quantity: int
    # ema / zeroday
    trend_line_1: TrendLine = TrendLine.EMA
    period_1: int = 9
    trend_line_2: TrendLine = TrendLine.EMA
    period_2: int = 21
    stop_loss_ticks: int = 0  # ema optional stop; 0 = off
    stop_loss_atr: float = 0.0  # ema optional stop as ATR multiple; 0 = off
    # supertrend
    atr_period: int = 10
    multiplier: float = 3.0
    trailing_stop_atr: float = 2.0  # 0 = off
    take_profit_atr: float = 3.0  # 0 = off
    # zeroday: which side may be bought (the dashboard's Call / Put switches)
    call_enabled: bool = True
    put_enabled: bool = True
    # ema / supertrend
    start_behavior: StartBehavior = StartBehavior.WAIT_FOR_SIGNAL

    @property
    def tf(self) -> Timeframe:
        return Timeframe.parse(self.timeframe)

    @property
    def uses_trend_lines(self) -> bool:
        return self.strategy in (StrategyName.EMA, StrategyName.ZERODAY)

    @staticmethod
    def from_payload(payload: Mapping[str, Any], strategy: StrategyName | None = None) -> "TickerConfig":
        if not isinstance(payload, Mapping):
            raise TickerValidationError("body", "must be a JSON object")
        strat = strategy or parse_strategy(payload.get("strategy"))
        try:
            symbol = canonical_symbol(payload.get("symbol"))
        except UnknownSymbolError as exc:
            raise TickerValidationError("symbol", str(exc)) from None
        instrument = CATALOG[symbol]
        if strat is StrategyName.ZERODAY and symbol != "SPX":
            raise TickerValidationError("symbol", "the zeroday strategy trades SPX 0DTE options only")
        if strat is not StrategyName.ZERODAY and instrument.asset_class is AssetClass.INDEX:
            raise TickerValidationError("symbol", "SPX is an index and is only tradable through the zeroday strategy")
        try:
            timeframe = Timeframe.parse(payload.get("timeframe"))
        except TimeframeError as exc:
            raise TickerValidationError("timeframe", str(exc)) from None
        schwab_qty = _whole(payload, "schwab_quantity", None, 0, MAX_QUANTITY)
        if instrument.is_future and schwab_qty > 0:
            raise TickerValidationError(
                "schwab_quantity",
                "Schwab's API cannot trade futures; set schwab_quantity to 0 and trade "
                f"{symbol} through Tastytrade",
            )
        config = TickerConfig(
            strategy=strat, symbol=symbol, timeframe=timeframe.raw,
            trade_enabled=_bool(payload, "trade_enabled", None),
            schwab_quantity=schwab_qty,
            tastytrade_quantity=_whole(payload, "tastytrade_quantity", None, 0, MAX_QUANTITY),
        )
        if config.uses_trend_lines:
            period_1 = _whole(payload, "period_1", None, 1, MAX_PERIOD)
            period_2 = _whole(payload, "period_2", None, 1, MAX_PERIOD)
            if period_1 >= period_2:
                raise TickerValidationError("period_1", "must be smaller than period_2")
            config = replace(
                config, trend_line_1=_trend_line(payload, "trend_line_1"), period_1=period_1,
                trend_line_2=_trend_line(payload, "trend_line_2"), period_2=period_2,
            )
        if strat is StrategyName.EMA:
            config = replace(
                config,
                stop_loss_ticks=_whole(payload, "stop_loss_ticks", 0, 0, 100_000),
                stop_loss_atr=_number(payload, "stop_loss_atr", 0.0, 0.0, 100.0),
                atr_period=_whole(payload, "atr_period", 14, 1, MAX_PERIOD),
            )
        if strat is StrategyName.ZERODAY:
            config = replace(config, call_enabled=_bool(payload, "call_enabled", True),
                             put_enabled=_bool(payload, "put_enabled", True))
        if "start_behavior" in payload and payload["start_behavior"] is not None:
            config = replace(config, start_behavior=parse_start_behavior(payload["start_behavior"], strat))
        if strat is StrategyName.SUPERTREND:
            config = replace(
                config,
                atr_period=_whole(payload, "atr_period", 10, 1, MAX_PERIOD),
                multiplier=_number(payload, "multiplier", 3.0, 0.1, 100.0),
                trailing_stop_atr=_number(payload, "trailing_stop_atr", 2.0, 0.0, 100.0),
                take_profit_atr=_number(payload, "take_profit_atr", 3.0, 0.0, 100.0),
            )
        return config

    def to_row(self) -> list[str]:
        """get-ticker's positional array of strings (the dashboard's contract)."""
        row = [self.timeframe, str(self.schwab_quantity), "TRUE" if self.trade_enabled else "FALSE",
               str(self.tastytrade_quantity)]
        if self.uses_trend_lines:
            row += [self.trend_line_1.value, str(self.period_1), self.trend_line_2.value, str(self.period_2)]
        if self.strategy is StrategyName.ZERODAY:  # the original backend's row positions 8 and 9
            row += ["TRUE" if self.call_enabled else "FALSE", "TRUE" if self.put_enabled else "FALSE"]
        return row

    def optional_fields(self) -> dict[str, object]:
        """Strategy parameters beyond the positional row (shown by get-ticker's `params`)."""
        # start_behavior only when chosen: the default adds nothing to what get-ticker answered before
        start = ({} if self.start_behavior is StartBehavior.WAIT_FOR_SIGNAL
                 else {"start_behavior": self.start_behavior.value})
        if self.strategy is StrategyName.SUPERTREND:
            return {"atr_period": self.atr_period, "multiplier": self.multiplier,
                    "trailing_stop_atr": self.trailing_stop_atr, "take_profit_atr": self.take_profit_atr, **start}
        if self.strategy is StrategyName.EMA:
            return {"stop_loss_ticks": self.stop_loss_ticks, "stop_loss_atr": self.stop_loss_atr,
                    "atr_period": self.atr_period, **start}
        if self.strategy is StrategyName.ZERODAY:
            return {"call_enabled": self.call_enabled, "put_enabled": self.put_enabled}
        return {}

    def side_enabled(self, long_side: bool) -> bool:
        """zeroday: may the call (long view) or the put (short view) be bought? Others: always."""
        if self.strategy is not StrategyName.ZERODAY:
            return True
        return self.call_enabled if long_side else self.put_enabled

    def kept_by_update(self, payload: Mapping[str, Any]) -> dict[str, object]:
        """The optional parameters an update `payload` leaves out, at this (stored) config's values.

        The dashboard's save and Trade switch post only the row fields; without this, toggling a
        ticker would silently reset its stop-loss or Supertrend parameters to the defaults. The two
        stop-loss kinds are one choice: naming either replaces both."""
        kept = {name: value for name, value in self.optional_fields().items() if name not in payload}
        if any(name in payload for name in _STOP_LOSS_CHOICE):
            for name in _STOP_LOSS_CHOICE:
                kept.pop(name, None)
        return kept

    def to_json(self) -> str:
        data = asdict(self)
        # Left out at its default so the configs stored before the field existed compare equal
        # (a runner rebuilds its indicators when the stored config changes).
        if self.start_behavior is StartBehavior.WAIT_FOR_SIGNAL:
            del data["start_behavior"]
        return json.dumps(data, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TickerConfig":
        data = json.loads(text)
        return TickerConfig.from_payload(data, StrategyName(data["strategy"]))
