"""History for the simulated feed: the bars its random walk would have printed before a given
instant, generated backwards in time so they end exactly where live data begins.

Why backwards: the history must join the live data without a jump. The walk is generated from
its newest bar to its oldest, starting at (end_ns, end_price) - the start of the first live bar
(or of the oldest bar already held) and the price the live walk continues from - so the last
history bar closes at that price, and asking for more bars later only adds older ones: the bars
already handed out never change.

The same walk as live (`SimulatedFeed.next_trade`): every step is Gaussian with a standard
deviation of `step_fraction` x price, rounded to the instrument's tick (never below one tick). A
bar holding m live trades is simulated with k = min(m, SUBSTEPS) rounded steps whose variance is
m / k times a live step's. A live step's variance is what its rounding makes it: /MES's step
(about 0.1 point) is under half its 0.25 tick, so most trades print the same price and the others
a tick away, which moves the price more than the unrounded step would (`rounded_step_variance`).

Session rules: bars lie inside the instrument's sessions only (the CME daily halt, weekends and
holidays are skipped, as the engine skips live bars there); time bars sit on the session grid
(`market_data.bars.SessionGrid`: aligned at the open, the last one cut at the close), tick bars
span N trades at the live trade rate.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from config.timeframes import Timeframe
from domain.market import Bar
from market_data import calendars
from market_data.bars import SessionGrid

SUBSTEPS = 32  # walk steps simulated per history bar (its high and low)
NS = 1_000_000_000
# A live trade's size is 1 + int(expovariate(0.7)), a geometric count with q = exp(-0.7).
_Q = math.exp(-0.7)
_EXTRA_SIZE_MEAN = _Q / (1 - _Q)
_EXTRA_SIZE_VARIANCE = _Q / (1 - _Q) ** 2


def rounded_step_variance(stdev: float, tick: float) -> float:
    """Variance of a N(0, stdev^2) step from a price on the tick grid, rounded to the grid."""
    if stdev <= 0:
        return 0.0
    if stdev > 4 * tick:  # Sheppard: the rounding adds a uniform error's tick^2 / 12
        return stdev * stdev + tick * tick / 12
    total, k = 0.0, 1
    while True:  # P(round(step / tick) = +-k) = 2 (Phi((k + 1/2) tick / stdev) - Phi((k - 1/2) tick / stdev))
        p = math.erfc((k - 0.5) * tick / (stdev * math.sqrt(2))) - math.erfc((k + 0.5) * tick / (stdev * math.sqrt(2)))
        total += k * k * tick * tick * p
        if p < 1e-15 and k * tick > stdev:
            return total
        k += 1


def _stdev_for_variance(variance: float, tick: float) -> float:
    """The unrounded step stdev whose rounded step has `variance` (bisection: it is increasing)."""
    low, high = 0.0, math.sqrt(variance) + tick
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if rounded_step_variance(mid, tick) < variance else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True, slots=True)
class WalkParams:
    """The live walk's parameters for one instrument (see `SimulatedFeed`)."""

    tick: float
    step_fraction: float  # one trade's step stdev as a fraction of the price
    trades_per_second: float
    has_volume: bool  # an index prints no volume


class BackwardWalk:
    """The bars of one (symbol, timeframe) before `end_ns`, the newest closing at `end_price`.

    `bars(n)` returns the last n, oldest first, extending the walk further back when needed.
    Tick bars end (their closing trade) strictly before `end_ns`; time bars end at or before it."""

    def __init__(self, symbol: str, tf: Timeframe, end_ns: int, end_price: float, params: WalkParams,
                 rng: random.Random) -> None:
        self.symbol = symbol
        self.tf = tf
        self.end_ns = end_ns
        self.end_price = end_price
        self._params = params
        self._rng = rng
        self._calendar = calendars.calendar_for(symbol)
        self._grid = SessionGrid(symbol)
        self._trade_gap_ns = max(1, int(NS / params.trades_per_second))
        self._newest_first: list[Bar] = []
        self._before_ns = end_ns  # the next (older) bar lies before this instant ...
        self._close = end_price  # ... and closes at this price
        self._exhausted = False  # the calendar has no earlier session
        self._live_step_variance = rounded_step_variance(end_price * params.step_fraction, params.tick)
        self._sigmas: dict[tuple[int, int], float] = {}  # (trades, steps) -> step stdev / price

    def bars(self, n: int) -> list[Bar]:
        while len(self._newest_first) < n and not self._exhausted:
            slot = self._previous_slot()
            if slot is None:
                self._exhausted = True
                break
            start, end = slot
            self._newest_first.append(self._bar(start, end))
            self._before_ns = start
        return self._newest_first[:n][::-1]

    # -- time slots ----------------------------------------------------------------------------
    def _previous_slot(self) -> tuple[int, int] | None:
        """[start, end] of the bar just before `_before_ns` inside a session (ns)."""
        gap = self._trade_gap_ns if self.tf.is_tick else 1
        t = self._before_ns - gap
        for _ in range(10_000):  # a bucket or a session step per turn; bounded against a bad calendar
            session = self._calendar.session_at(t)
            if session is None:
                previous = self._calendar.previous_session(t)
                if previous is None:
                    return None
                t = previous.close_ns - gap
                continue
            if self.tf.is_tick:
                # The closing trade at t, the opening one N - 1 trades earlier (not before the open).
                span = (self.tf.size - 1) * self._trade_gap_ns
                return max(session.open_ns, t - span), t
            start, end = self._grid.bucket(t, self.tf)
            if end <= self._before_ns:
                return start, end
            t = start - 1  # `_before_ns` is inside this bucket: the whole bar lies before it
        return None

    # -- prices --------------------------------------------------------------------------------
    def _bar(self, start: int, end: int) -> Bar:
        params = self._params
        if self.tf.is_tick:
            trades = self.tf.size
        else:
            trades = max(1, round(params.trades_per_second * (end - start) / NS))
        steps = min(trades, SUBSTEPS)
        sigma = self._sigmas.get((trades, steps))
        if sigma is None:
            variance = self._live_step_variance * trades / steps
            sigma = self._sigmas[(trades, steps)] = _stdev_for_variance(variance, params.tick) / self.end_price
        tick, gauss = params.tick, self._rng.gauss
        close = price = self._close
        high = low = price
        for i in range(steps):  # backwards from the close: steps - 1 inside the bar, then the previous close
            if i == steps - 1:
                open_ = price
            moved = price + gauss(0.0, price * sigma)
            price = round(max(tick, round(moved / tick) * tick), 6)  # as the live walk rounds
            if i < steps - 1:
                high, low = max(high, price), min(low, price)
        self._close = price
        if steps < trades:
            # The live bar's high and low are watched on every trade, ours between k steps only: the
            # maximum of a walk seen at discrete steps lies about 0.5826 step stdevs below the
            # continuous one (Broadie, Glasserman and Kou, 1997), so widen by that.
            widen = 0.5826 * close * sigma
            high = round(round((high + widen) / tick) * tick, 6)
            low = round(max(tick, round((low - widen) / tick) * tick), 6)
        volume = 0
        if params.has_volume:  # live sizes are 1 + a geometric count: the sum is close to normal
            extra = gauss(trades * _EXTRA_SIZE_MEAN, math.sqrt(trades * _EXTRA_SIZE_VARIANCE))
            volume = trades + max(0, round(extra))
        return Bar(self.symbol, self.tf.raw, start, end, open_, high, low, close, volume, trades)


__all__ = ["BackwardWalk", "WalkParams", "SUBSTEPS"]
