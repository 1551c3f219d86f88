"""Nothing is evaluated outside the instrument's session: bars there feed no indicator and make no
signal, trades there trigger no stop (a simulated feed at night, extended-hours equity prints, a
holiday). The first bar of such a run is logged."""
from __future__ import annotations

import numpy as np

from config.timeframes import Timeframe
from domain.market import Trade
from domain.orders import TASTYTRADE
from market_data import calendars
from tests.engine.conftest import MINUTE_NS, EngineRig, FedBars, wait_until

SECOND = 1_000_000_000
# Tuesday 2024-07-02: the CME session closes at 17:00 ET (21:00 UTC), the next opens at 18:00 ET.
CLOSE = 1719954000 * SECOND
REOPEN = CLOSE + 60 * MINUTE_NS
TICKER = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
              tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4,
              stop_loss_ticks=4)


def test_bars_in_the_daily_break_are_not_evaluated(rig: EngineRig, fed: FedBars) -> None:
    rig.add_ticker(**TICKER)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    first = CLOSE - 5 * MINUTE_NS
    for minute in range(68):  # 16:55 .. 18:02 ET, one trade a minute
        rig.push([Trade("/MES", first + minute * MINUTE_NS + SECOND, 6000.0 + (minute % 7), 1)])
    rig.wait_caught_up("ema", "/MES")
    evaluated = fed.per_strategy[-1]
    assert evaluated == [first + m * MINUTE_NS for m in range(5)] + [REOPEN + m * MINUTE_NS for m in range(2)]
    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    assert log_text.count("is outside the /MES session: not evaluated") == 1


def test_a_trade_outside_the_session_triggers_no_stop(rig: EngineRig) -> None:
    rig.add_ticker(**TICKER)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    rig.push([Trade("/MES", CLOSE - 2 * MINUTE_NS, 6000.0, 1)])
    assert rig.supervisor.manual_trigger("ema", "/MES", "LONG").report is not None
    assert rig.position("ema", "/MES", TASTYTRADE) == 1  # stop 4 ticks below 6000: 5999.00
    runner = rig.supervisor._runners[("ema", "/MES")]
    in_break = CLOSE + 30 * MINUTE_NS
    rig.push([Trade("/MES", in_break, 5990.0, 1)])  # in the break, far below the stop
    wait_until(lambda: runner._trade_id.startswith(f"{in_break // 1_000_000}-"), what="the thread to see the trade")
    rig.wait_idle("ema", "/MES")
    assert rig.position("ema", "/MES", TASTYTRADE) == 1  # ... and it did not act on it
    assert runner.strategy.target.value == "LONG"
    rig.push([Trade("/MES", REOPEN + 30 * SECOND, 5990.0, 1)])  # the session is open again: the stop fires
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, what="the stop at the reopen")


def test_the_open_mask_equals_is_open() -> None:
    ts = np.arange(CLOSE - 3 * 86400 * SECOND, CLOSE + 4 * 86400 * SECOND, 7 * MINUTE_NS, dtype=np.int64)
    for symbol in ("/MES", "NVDA", "SPX"):
        mask = calendars.open_mask(symbol, ts)
        assert mask.tolist() == [calendars.is_open(symbol, int(t)) for t in ts]
        assert mask.any() and not mask.all()


def test_the_warm_up_reaches_past_pre_market_bars_to_session_bars(rig: EngineRig, fed: FedBars) -> None:
    # NVDA: Monday 2024-07-01's last ten regular-session minutes (15:50-16:00 ET), then Tuesday's
    # pre-market from 08:00 ET: 80 bars that crowd the session bars out of a plain warm-up read.
    rig.md.ensure("NVDA", Timeframe.parse("1Min"))
    monday_close = 1719864000 * SECOND  # 2024-07-01 20:00 UTC = 16:00 ET
    session = [monday_close - (10 - m) * MINUTE_NS for m in range(10)]
    pre_market = [monday_close + (16 * 60 + m) * MINUTE_NS for m in range(81)]  # 08:00 ET on
    for i, start in enumerate(session + pre_market):
        rig.push([Trade("NVDA", start + SECOND, 120.0 + (i % 5) * 0.1, 1)])
    rig.add_ticker(strategy="ema", symbol="NVDA", timeframe="1Min", trade_enabled=True, schwab_quantity=1,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    runner = rig.ready_runner("ema", "NVDA")
    needed = runner.strategy.warmup_bars()
    assert runner.status.warmed_up
    assert fed.per_strategy[-1] == session[-needed:]  # the last session bars, none of the pre-market
