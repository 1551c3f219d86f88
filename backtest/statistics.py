"""The statistics a trader reads first, from a backtest's equity curve and round trips.

Return statistics come from empyrical-reloaded (the library pyfolio is built on), applied to the
*session* returns of the equity curve: the equity at the close of the last bar of each trading
session of the instrument's calendar (a CME session that opens Sunday 18:00 ET counts for Monday),
relative to the previous session's close (the first session relative to the starting capital).
Sessions are the instrument's own, so a closed market adds no flat day and a futures session is not
cut at UTC midnight. Annualisation: 252 sessions a year for exchange calendars, 260 for 24/5 and
365 for 24/7 ones.

Drawdowns are measured on the bar-close equity (as `max_drawdown` in the report): a drawdown starts
at the bar of the peak, has its trough at the lowest bar after it, and recovers at the first bar
whose equity is back at or above the peak (no recovery: still under water at the end).

Trade statistics are over the round trips' net P&L (after commissions), exact Decimal: a trade
with net P&L 0 is neither a win nor a loss and ends both streaks.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from backtest.data import NS, utc_iso

if TYPE_CHECKING:
    from backtest.engine import BacktestResult
    from backtest.report import TradeRow

CENT = Decimal("0.01")
TOP_DRAWDOWNS = 5
_YEAR_NS = int(365.25 * 86_400 * NS)

DEFINITIONS = {
    "session_returns": "equity at the last bar close of each session of the instrument's calendar / the previous "
                       "session's (the first / starting capital) - 1; empyrical-reloaded computes the ratios from them",
    "cagr_pct": "compound annual growth of the session returns (empyrical annual_return), sessions_per_year a year",
    "sortino": "annualised mean session return / downside deviation (empyrical sortino_ratio, required return 0)",
    "calmar": "CAGR / max drawdown of the session equity (empyrical calmar_ratio)",
    "volatility_pct": "annualised standard deviation of the session returns",
    "expectancy": "mean net P&L per trade = win rate x average win + loss rate x average loss",
    "payoff_ratio": "average win / |average loss|",
    "streaks": "longest runs of consecutive winning / losing trades (a zero-P&L trade ends both)",
    "drawdown_dates": "start = bar of the peak, trough = lowest bar after it, recovery = first bar back at the peak "
                      "(null while still under water); durations in calendar days from start to recovery (or end)",
    "monthly_returns": "session returns compounded per calendar month / year of the session date, in %",
    "buy_and_hold": "holding `quantity` contracts from the first bar's open to the last bar's close, no costs",
}


# ---------------------------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sessions:
    """Per-bar session labels and the session-close equity series built from them."""

    labels: np.ndarray  # datetime64[D] session date of every bar
    last_bar: np.ndarray  # int64 index of each session's last bar (sessions in order)
    per_year: int  # sessions per year of the calendar (annualisation factor)

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.labels[self.last_bar])


def session_labels(end_ns: np.ndarray, calendar: str | None) -> tuple[np.ndarray, int]:
    """The session date (exchange trade date) of each bar, by the first session of `calendar`
    closing at or after the bar's end, and the calendar's sessions per year. An unknown calendar,
    or bars beyond the calendar's schedule, fall back to the UTC date of the bar's end."""
    utc_days = (end_ns // (86_400 * NS)).astype("datetime64[D]")
    if end_ns.size == 0 or not calendar:
        return utc_days, 252
    try:
        import pandas_market_calendars as mcal

        from market_data.calendars import get_calendar

        tz = mcal.get_calendar(calendar).tz
        opens, closes = get_calendar(calendar).session_arrays(int(end_ns[0]), int(end_ns[-1]))
    except (RuntimeError, KeyError, ValueError):  # pandas_market_calendars' "not a calendar"
        return utc_days, 252
    if closes.size == 0:
        return utc_days, 252
    i = np.searchsorted(closes, end_ns, side="left")
    inside = i < closes.size
    close_ns = closes[np.minimum(i, closes.size - 1)]
    local = pd.DatetimeIndex(pd.to_datetime(close_ns, utc=True)).tz_convert(tz)
    days = np.asarray(local.tz_localize(None).normalize().values.astype("datetime64[D]"))
    labels = np.where(inside, days, utc_days)
    first = int(end_ns[0])
    counted = int(np.count_nonzero((opens >= first) & (opens < first + _YEAR_NS)))
    # The usual conventions rather than the count itself, so one year's holidays do not move the
    # annualisation: 365 for 24/7 markets, 260 for 24/5 (FX), 252 for exchanges (CME's calendar
    # has 257-260 sessions, holidays with an early close included; 252 is the futures convention).
    return labels, 365 if counted >= 350 else 260 if calendar == "24/5" else 252


def sessions_of(result: BacktestResult) -> Sessions:
    labels, per_year = session_labels(result.data.bars.end_ns, getattr(result.instrument, "calendar", None))
    if labels.size == 0:
        return Sessions(labels, np.zeros(0, np.int64), per_year)
    change = np.flatnonzero(labels[1:] != labels[:-1])
    last_bar = np.concatenate((change, [labels.size - 1])).astype(np.int64)
    return Sessions(labels, last_bar, per_year)


def session_returns(equity: np.ndarray, sessions: Sessions, capital: float) -> pd.Series:
    """Session-close equity / the previous one - 1, indexed by session date."""
    if sessions.last_bar.size == 0:
        return pd.Series([], dtype=float, index=pd.DatetimeIndex([]))
    closes = equity[sessions.last_bar]
    previous = np.concatenate(([capital], closes[:-1]))
    return pd.Series(closes / previous - 1.0, index=sessions.dates)


# ---------------------------------------------------------------------------------------------
# return statistics (empyrical)
# ---------------------------------------------------------------------------------------------

def _num(x: Any, digits: int = 6) -> float | None:
    """JSON-safe float: NaN / inf (a ratio with nothing to divide by) -> None."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def return_statistics(returns: pd.Series, per_year: int) -> dict[str, float | None]:
    import empyrical as ep

    if len(returns) == 0:
        return {"cagr_pct": None, "sharpe": None, "sortino": None, "calmar": None, "volatility_pct": None}
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 of a flat curve is a None ratio, not a warning
        cagr = ep.annual_return(returns, annualization=per_year)
        sharpe = ep.sharpe_ratio(returns, annualization=per_year) if len(returns) >= 2 else math.nan
        sortino = ep.sortino_ratio(returns, annualization=per_year) if len(returns) >= 2 else math.nan
        calmar = ep.calmar_ratio(returns, annualization=per_year)
        vol = ep.annual_volatility(returns, annualization=per_year) if len(returns) >= 2 else math.nan
    return {"cagr_pct": _num(cagr * 100), "sharpe": _num(sharpe), "sortino": _num(sortino),
            "calmar": _num(calmar), "volatility_pct": _num(vol * 100)}


