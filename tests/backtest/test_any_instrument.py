"""Instruments outside the catalog (--tick-size, --contract-multiplier, --calendar), the refusal of
prices off the tick, and round-the-clock calendars."""
from __future__ import annotations

import csv
import json
import multiprocessing
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from backtest.__main__ import main
from backtest.data import LoadOptions, MarketData, load
from backtest.engine import BacktestEngine, CostSettings, RoundTrip, config_from_options
from backtest.instruments import ensure_registered, forget_all, research_instrument
from config.instruments import CATALOG
from domain.tickers import TickerConfig
from market_data import calendars

NS = 1_000_000_000
EURO_TICK = 0.00005


@pytest.fixture(autouse=True)
def clean_catalog() -> Iterator[None]:
    before = set(CATALOG)
    yield
    forget_all()
    assert set(CATALOG) == before


def _fx_csv(path: Path, start: str = "2024-03-03T22:00:00", n: int = 6000, seed: int = 5) -> Path:
    """One-minute EUR/USD-like bars on the 0.00005 tick from a Sunday 17:00 New York."""
    rng = np.random.default_rng(seed)
    ts = np.datetime64(start) + np.arange(n) * np.timedelta64(1, "m")
    close = 1.08 + np.cumsum(rng.integers(-3, 4, n)) * EURO_TICK
    open_ = np.concatenate(([1.08], close[:-1]))
    high = np.maximum(open_, close) + rng.integers(0, 3, n) * EURO_TICK
    low = np.minimum(open_, close) - rng.integers(0, 3, n) * EURO_TICK
    with path.open("w") as fh:
        fh.write("timestamp_utc,open,high,low,close,volume\n")
        for i in range(n):
            fh.write(f"{ts[i]},{open_[i]:.5f},{high[i]:.5f},{low[i]:.5f},{close[i]:.5f},10\n")
    return path


FX_ARGS = ["--strategy", "ema", "--timeframe", "5Min", "--period-1", "5", "--period-2", "13", "--progress", "none"]


