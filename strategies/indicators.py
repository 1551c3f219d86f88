"""Incremental indicators: O(1) pure-Python float work per bar, TA-Lib conventions.

Every indicator has `update(...) -> float | None` (None while warming up), `.value` (the latest
output or None), `.ready`, and a JSON-safe `state()` / `restore()` that round-trips exactly (JSON
floats are written with `repr`, so a restored indicator continues bit-for-bit).

Conventions (equal to TA-Lib 0.8 with its default compatibility mode 0, verified to 1e-9 in
tests/strategies/test_indicators_reference.py):

- SMA(n): mean of the last n inputs; first value at input n-1.
- EMA(n): first value at input n-1 = SMA of the first n inputs; then y += (x - y) * 2/(n+1).
- WilderSmoother(n) (RMA / SMMA): first value at input n-1 = SMA of the first n inputs;
  then y += (x - y) / n.
- ATR(n): the true range needs a previous close, so bar 0 has none; TR[t] = max(high-low,
  |high-close[t-1]|, |low-close[t-1]|) for t >= 1; first ATR at bar n = mean(TR[1..n]); then
  Wilder smoothing.
- Supertrend(atr_period, multiplier): pandas-ta-classic's algorithm exactly (see `Supertrend`).

Inputs must be finite floats: a NaN would poison every later value (and every later signal), so
`update` raises `ValueError` *before* changing any state.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from domain.tickers import TrendLine


class IndicatorStateError(ValueError):
    """A saved state does not belong to this indicator (different kind or period)."""


def _finite(*values: float) -> None:
    """Slow path of the finiteness check (ints, rejects); the hot paths test a float inline with
    `x.__class__ is float and x - x == 0.0` (False for NaN and +-inf) and only call this otherwise."""
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"indicator input must be a finite number, got {v!r}")


def _check_period(period: int) -> None:
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError(f"period must be a whole number >= 1, got {period!r}")


def _check_state(state: dict[str, Any], kind: str, period: int) -> None:
    if state.get("kind") != kind or state.get("period") != period:
        raise IndicatorStateError(
            f"state is for {state.get('kind')}({state.get('period')}), not {kind}({period})"
        )


@dataclass(slots=True)
class SMA:
    """Simple moving average of the last `period` inputs; first value at input period-1.

    The window sum is kept with Neumaier compensation so it stays O(1) per update without the
    rounding drift a plain running sum accumulates over millions of bars in a long-running engine.
    """

    period: int
    value: float | None = field(default=None, init=False)
    count: int = field(default=0, init=False)
    _window: deque[float] = field(default_factory=deque, init=False, repr=False)
    _sum: float = field(default=0.0, init=False, repr=False)
    _comp: float = field(default=0.0, init=False, repr=False)

    kind = "SMA"

    def __post_init__(self) -> None:
        _check_period(self.period)

    @property
    def ready(self) -> bool:
        return self.value is not None

    def _add(self, x: float) -> None:
        # Neumaier (improved Kahan) summation step.
        t = self._sum + x
        if abs(self._sum) >= abs(x):
            self._comp += (self._sum - t) + x
        else:
            self._comp += (x - t) + self._sum
        self._sum = t

    def update(self, x: float) -> float | None:
        if x.__class__ is not float or x - x != 0.0:
            _finite(x)
            x = float(x)
        self._window.append(x)
        self._add(x)
        if len(self._window) > self.period:
            self._add(-self._window.popleft())
        self.count += 1
        if len(self._window) == self.period:
            self.value = (self._sum + self._comp) / self.period
        return self.value

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "value": self.value, "count": self.count,
                "window": list(self._window), "sum": self._sum, "comp": self._comp}

    def restore(self, state: dict[str, Any]) -> None:
        _check_state(state, self.kind, self.period)
        self.value = None if state["value"] is None else float(state["value"])
        self.count = int(state["count"])
        self._window = deque(float(v) for v in state["window"])
        self._sum = float(state["sum"])
        self._comp = float(state["comp"])


@dataclass(slots=True)
class _SeededSmoother:
    """Shared machinery of EMA and WilderSmoother: seed with the SMA of the first `period`
    inputs (value defined from input period-1), then y += (x - y) * alpha."""

    period: int
    value: float | None = field(default=None, init=False)
    count: int = field(default=0, init=False)
    _seed_sum: float = field(default=0.0, init=False, repr=False)
    _alpha: float = field(default=0.0, init=False, repr=False)  # cached `alpha` (hot path)

    kind = "?"

    def __post_init__(self) -> None:
        _check_period(self.period)
        self._alpha = self.alpha

    @property
    def alpha(self) -> float:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, x: float) -> float | None:
        if x.__class__ is not float or x - x != 0.0:
            _finite(x)
            x = float(x)
        self.count += 1
        value = self.value
        if value is None:
            # Plain left-to-right sum, exactly as TA-Lib seeds (at most `period` terms).
            self._seed_sum += x
            if self.count == self.period:
                self.value = value = self._seed_sum / self.period
            return value
        self.value = value = value + (x - value) * self._alpha
        return value

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "value": self.value, "count": self.count,
                "seed_sum": self._seed_sum}

    def restore(self, state: dict[str, Any]) -> None:
        _check_state(state, self.kind, self.period)
        self.value = None if state["value"] is None else float(state["value"])
        self.count = int(state["count"])
        self._seed_sum = float(state["seed_sum"])


@dataclass(slots=True)
class EMA(_SeededSmoother):
    """EMA(n): first value at input n-1 = SMA of the first n inputs; then alpha = 2/(n+1).
    Equal to talib.EMA (compatibility mode 0, the default: SMA seed)."""

    kind = "EMA"

    @property
    def alpha(self) -> float:
        return 2.0 / (self.period + 1)


@dataclass(slots=True)
class WilderSmoother(_SeededSmoother):
    """Wilder's smoothing (RMA): first value at input n-1 = SMA of the first n inputs; then
    y += (x - y)/n. Equal to pandas-ta-classic's rma and to TA-Lib's ATR smoothing."""

    kind = "WilderSmoother"

    @property
    def alpha(self) -> float:
        return 1.0 / self.period


TrendLineIndicator = EMA | SMA | WilderSmoother


def advance_apart(fast: TrendLineIndicator, slow: TrendLineIndicator, xs: list[float], lo: int,
                  hi: int) -> tuple[int, float, float]:
    """Feed xs[lo:hi] to two defined EMA/WilderSmoother lines for as long as `fast` stays strictly
    on the side of `slow` it is on now: stop *before* the first input that would leave the lines
    level, on the other side, or not comparable (a NaN or an infinity makes both lines equal or
    NaN, so it always stops there and `update` then rejects it). Returns (the index of that input,
    hi if none; fast's and slow's values before the last input fed). A line that is an SMA or not
    defined, or lines level now, advance nothing (lo).

    The bars a crossover strategy can skip through in one tight loop: a cross needs the lines to
    change sides (or leave a touch). The step is `update`'s, the same float operations in the
    same order, so the values are bit-identical to feeding each input through `update`."""
    f, s = fast.value, slow.value
    if (f is None or s is None or f == s or not isinstance(fast, _SeededSmoother)
            or not isinstance(slow, _SeededSmoother)):
        return lo, 0.0, 0.0
    # One loop for either side: `upper` is the line above now, `lower` the one below.
    upper, lower = (fast, slow) if f > s else (slow, fast)
    u, d, au, ad = upper.value, lower.value, upper._alpha, lower._alpha
    assert u is not None and d is not None
    pu = pd = 0.0
    k = lo
    for k in range(lo, hi):
        x = xs[k]
        nu = u + (x - u) * au
        nd = d + (x - d) * ad
        if not nu > nd:
            break
        pu, pd, u, d = u, d, nu, nd
    else:
        k = hi
    if k > lo:
        upper.value, lower.value = u, d
        fast.count += k - lo
        slow.count += k - lo
    return (k, pu, pd) if upper is fast else (k, pd, pu)


def make_line(line: TrendLine, period: int) -> TrendLineIndicator:
    """The moving average a ticker's `trend_line_N` / `period_N` names."""
    if line is TrendLine.EMA:
        return EMA(period)
    if line is TrendLine.SMA:
        return SMA(period)
    if line is TrendLine.WILDER:
        return WilderSmoother(period)
    raise ValueError(f"unknown trend line {line!r}")


