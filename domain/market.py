"""Market data messages: trades in, completed bars out.

Prices in market data are floats (indicators are float maths); any price that reaches an order is
converted with `Instrument.round_price` to a Decimal tick multiple. Timestamps are integer
nanoseconds since the epoch, UTC, as Databento delivers them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str  # canonical catalog symbol, e.g. "/MES"
    ts_ns: int  # exchange event time
    price: float
    size: int
    sequence: int = 0  # feed sequence when known; used to drop duplicates after reconnects

    def to_fields(self) -> dict[str, str]:
        return {"t": str(self.ts_ns), "p": repr(self.price), "s": str(self.size), "q": str(self.sequence)}

    @staticmethod
    def from_fields(symbol: str, fields: dict[str, str]) -> "Trade":
        return Trade(symbol, int(fields["t"]), float(fields["p"]), int(fields["s"]), int(fields.get("q", 0)))


@dataclass(frozen=True, slots=True)
class Bar:
    """A completed bar. `start_ns` is inclusive, `end_ns` exclusive for time bars; for tick bars
    `end_ns` is the timestamp of the closing trade."""

    symbol: str
    timeframe: str  # raw timeframe form: "1", "5", "1h", "1d", "512t"
    start_ns: int
    end_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int
    gapped: bool = False  # True when feed data inside the bar may be missing

    def to_fields(self) -> dict[str, str]:
        return {
            "sym": self.symbol, "tf": self.timeframe, "start": str(self.start_ns), "end": str(self.end_ns),
            "o": repr(self.open), "h": repr(self.high), "l": repr(self.low), "c": repr(self.close),
            "v": str(self.volume), "n": str(self.trade_count), "gap": "1" if self.gapped else "0",
        }

    @staticmethod
    def from_fields(fields: dict[str, str]) -> "Bar":
        return Bar(
            symbol=fields["sym"], timeframe=fields["tf"], start_ns=int(fields["start"]), end_ns=int(fields["end"]),
            open=float(fields["o"]), high=float(fields["h"]), low=float(fields["l"]), close=float(fields["c"]),
            volume=int(fields["v"]), trade_count=int(fields["n"]), gapped=fields.get("gap") == "1",
        )

    def to_json(self) -> dict[str, object]:
        return {
            "symbol": self.symbol, "timeframe": self.timeframe, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "open": self.open, "high": self.high, "low": self.low, "close": self.close,
            "volume": self.volume, "trade_count": self.trade_count, "gapped": self.gapped,
        }