def test_a_future_outside_the_catalog_trades_with_its_own_tick_multiplier_and_calendar(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _fx_csv(tmp_path / "6e.csv")
    out = tmp_path / "6e"
    assert main([*FX_ARGS, "--symbol", "/6E", "--tick-size", "0.00005", "--contract-multiplier", "125000",
                 "--calendar", "CMEGlobex_FX", "--commission", "1.10", "--data", str(data), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["symbol"], report["tick_size"], report["multiplier"]) == ("/6E", "0.00005", "125000")
    trades = list(csv.DictReader((out / "trades.csv").open()))
    assert len(trades) > 10
    for t in trades:  # one tick is 0.00005 x 125000 = $6.25 a contract
        ticks = (Decimal(t["exit_price"]) - Decimal(t["entry_price"])) / Decimal("0.00005")
        sign = 1 if t["side"] == "LONG" else -1
        assert Decimal(t["gross_pnl"]) == sign * ticks * Decimal("6.25")
        assert Decimal(t["net_pnl"]) == Decimal(t["gross_pnl"]) - Decimal("2.20")
    # CME Globex FX closes 17:00-18:00 New York: no fill inside the daily break.
    cal = calendars.get_calendar("CMEGlobex_FX")
    stamps = [np.datetime64(t[k][:-1], "ms").astype("datetime64[ns]").astype(np.int64) for t in trades
              for k in ("entry_time", "exit_time")]
    assert all(cal.session_at(int(s)) is not None or cal.session_at(int(s) - 1) is not None for s in stamps)
    assert "/6E" in (out / "report.html").read_text()  # the report is titled from the instrument
    assert "/6E" not in CATALOG  # a research instrument lives for its run only


def test_prices_off_the_tick_are_refused_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _fx_csv(tmp_path / "6e.csv")
    assert main([*FX_ARGS, "--symbol", "/ES", "--data", str(data), "--out", str(tmp_path / "es")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: 24000 of 24000 prices are not multiples of /ES's tick size 0.25 (e.g. 1.08 at")
    assert "--allow-off-tick" in err and not (tmp_path / "es").exists()

    assert main([*FX_ARGS, "--symbol", "/ES", "--allow-off-tick", "--data", str(data), "--out",
                 str(tmp_path / "es")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: 24000 of 24000 prices are not multiples of /ES's tick size 0.25")
    report = json.loads((tmp_path / "es" / "report.json").read_text())
    assert report["data"].endswith("; 24000 of 24000 prices off the 0.25 tick (fills rounded to it)")


@pytest.mark.parametrize("argv,needle", [
    (["--symbol", "/ES", "--tick-size", "0.5"], "/ES is in the catalog"),
    (["--symbol", "EURUSD"], "--symbol EURUSD is not in the catalog"),
    (["--symbol", "EURUSD", "--tick-size", "0"], "--tick-size must be a positive number"),
    (["--symbol", "EURUSD", "--tick-size", "0.00001", "--calendar", "Mars"], "--calendar: calendar 'Mars'"),
    (["--symbol", "EUR-USD", "--tick-size", "0.00001"], "--symbol 'EUR-USD'"),
])
def test_bad_instrument_options_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                             needle: str) -> None:
    data = _fx_csv(tmp_path / "fx.csv", n=200)
    assert main([*FX_ARGS, *argv, "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_a_catalog_symbol_with_its_own_properties_is_accepted() -> None:
    assert research_instrument("/ES", "0.25", "50", "CME_Equity") is None


def test_round_the_clock_calendars() -> None:
    saturday_noon = int(np.datetime64("2024-03-09T12:00:00", "ns").astype(np.int64))
    assert calendars.get_calendar("24/7").session_at(saturday_noon) is not None
    fx = calendars.get_calendar("24/5")
    assert fx.session_at(saturday_noon) is None
    monday = fx.session_for_date(date(2024, 3, 11))  # the US is on summer time from 2024-03-10
    assert monday is not None
    assert (str(monday.open), str(monday.close)) == ("2024-03-10 21:00:00+00:00", "2024-03-11 21:00:00+00:00")
    friday = fx.session_for_date(date(2024, 3, 8))
    assert friday is not None and str(friday.close) == "2024-03-08 22:00:00+00:00"  # 17:00 New York, winter time


def test_crypto_on_24_7_trades_through_the_weekend(tmp_path: Path) -> None:
    data = _fx_csv(tmp_path / "btc.csv", start="2024-03-08T00:00:00", n=4 * 1440)  # Friday to Monday
    out = tmp_path / "btc"
    assert main([*FX_ARGS, "--symbol", "BTCUSD", "--tick-size", "0.00005", "--data", str(data),
                 "--out", str(out)]) == 0  # --calendar 24/7 is the default
    report = json.loads((out / "report.json").read_text())
    assert report["bars_evaluated"] == report["metrics"]["bars"] == 4 * 1440 // 5
    weekend = [t for t in csv.DictReader((out / "trades.csv").open())
               if t["entry_time"][:10] in ("2024-03-09", "2024-03-10")]
    assert weekend


def _run_in_fresh_process(config: TickerConfig, data: MarketData) -> list[RoundTrip]:
    """What a spawned sweep worker does with a task: the research symbol is unknown in this
    process until the data brings it (the config was validated by the parent)."""
    assert data.instrument is not None and data.instrument.symbol not in CATALOG
    return BacktestEngine(config, CostSettings()).run(data, record_bars=False).trades


def test_the_research_instrument_travels_with_the_data_to_another_process(tmp_path: Path) -> None:
    instrument = research_instrument("/6E", "0.00005", "125000", "CMEGlobex_FX")
    assert instrument is not None
    ensure_registered(instrument)
    data = load(LoadOptions((_fx_csv(tmp_path / "6e.csv", n=3000),), "5Min", symbol="/6E",
                            tick_size=instrument.tick_size, research_instrument=instrument))
    config = config_from_options({"strategy": "ema", "symbol": "/6E", "timeframe": "5Min", "period_1": 5,
                                  "period_2": 13, "stop_loss_ticks": 8})
    here = BacktestEngine(config, CostSettings()).run(data, record_bars=False).trades
    assert any(t.exit_reason == "stop" for t in here)  # the stop is 8 of this instrument's ticks
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_run_in_fresh_process, (config, data))
    assert there == here