@dataclass(slots=True)
class ATR:
    """ATR(n), TA-Lib convention: bar 0 has no true range (no previous close); TR[t] =
    max(high-low, |high-close[t-1]|, |low-close[t-1]|); first ATR at bar n = mean(TR[1..n]);
    then Wilder smoothing y += (TR - y)/n."""

    period: int
    tr: float | None = field(default=None, init=False)  # latest true range
    _prev_close: float | None = field(default=None, init=False, repr=False)
    _smoother: WilderSmoother = field(init=False, repr=False)

    kind = "ATR"

    def __post_init__(self) -> None:
        _check_period(self.period)
        self._smoother = WilderSmoother(self.period)

    @property
    def value(self) -> float | None:
        return self._smoother.value

    @property
    def ready(self) -> bool:
        return self._smoother.value is not None

    def update(self, high: float, low: float, close: float) -> float | None:
        if (high.__class__ is not float or low.__class__ is not float or close.__class__ is not float
                or high - high + low - low + close - close != 0.0):
            _finite(high, low, close)
            high, low, close = float(high), float(low), float(close)
        prev = self._prev_close
        self._prev_close = close
        if prev is None:
            return None
        self.tr = max(high - low, abs(high - prev), abs(low - prev))
        return self._smoother.update(self.tr)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.period, "tr": self.tr, "prev_close": self._prev_close,
                "smoother": self._smoother.state()}

    def restore(self, state: dict[str, Any]) -> None:
        _check_state(state, self.kind, self.period)
        self.tr = None if state["tr"] is None else float(state["tr"])
        self._prev_close = None if state["prev_close"] is None else float(state["prev_close"])
        self._smoother.restore(state["smoother"])