def period_returns(returns: pd.Series) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Monthly and yearly compounded returns in % (empyrical aggregate_returns)."""
    import empyrical as ep

    if len(returns) == 0:
        return [], []
    monthly = ep.aggregate_returns(returns, "monthly")
    yearly = ep.aggregate_returns(returns, "yearly")
    months = [{"year": int(y), "month": int(m), "return_pct": _num(v * 100)} for (y, m), v in monthly.items()]
    years = [{"year": int(y), "return_pct": _num(v * 100)} for y, v in yearly.items()]
    return months, years


# ---------------------------------------------------------------------------------------------
# drawdowns
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Drawdown:
    start: int  # bar index of the peak
    trough: int
    recovery: int | None  # first bar back at the peak; None: not recovered by the end
    depth: float  # currency
    depth_pct: float  # of the peak


def drawdown_periods(equity: np.ndarray) -> list[Drawdown]:
    """Every under-water period of the curve, in time order (vectorised: a million bars with
    thousands of periods cost a few numpy passes)."""
    if equity.size == 0:
        return []
    eq = np.round(equity, 6)  # float noise must not make a return to the peak look like a new drawdown
    peak = np.maximum.accumulate(eq)
    under = eq < peak
    if not under.any():
        return []
    edges = np.diff(np.concatenate(([False], under, [False])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)  # first under-water bar of each period
    ends = np.flatnonzero(edges == -1)  # first bar back at the peak (== size when never)
    mins = np.minimum.reduceat(eq, starts)
    out: list[Drawdown] = []
    for s, e, low in zip(starts.tolist(), ends.tolist(), mins.tolist()):
        trough = s + int(np.argmax(eq[s:e] == low))
        top = float(peak[s])
        depth = top - low
        out.append(Drawdown(s - 1 if s > 0 else 0, trough, e if e < eq.size else None, depth,
                            depth / top * 100.0 if top > 0 else 0.0))
    return out


def _days(a_ns: int, b_ns: int) -> float:
    return round((b_ns - a_ns) / (86_400 * NS), 4)


def drawdown_statistics(equity: np.ndarray, end_ns: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The max drawdown's dates and durations, the longest drawdown, and the deepest periods."""
    periods = drawdown_periods(equity)
    last_ns = int(end_ns[-1]) if end_ns.size else 0

    def describe(d: Drawdown) -> dict[str, Any]:
        stop_ns = int(end_ns[d.recovery]) if d.recovery is not None else last_ns
        return {"start": utc_iso(int(end_ns[d.start])), "trough": utc_iso(int(end_ns[d.trough])),
                "recovery": utc_iso(int(end_ns[d.recovery])) if d.recovery is not None else None,
                "depth": round(d.depth, 2), "depth_pct": round(d.depth_pct, 4),
                "days_to_trough": _days(int(end_ns[d.start]), int(end_ns[d.trough])),
                "duration_days": _days(int(end_ns[d.start]), stop_ns),
                "bars": (d.recovery if d.recovery is not None else equity.size - 1) - d.start,
                "recovered": d.recovery is not None}

    summary: dict[str, Any] = {"max_drawdown_start": None, "max_drawdown_trough": None,
                               "max_drawdown_recovery": None, "max_drawdown_duration_days": None,
                               "longest_drawdown_days": None, "drawdown_periods": len(periods)}
    if not periods:
        return summary, []
    deepest = sorted(periods, key=lambda d: (-d.depth, d.start))
    worst = describe(deepest[0])
    longest = max((describe(d)["duration_days"] for d in periods), default=None)
    summary.update({"max_drawdown_start": worst["start"], "max_drawdown_trough": worst["trough"],
                    "max_drawdown_recovery": worst["recovery"], "max_drawdown_duration_days": worst["duration_days"],
                    "longest_drawdown_days": longest})
    return summary, [describe(d) for d in deepest[:TOP_DRAWDOWNS]]


