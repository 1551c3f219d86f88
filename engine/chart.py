"""The price chart of one strategy ticker (GET /api/strategies/chart): its recent completed bars,
the lines the strategy computed on them, its fills as entry/exit markers, and the stop armed now.

The lines are never recomputed here: a running ticker's thread keeps each bar it was fed with the
indicator values it had after that bar (`StrategyRunner.recent_bars`, warm-up included), so the
chart shows exactly what the strategy decided on. Bars it did not see (the ticker is stopped, or
they are older than what it keeps) come from the Redis bar history without lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.timeframes import Timeframe
from domain.market import Bar
from domain.orders import OrderState
from domain.tickers import StrategyName
from strategies import STRATEGY_CLASSES

if TYPE_CHECKING:
    from engine.services import Services

MAX_BARS = 500
MAX_MARKERS = 200


class ChartUnavailable(RuntimeError):
    """No market data service runs in this process: there are no bars to draw."""


@dataclass(frozen=True, slots=True)
class Marker:
    """One fill of the ticker's orders: an entry (leg open) or an exit (leg close)."""

    ts_ns: int
    side: str  # BUY / SELL
    leg: str  # open / close / stop (a protective stop that fired at the broker)
    price: str | None
    quantity: int
    broker: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "side": self.side, "leg": self.leg, "price": self.price,
                "quantity": self.quantity, "broker": self.broker, "reason": self.reason}


def _identity(bar: Bar) -> tuple[int, int]:
    return bar.start_ns, bar.end_ns


def strategy_chart(services: Services, strategy: StrategyName, symbol: str, limit: int = MAX_BARS) -> dict[str, Any]:
    """The chart document; LookupError when `symbol` is not one of the strategy's tickers."""
    config = services.tickers.get_map(strategy).get(symbol)
    if config is None:
        raise LookupError(f"{symbol} is not a {strategy.value} ticker")
    if services.market_data is None:
        raise ChartUnavailable("the market data service is not running in this process")
    limit = max(1, min(limit, MAX_BARS))
    runner = services.engine.runner(strategy.value, symbol) if services.engine is not None else None
    computed = dict(((_identity(bar), (bar, values)) for bar, values in runner.recent_bars()) if runner else ())
    bars = {_identity(bar): bar for bar in services.market_data.history(symbol, Timeframe.parse(config.timeframe),
                                                                       limit)}
    bars.update({key: bar for key, (bar, _) in computed.items()})
    names = STRATEGY_CLASSES[strategy].price_lines
    rows = []
    for key in sorted(bars)[-limit:]:
        values = computed[key][1] if key in computed else None
        lines = {name: values.get(name) for name in names} if values is not None else None
        rows.append({**bars[key].to_json(), "lines": lines})
    since = rows[0]["start_ns"] if rows else 0
    status = runner.status if runner is not None else None
    return {
        "strategy": strategy.value, "symbol": symbol, "timeframe": config.timeframe,
        "lines": list(names), "bars": rows,
        "markers": [m.to_json() for m in _fills(services, strategy, symbol, since)],
        "position": status.position if status is not None else None,
        "stop": status.indicators.get("stop") if status is not None else None,
    }


def _fills(services: Services, strategy: StrategyName, symbol: str, since_ns: int) -> list[Marker]:
    """The ticker's filled orders since `since_ns`, oldest first (at most MAX_MARKERS)."""
    if services.orders is None:
        return []
    records = services.orders.orders(strategy=strategy.value, symbol=symbol, state=OrderState.FILLED,
                                     limit=MAX_MARKERS)
    markers = [Marker(r.updated_ns, r.side.value, r.leg,
                      None if r.avg_fill_price is None else str(r.avg_fill_price), r.filled_quantity, r.broker,
                      r.detail or r.intent_reason or r.reason)
               for r in records if r.updated_ns >= since_ns]
    return sorted(markers, key=lambda m: m.ts_ns)