@dataclass(slots=True)
class Supertrend:
    """Supertrend, exactly as pandas-ta-classic computes it (`ta.supertrend(h, l, c, length,
    multiplier)`, whose ATR is the RMA of the true range = our `ATR`).

    Per bar t with ATR defined:
      basic upper = hl2 + multiplier*ATR, basic lower = hl2 - multiplier*ATR
      if close[t] > final_upper[t-1]: direction = +1 (bands stay basic)
      elif close[t] < final_lower[t-1]: direction = -1 (bands stay basic)
      else: direction unchanged, and
            while up:   final_lower[t] = max(basic lower, final_lower[t-1])   (lower band only rises)
            while down: final_upper[t] = min(basic upper, final_upper[t-1])   (upper band only falls)
      line = final_lower when direction is +1, else final_upper.
    The direction starts at +1 (pandas-ta's initial value), so the first defined bar (bar
    `atr_period`) is always "up" on the lower band. `direction` is None before that.
    """

    atr_period: int = 10
    multiplier: float = 3.0
    value: float | None = field(default=None, init=False)
    direction: int | None = field(default=None, init=False)
    upper: float | None = field(default=None, init=False)  # final upper band at the last bar
    lower: float | None = field(default=None, init=False)  # final lower band at the last bar
    count: int = field(default=0, init=False)  # bars with a defined line
    atr: ATR = field(init=False, repr=False)

    kind = "Supertrend"

    def __post_init__(self) -> None:
        _check_period(self.atr_period)
        _finite(self.multiplier)
        if self.multiplier <= 0:
            raise ValueError("multiplier must be > 0")
        self.atr = ATR(self.atr_period)

    @property
    def ready(self) -> bool:
        return self.value is not None

    def update(self, high: float, low: float, close: float) -> float | None:
        atr = self.atr.update(high, low, close)
        if atr is None:
            return None
        hl2 = (float(high) + float(low)) / 2.0
        upper = hl2 + self.multiplier * atr
        lower = hl2 - self.multiplier * atr
        direction = 1 if self.direction is None else self.direction
        prev_upper, prev_lower = self.upper, self.lower
        if prev_upper is not None and close > prev_upper:
            direction = 1
        elif prev_lower is not None and close < prev_lower:
            direction = -1
        else:
            if direction > 0 and prev_lower is not None and lower < prev_lower:
                lower = prev_lower
            if direction < 0 and prev_upper is not None and upper > prev_upper:
                upper = prev_upper
        self.direction, self.upper, self.lower = direction, upper, lower
        self.value = lower if direction > 0 else upper
        self.count += 1
        return self.value

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "period": self.atr_period, "multiplier": self.multiplier, "value": self.value,
                "direction": self.direction, "upper": self.upper, "lower": self.lower, "count": self.count,
                "atr": self.atr.state()}

    def restore(self, state: dict[str, Any]) -> None:
        _check_state(state, self.kind, self.atr_period)
        if float(state["multiplier"]) != self.multiplier:
            raise IndicatorStateError(f"state multiplier {state['multiplier']} != {self.multiplier}")
        opt = lambda v: None if v is None else float(v)  # noqa: E731
        self.value, self.upper, self.lower = opt(state["value"]), opt(state["upper"]), opt(state["lower"])
        self.direction = None if state["direction"] is None else int(state["direction"])
        self.count = int(state["count"])
        self.atr.restore(state["atr"])