# ---------------------------------------------------------------------------------------------
# trades
# ---------------------------------------------------------------------------------------------

def _money(x: Decimal | None) -> str | None:
    return None if x is None else str(x.quantize(CENT))


def _group(rows: Sequence[TradeRow]) -> dict[str, Any]:
    nets = [r.net for r in rows]
    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    total = sum(nets, Decimal(0))
    loss_sum = sum(losses, Decimal(0))
    return {"trades": len(rows), "net_pnl": str(total), "winners": len(wins), "losers": len(losses),
            "win_rate": len(wins) / len(rows) if rows else None,
            "average_trade": _money(total / len(rows)) if rows else None,
            "profit_factor": float(sum(wins, Decimal(0)) / -loss_sum) if losses else None}


def streaks(nets: Sequence[Decimal]) -> tuple[int, int]:
    """(longest run of winners, longest run of losers)."""
    best_win = best_loss = win = loss = 0
    for x in nets:
        win = win + 1 if x > 0 else 0
        loss = loss + 1 if x < 0 else 0
        best_win, best_loss = max(best_win, win), max(best_loss, loss)
    return best_win, best_loss


def _durations(secs: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    if secs.size == 0:
        return {"average_s": None, "median_s": None, "max_s": None, "min_s": None, "average_bars": None}
    return {"average_s": round(float(secs.mean()), 3), "median_s": round(float(np.median(secs)), 3),
            "max_s": round(float(secs.max()), 3), "min_s": round(float(secs.min()), 3),
            "average_bars": round(float(held.mean()), 3)}


def trade_statistics(rows: Sequence[TradeRow]) -> dict[str, Any]:
    nets = [r.net for r in rows]
    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    avg_win = sum(wins, Decimal(0)) / len(wins) if wins else None
    avg_loss = sum(losses, Decimal(0)) / len(losses) if losses else None
    win_streak, loss_streak = streaks(nets)
    best = max(range(len(rows)), key=lambda k: nets[k], default=None)
    worst = min(range(len(rows)), key=lambda k: nets[k], default=None)
    secs = np.array([(r.trade.exit_ns - r.trade.entry_ns) / NS for r in rows], dtype=np.float64)
    held = np.array([r.trade.exit_bar - r.trade.entry_bar for r in rows], dtype=np.float64)
    won = np.array([x > 0 for x in nets], dtype=bool)
    lost = np.array([x < 0 for x in nets], dtype=bool)
    by_reason: dict[str, list[TradeRow]] = defaultdict(list)
    for r in rows:
        by_reason[r.trade.exit_reason].append(r)
    return {
        "expectancy": _money(sum(nets, Decimal(0)) / len(nets)) if nets else None,
        "average_win": _money(avg_win),
        "average_loss": _money(avg_loss),
        "payoff_ratio": _num(avg_win / -avg_loss) if avg_win is not None and avg_loss is not None else None,
        "best_trade": str(nets[best]) if best is not None else None,
        "best_trade_time": utc_iso(rows[best].trade.entry_ns) if best is not None else None,
        "worst_trade": str(nets[worst]) if worst is not None else None,
        "worst_trade_time": utc_iso(rows[worst].trade.entry_ns) if worst is not None else None,
        "max_consecutive_wins": win_streak,
        "max_consecutive_losses": loss_streak,
        "durations": {"all": _durations(secs, held), "winners": _durations(secs[won], held[won]),
                      "losers": _durations(secs[lost], held[lost])},
        "by_side": {"long": _group([r for r in rows if r.trade.side > 0]),
                    "short": _group([r for r in rows if r.trade.side < 0])},
        "by_exit_reason": {reason: _group(group) for reason, group in sorted(by_reason.items())},
    }


# ---------------------------------------------------------------------------------------------
# buy and hold
# ---------------------------------------------------------------------------------------------

def buy_and_hold_equity(result: BacktestResult) -> np.ndarray:
    """Capital + `quantity` contracts bought at the first bar's open, marked at every close."""
    bars = result.data.bars
    capital = float(result.costs.starting_capital)
    if len(bars) == 0:
        return np.zeros(0)
    points = float(result.instrument.multiplier) * result.costs.quantity
    return capital + (bars.close - float(bars.open[0])) * points


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------

def summary(result: BacktestResult, rows: Sequence[TradeRow], sessions: Sessions | None = None,
            trades: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scalar figures (merged into report.json's metrics, and ranked by sweeps)."""
    sessions = sessions_of(result) if sessions is None else sessions
    capital = float(result.costs.starting_capital)
    returns = session_returns(result.equity, sessions, capital)
    stats = return_statistics(returns, sessions.per_year)
    trades = trade_statistics(rows) if trades is None else trades
    scalars = {k: v for k, v in trades.items() if not isinstance(v, dict)}
    dd, _ = drawdown_statistics(result.equity, result.data.bars.end_ns)
    return {**stats, **scalars, **dd, "sessions": int(sessions.last_bar.size), "sessions_per_year": sessions.per_year,
            "average_trade_duration_s": trades["durations"]["all"]["average_s"]}


def full(result: BacktestResult, rows: Sequence[TradeRow]) -> dict[str, Any]:
    """The scalar summary plus the tables: drawdowns, breakdowns, durations, monthly/yearly returns,
    buy and hold."""
    sessions = sessions_of(result)
    capital = float(result.costs.starting_capital)
    returns = session_returns(result.equity, sessions, capital)
    months, years = period_returns(returns)
    _, deepest = drawdown_statistics(result.equity, result.data.bars.end_ns)
    trades = trade_statistics(rows)

    hold = buy_and_hold_equity(result)
    hold_returns = session_returns(hold, sessions, capital)
    hold_months, hold_years = period_returns(hold_returns)
    from backtest.report import max_drawdown

    hold_dd, hold_dd_pct = max_drawdown(hold)
    hold_final = float(hold[-1]) if hold.size else capital
    strategy_final = float(result.equity[-1]) if result.equity.size else capital
    buy_and_hold = {
        "net_pnl": round(hold_final - capital, 2),
        "return_pct": _num((hold_final / capital - 1) * 100) if capital else None,
        **return_statistics(hold_returns, sessions.per_year),
        "max_drawdown": round(hold_dd, 2), "max_drawdown_pct": round(hold_dd_pct, 4),
        "excess_return_pct": _num((strategy_final - hold_final) / capital * 100) if capital else None,
        "correlation": _correlation(returns, hold_returns),
        "yearly_returns": hold_years, "monthly_returns": hold_months,
    }
    return {"summary": summary(result, rows, sessions, trades), "drawdowns": deepest, "trade_durations": trades["durations"],
            "by_side": trades["by_side"], "by_exit_reason": trades["by_exit_reason"],
            "monthly_returns": months, "yearly_returns": years, "buy_and_hold": buy_and_hold}


def _correlation(a: pd.Series, b: pd.Series) -> float | None:
    if len(a) < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    return _num(np.corrcoef(a.to_numpy(), b.to_numpy())[0, 1])
