"""P&L from the trade journal: realized (closed round trips, net of commissions) by strategy,
symbol, broker and day; unrealized from open lots and a mark-price callable; the equity curve.

Days are New York calendar dates of the exit (how the trader reads a statement).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable
from zoneinfo import ZoneInfo

from ledger.trades import Ledger, OpenLot, RoundTrip, TradeFilter

MarkPrice = Callable[[str], Decimal | float | None]  # position_key -> mark (None when unknown)
NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class Bucket:
    gross: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    net: Decimal = Decimal(0)
    trades: int = 0
    wins: int = 0
    losses: int = 0

    def add(self, t: RoundTrip) -> None:
        self.gross += t.gross_pnl
        self.commission += t.commission
        self.net += t.net_pnl
        self.trades += 1
        self.wins += t.net_pnl > 0
        self.losses += t.net_pnl < 0

    def to_json(self) -> dict[str, Any]:
        return {"gross": str(self.gross), "commission": str(self.commission), "net": str(self.net),
                "trades": self.trades, "wins": self.wins, "losses": self.losses,
                "win_rate": round(self.wins / self.trades, 4) if self.trades else None}


@dataclass
class PnlReport:
    total: Bucket = field(default_factory=Bucket)
    by_strategy: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_symbol: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_broker: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    by_day: dict[str, Bucket] = field(default_factory=lambda: defaultdict(Bucket))
    unrealized_total: Decimal = Decimal(0)
    unrealized_by_strategy: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    positions: list[dict[str, Any]] = field(default_factory=list)
    marks_missing: list[str] = field(default_factory=list)
    equity_curve: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def group(d: dict[str, Bucket]) -> dict[str, Any]:
            return {k: v.to_json() for k, v in sorted(d.items())}

        return {
            "realized": {"total": self.total.to_json(), "by_strategy": group(self.by_strategy),
                         "by_symbol": group(self.by_symbol), "by_broker": group(self.by_broker),
                         "by_day": group(self.by_day)},
            "unrealized": {"total": str(self.unrealized_total),
                           "by_strategy": {k: str(v) for k, v in sorted(self.unrealized_by_strategy.items())},
                           "positions": self.positions, "marks_missing": self.marks_missing},
            "equity_curve": self.equity_curve,
        }


def unrealized(lot: OpenLot, mark: Decimal) -> Decimal:
    """Mark-to-market of an open lot, before exit commissions."""
    return (mark - lot.avg_price) * lot.quantity * lot.multiplier


def _mark(mark_price: MarkPrice | None, key: str) -> Decimal | None:
    if mark_price is None:
        return None
    try:
        raw = mark_price(key)
    except Exception:  # noqa: BLE001 - a missing quote must not break the P&L page
        return None
    return None if raw is None else Decimal(str(raw))


def compute_pnl(ledger: Ledger, flt: TradeFilter | None = None, mark_price: MarkPrice | None = None) -> PnlReport:
    flt = flt or TradeFilter()
    trades, _ = ledger.trades(flt, limit=None, newest_first=False)
    report = PnlReport()
    equity = Decimal(0)
    for t in trades:
        report.total.add(t)
        report.by_strategy[t.strategy].add(t)
        report.by_symbol[t.symbol].add(t)
        report.by_broker[t.broker].add(t)
        report.by_day[t.exit_time.astimezone(NEW_YORK).date().isoformat()].add(t)
        equity += t.net_pnl
        report.equity_curve.append({"ts": t.exit_time.isoformat(), "equity": str(equity), "trade_id": t.id})
    for lot in ledger.open_positions():
        if (flt.strategy and lot.strategy != flt.strategy) or (flt.broker and lot.broker != flt.broker) or \
                (flt.symbol and flt.symbol not in (lot.symbol, lot.position_key)):
            continue
        mark = _mark(mark_price, lot.position_key)
        value = unrealized(lot, mark) if mark is not None else None
        if value is None:
            report.marks_missing.append(lot.position_key)
        else:
            report.unrealized_total += value
            report.unrealized_by_strategy[lot.strategy] += value
        report.positions.append({**lot.to_json(), "mark": str(mark) if mark is not None else None,
                                 "unrealized": str(value) if value is not None else None})
    return report


def session_pnl(ledger: Ledger, session_start: datetime, mark_price: MarkPrice | None = None
                ) -> dict[str, tuple[Decimal, Decimal]]:
    """{strategy: (realized net since session start, unrealized now)}: the risk engine's pnl_source
    (`RiskEngine(pnl_source=lambda start: session_pnl(ledger, start, marks))`)."""
    report = compute_pnl(ledger, TradeFilter(start=session_start), mark_price)
    names = set(report.by_strategy) | set(report.unrealized_by_strategy)
    return {n: (report.by_strategy[n].net if n in report.by_strategy else Decimal(0),
                report.unrealized_by_strategy.get(n, Decimal(0))) for n in names}
