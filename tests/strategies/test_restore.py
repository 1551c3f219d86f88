"""A strategy restored from a JSON round-trip of state() and fed the same next events emits exactly
the intents an uninterrupted one does (cuts at several points, including inside positions)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable

import pytest

from domain.intents import Intent, PositionTarget
from domain.market import Bar, Trade
from strategies import STRATEGY_CLASSES, build_strategy
from strategies.base import SessionClock, Strategy
from strategy_kit import MINUTE_NS, config, json_roundtrip, load_ohlc, rows_to_bars

NY_OPEN_NS = 14 * 3600 * 1_000_000_000 + 30 * 60 * 1_000_000_000  # 09:30 ET as UTC in winter (EST)


def _events(s: Strategy, b: Bar, with_clock: bool) -> list[Intent]:
    out: list[Intent] = []
    if with_clock:
        day0 = b.end_ns - (b.end_ns - NY_OPEN_NS) % (86400 * 1_000_000_000)
        out += s.on_clock(SessionClock(b.end_ns - 1, day0, day0 + 390 * MINUTE_NS, True))
    # Intrabar trades (open, low, high) so trailing stops / stops fire between bar closes.
    for k, px in enumerate((b.open, b.low, b.high)):
        out += s.on_trade(Trade(b.symbol, b.start_ns + k + 1, px, 1))
    out += s.on_bar(b)
    return out


def _run(make: Callable[[], Strategy], bars: list[Bar], with_clock: bool, cut: int | None) -> tuple[list[Intent], list[PositionTarget]]:
    s = make()
    out: list[Intent] = []
    held: list[PositionTarget] = []
    for i, b in enumerate(bars):
        if cut is not None and i == cut:
            fresh = make()
            fresh.restore(json_roundtrip(s.state()))
            s = fresh
            held.append(s.target)
        out += _events(s, b, with_clock)
    return out, held


CASES = {
    "ema-atr-stop": (lambda: build_strategy(config("ema", "NVDA", period_1=9, period_2=21, stop_loss_atr=1.5)), False),
    "ema-sma-wilder": (lambda: build_strategy(config("ema", "NVDA", trend_line_1="SMA", period_1=5,
                                                     trend_line_2="Wilder", period_2=13, stop_loss_ticks=300)), False),
    "supertrend": (lambda: build_strategy(config("supertrend", "NVDA", take_profit_atr=4.0)), False),
    "zeroday": (lambda: build_strategy(config("zeroday", "SPX", period_1=5, period_2=13)), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_restore_equals_uninterrupted(shared_data: Path, name: str) -> None:
    make, with_clock = CASES[name]
    rows = load_ohlc(shared_data / "bars" / "nvda-1999-2014.daily.csv", intraday=False)[:1500]
    symbol = "SPX" if name == "zeroday" else "NVDA"
    if with_clock:  # minute bars inside a New York session, several days
        rows = load_ohlc(shared_data / "bars" / "index-future-2006.1min.csv", intraday=True)[:1500]
        rows = [(NY_OPEN_NS + (i // 390) * 86400 * 1_000_000_000 + (i % 390 + 1) * MINUTE_NS, *r[1:])
                for i, r in enumerate(rows)]
    bars = rows_to_bars(symbol, rows)
    baseline, _ = _run(make, bars, with_clock, None)
    assert len(baseline) > 10
    in_position = 0
    for cut in (3, 20, *range(61, 1500, 89), 1499):
        restored, held = _run(make, bars, with_clock, cut)
        assert restored == baseline, f"cut at {cut}"
        in_position += held[0] is not PositionTarget.FLAT
    assert in_position >= 2  # some cuts land inside a position


def test_restore_rejects_other_strategy_or_periods() -> None:
    ema = build_strategy(config("ema", "NVDA"))
    with pytest.raises(ValueError):
        build_strategy(config("supertrend", "NVDA")).restore(ema.state())
    with pytest.raises(ValueError):
        build_strategy(config("ema", "NVDA", period_1=5)).restore(ema.state())


def test_strategy_classes_and_pure_imports() -> None:
    assert {k.value: v.name for k, v in STRATEGY_CLASSES.items()} == {
        "ema": "ema", "supertrend": "supertrend", "zeroday": "zeroday"}
    forbidden = ("flask", "redis", "market_data", "brokers", "oms", "engine", "schwab", "tastytrade", "databento",
                 "store", "api")
    for path in (Path(__file__).resolve().parents[2] / "strategies").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in forbidden, f"{path.name} imports {n}"
