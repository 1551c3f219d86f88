"""report.html: one offline file (plotly.js inside, nothing fetched), titled from the instrument,
with the equity, monthly returns, the price chart with the strategy's lines and trade markers, the
trades table; untrusted text escaped."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np

from backtest.data import MarketData
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.report import build_report, trade_rows
from backtest.report_html import thin_indices, write_report_html
from tests.backtest.helpers import random_walk

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _decode(value: object) -> object:
    """plotly writes numpy arrays as {"dtype", "bdata": base64}; lists as they are."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return [None if np.isnan(v) else float(v) for v in arr] if arr.dtype.kind == "f" else arr.tolist()
    return value


def _plotly_data(page: str) -> list[list[dict]]:
    """The trace lists of every Plotly.newPlot call on the page, arrays decoded."""
    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, re.S):
        out.append([{k: _decode(v) for k, v in t.items()} for t in json.loads(m.group(1))])
    return out


def _run(strategy: dict, n: int = 3000, description: str = "synthetic") -> tuple:
    bars = random_walk(n, seed=11)
    config = config_from_options({"symbol": "/MES", "timeframe": "1Min", **strategy})
    costs = CostSettings(quantity=1, commission_per_contract=Decimal("0.62"))
    result = BacktestEngine(config, costs).run(MarketData(bars, None, description))
    return result, trade_rows(result)


def test_ema_report_is_offline_and_complete(tmp_path: Path) -> None:
    result, rows = _run({"strategy": "ema", "period_1": 5, "period_2": 13})
    assert len(rows) > 10
    report = build_report(result, rows)
    path = tmp_path / "report.html"
    write_report_html(path, result, rows, report)
    page = path.read_text()
    # Offline: plotly.js is inside the file, no script or stylesheet is loaded from anywhere.
    assert "plotly.js v" in page and not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page
    # Titled from the instrument, not only the --symbol given.
    assert "<h1>Micro E-mini S&amp;P 500 (/MES, CME) · ema · 1Min</h1>" in page
    traces = [t for fig in _plotly_data(page) for t in fig]
    names = {t.get("name") for t in traces}
    assert {"strategy", "buy & hold", "drawdown", "price", "EMA 5", "EMA 13", "long entry", "short entry",
            "exit"} <= names
    heat = [t for t in traces if t["type"] == "heatmap"]
    assert heat and heat[0]["x"][0] == "Jan"
    # Markers: one per entry (long + short) and one per exit, at the fill prices.
    entries = [t for t in traces if t.get("name") in ("long entry", "short entry")]
    assert sum(len(t["x"]) for t in entries) == len(rows)
    exits = next(t for t in traces if t.get("name") == "exit")
    assert exits["y"] == [float(r.exit_price) for r in rows]
    # The lines are the strategy's own indicator values, bar by bar (no thinning at 3000 bars).
    fast = next(t for t in traces if t.get("name") == "EMA 5")
    values = [d["fast"] for d in result.indicators]  # type: ignore[union-attr]
    assert fast["y"][-1] == values[-1] and len(fast["y"]) == len(values)
    # Equity plotted by bar number (no time axis to draw lines across closed markets).
    equity = next(t for t in traces if t.get("name") == "strategy")
    assert equity["x"][:3] == [0.0, 1.0, 2.0]
    # The trades table has a row per trade.
    assert page.count("<tr><td") >= len(rows)


def test_supertrend_lines_split_by_direction(tmp_path: Path) -> None:
    result, rows = _run({"strategy": "supertrend", "atr_period": 10, "multiplier": 2})
    path = tmp_path / "report.html"
    write_report_html(path, result, rows, build_report(result, rows))
    traces = [t for fig in _plotly_data(path.read_text()) for t in fig]
    up = next(t for t in traces if t.get("name") == "Supertrend (up)")
    down = next(t for t in traces if t.get("name") == "Supertrend (down)")
    # Each bar is on one side only (None on the other breaks the line at a flip).
    assert all((a is None) or (b is None) for a, b in zip(up["y"], down["y"]))
    assert any(a is not None for a in up["y"]) and any(b is not None for b in down["y"])


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    result, rows = _run({"strategy": "ema", "period_1": 5, "period_2": 13}, description=HOSTILE)
    rows = [replace(r, trade=replace(r.trade, exit_reason=HOSTILE, entry_reason=HOSTILE)) for r in rows]
    report = build_report(result, rows)
    path = tmp_path / "report.html"
    write_report_html(path, result, rows, report)
    page = path.read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # shown, as text
    # In the chart data too (plotly would render tags in hover text).
    exits = next(t for fig in _plotly_data(page) for t in fig if t.get("name") == "exit")
    assert all("<script" not in s for s in exits["text"]) and "&lt;script&gt;" in exits["text"][0]


def test_long_runs_are_thinned_for_the_page_keeping_extremes() -> None:
    series = np.sin(np.linspace(0, 60, 200_000)) * 100 + np.linspace(0, 5, 200_000)
    series[123_457] = -1_000.0  # a one-bar crash must stay visible
    picks = thin_indices(series, 20_000)
    assert picks.size <= 20_002 and picks[0] == 0 and picks[-1] == series.size - 1
    assert 123_457 in picks and int(np.argmax(series)) in picks


def test_lines_without_bars_output_come_from_the_per_candle_samples(tmp_path: Path) -> None:
    from backtest.report_html import candle_size

    bars = random_walk(7000, seed=11)
    config = config_from_options({"symbol": "/MES", "timeframe": "1Min", "strategy": "ema", "period_1": 5,
                                  "period_2": 13})
    engine = BacktestEngine(config, CostSettings())
    full = engine.run(MarketData(bars, None, "x"))
    k = candle_size(len(bars))
    assert k == 3
    sparse = engine.run(MarketData(bars, None, "x"), record_bars=False, line_every=k)
    assert sparse.indicators is None and sparse.trades == full.trades
    samples = sparse.extra["sampled_lines"]
    assert sorted(samples) == [*range(k - 1, len(bars), k), len(bars) - 1][: len(samples)]
    # The same values as every bar's record (bars.* also computes the ATR, which no line uses).
    lines = ("fast", "slow", "stop")
    assert all({n: samples[i][n] for n in lines} == {n: full.indicators[i][n] for n in lines}  # type: ignore[index]
               for i in samples)
    pages = []
    for result in (full, sparse):
        rows = trade_rows(result)
        path = tmp_path / f"{len(pages)}.html"
        write_report_html(path, result, rows, build_report(result, rows))
        pages.append(next(t for fig in _plotly_data(path.read_text()) for t in fig if t.get("name") == "EMA 5"))
    assert pages[0]["y"] == pages[1]["y"] and len(pages[0]["y"]) == -(-len(bars) // k)


def test_zeroday_page_marks_option_trades_on_the_index(tmp_path: Path) -> None:
    from tests.backtest.test_zeroday_backtest import run

    _, result = run()
    rows = trade_rows(result)
    assert rows and all(r.trade.option for r in rows)
    path = tmp_path / "zeroday.html"
    write_report_html(path, result, rows, build_report(result, rows))
    page = path.read_text()
    exits = next(t for fig in _plotly_data(page) for t in fig if t.get("name") == "exit")
    closes = result.data.bars.close
    assert exits["y"] == [float(closes[r.trade.exit_bar]) for r in rows]  # index levels, not premiums
    assert "SPXW" in page and "zeroday: the chart shows SPX" in page
