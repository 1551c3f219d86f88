"""Daily bars carry their trading session's bounds, so no time derived from them is made up: a
stop or target inside a daily bar is stamped at the session's close, an exit at a gap at its
open, entries at the next session's open (the engine used to stamp 06:00Z / 12:00Z)."""
from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np

from backtest.__main__ import main
from backtest.data import LoadOptions, load
from market_data import calendars


def _daily_csv(path: Path, days: int = 400, seed: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    dates = [d for d in np.arange(np.datetime64("2023-01-03"), np.datetime64("2023-01-03") + days)
             if calendars.get_calendar("NYSE").session_for_date(d.astype(object)) is not None]
    close = 100 + np.cumsum(rng.integers(-150, 151, len(dates))) * 0.01
    open_ = np.concatenate(([100.0], close[:-1])) + rng.integers(-40, 41, len(dates)) * 0.01
    high = np.maximum(open_, close) + rng.integers(0, 120, len(dates)) * 0.01
    low = np.minimum(open_, close) - rng.integers(0, 120, len(dates)) * 0.01
    with path.open("w") as fh:
        fh.write("Date,Open,High,Low,Close,Volume\n")
        for d, o, h, lo, c in zip(dates, open_, high, low, close):
            fh.write(f"{d},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},1000\n")
    return path


def _utc(text: str) -> int:
    return int(np.datetime64(text[:-1], "ms").astype("datetime64[ns]").astype(np.int64))


def test_daily_bars_are_their_sessions(tmp_path: Path) -> None:
    bars = load(LoadOptions((_daily_csv(tmp_path / "d.csv", 30),), "1Day", symbol="NVDA")).bars
    nyse = calendars.get_calendar("NYSE")
    for start, end in zip(bars.start_ns.tolist(), bars.end_ns.tolist()):
        session = nyse.session_at(start)
        assert session is not None and (session.open_ns, session.close_ns) == (start, end)


def test_stops_and_targets_in_daily_bars_are_stamped_at_session_times(tmp_path: Path) -> None:
    out = tmp_path / "st"
    assert main(["--strategy", "supertrend", "--symbol", "NVDA", "--timeframe", "1Day", "--atr-period", "5",
                 "--multiplier", "1.5", "--trailing-stop-atr", "1", "--take-profit-atr", "1.5",
                 "--data", str(_daily_csv(tmp_path / "d.csv")), "--out", str(out), "--progress", "none"]) == 0
    trades = list(csv.DictReader((out / "trades.csv").open()))
    exits = [t for t in trades if t["exit_reason"] in ("stop", "target")]
    assert len(exits) > 5
    nyse = calendars.get_calendar("NYSE")
    for t in trades:
        entry = nyse.session_at(_utc(t["entry_time"]))
        assert entry is not None and entry.open_ns == _utc(t["entry_time"])  # fills at the session's open
    at_open = at_close = 0
    for t in exits:
        stamp = _utc(t["exit_time"])
        day = date.fromisoformat(t["exit_time"][:10])
        session = nyse.session_for_date(day)
        assert session is not None and stamp in (session.open_ns, session.close_ns), t
        at_open += stamp == session.open_ns
        at_close += stamp == session.close_ns
    assert at_close > 0  # crossed inside the bar: known at the close
