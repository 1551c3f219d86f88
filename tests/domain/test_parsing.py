"""The one number parser (domain/parsing.py) and the validators built on it: any text or JSON value
either parses or raises the validator's own error, never anything else (a stray ValueError or
RecursionError is a 500 at the API)."""
from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.validation import MAX_JSON_DEPTH, json_too_deep
from backtest.jobs import JobValidationError, validate_request
from config.timeframes import Timeframe, TimeframeError
from domain.parsing import NumberError, parse_decimal, parse_float, parse_int
from domain.tickers import TickerConfig, TickerValidationError
from risk.limits import LimitsValidationError, RiskLimits, apply_update

# Deterministic (a CI run explores what the last one did) and no example database in the tree.
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=30))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Text a client could type for a number: digits of any script, signs, dots, exponents, spaces.
NUMBERISH = st.text(alphabet=st.sampled_from("0123456789²³¹١٢٣０１２+-.eE _\t\u00a0nNaIiFfy"), max_size=14)


@pytest.mark.parametrize("text", ["²", "١٢", "１２", "1_000", "0x10", "", " ", "+", "--1", "1.5", "1e3", "NaN",
                                  "12345678901234567890", "5\u00a0"])
def test_parse_int_refuses_what_int_or_isdigit_would_take_or_choke_on(text: str) -> None:
    with pytest.raises(NumberError, match="whole number"):
        parse_int(text)


@pytest.mark.parametrize(("raw", "value"), [("5", 5), (" 7 ", 7), ("-3", -3), ("+4", 4), (6, 6), (8.0, 8),
                                            ("007", 7)])
def test_parse_int_takes_ascii_digits_ints_and_integral_floats(raw: object, value: int) -> None:
    assert parse_int(raw) == value


@pytest.mark.parametrize("raw", [True, False, None, 1.5, math.inf, math.nan, [1], {"a": 1}])
def test_parse_int_refuses_other_types(raw: object) -> None:
    with pytest.raises(NumberError):
        parse_int(raw)


def test_parse_int_names_the_range() -> None:
    with pytest.raises(NumberError) as caught:
        parse_int("0", 1, 1000)
    assert caught.value.message == "must be a whole number between 1 and 1000"
    assert parse_int("1000", 1, 1000) == 1000


@pytest.mark.parametrize("raw", ["NaN", "nan", "Infinity", "-inf", "1e999", math.inf, math.nan, "１.5", "²",
                                 "1e", ".", "1.2.3", "5\u00a0"])
def test_parse_decimal_refuses_non_finite_and_non_ascii(raw: object) -> None:
    with pytest.raises(NumberError):
        parse_decimal(raw, 0, 1000)


@pytest.mark.parametrize(("raw", "value"), [("0.62", Decimal("0.62")), (0.1, Decimal("0.1")), (" 3 ", Decimal(3)),
                                            ("1e2", Decimal(100)), (".5", Decimal("0.5")), (2, Decimal(2))])
def test_parse_decimal_takes_plain_numbers(raw: object, value: Decimal) -> None:
    assert parse_decimal(raw, 0, 1000) == value


@PROPERTY
@given(NUMBERISH | st.text(max_size=20))
def test_any_text_is_an_ascii_integer_or_a_number_error(text: str) -> None:
    try:
        value = parse_int(text)
    except NumberError:
        return
    stripped = text.strip(" \t\r\n").lstrip("+")
    assert stripped.lstrip("-").isascii() and str(value) == str(int(stripped))


@PROPERTY
@given(NUMBERISH | st.text(max_size=20) | JSON_SCALARS)
def test_any_value_is_a_finite_number_in_range_or_a_number_error(raw: object) -> None:
    for parse in (lambda r: parse_decimal(r, -10**6, 10**6), lambda r: parse_float(r, 0.0, 100.0)):
        try:
            value = parse(raw)
        except NumberError:
            continue
        assert math.isfinite(float(value))


@PROPERTY
@given(st.integers(min_value=-10**15, max_value=10**15))
def test_every_integer_round_trips_through_its_text(value: int) -> None:
    assert parse_int(str(value)) == value and parse_int(f" {value} ") == value


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@PROPERTY
@given(JSON_VALUES, st.integers(min_value=0, max_value=6))
def test_json_depth_is_counted_outside_strings(value: Any, limit: int) -> None:
    raw = json.dumps(value).encode()
    assert json_too_deep(raw, limit) == (_depth(value) > limit)


@PROPERTY
@given(st.binary(max_size=200))
def test_json_depth_check_takes_any_bytes(raw: bytes) -> None:
    json_too_deep(raw)


def test_json_depth_limit_catches_what_would_overflow_the_parser() -> None:
    deep = b"[" * 30_000 + b"]" * 30_000
    with pytest.raises(RecursionError):
        json.loads(deep)  # what a 500 was made of
    assert json_too_deep(deep)
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert not json_too_deep(b'{"a": "' + b"[" * 1000 + b'"}')  # brackets in a string are text


TICKER_FIELDS = ("strategy", "symbol", "timeframe", "trade_enabled", "schwab_quantity", "tastytrade_quantity",
                 "trend_line_1", "period_1", "trend_line_2", "period_2", "stop_loss_ticks", "stop_loss_atr",
                 "atr_period", "multiplier", "trailing_stop_atr", "take_profit_atr", "call_enabled", "put_enabled")
VALID_TICKER = {"strategy": "ema", "symbol": "MES", "timeframe": "5Min", "trade_enabled": True,
                "schwab_quantity": 0, "tastytrade_quantity": 1, "trend_line_1": "EMA", "period_1": 9,
                "trend_line_2": "EMA", "period_2": 21}
FIELD_VALUES = JSON_VALUES | NUMBERISH | st.sampled_from(["ema", "supertrend", "zeroday", "MES", "SPX", "NVDA",
                                                          "5Min", "512t", "true", "EMA", "SMA"])


@PROPERTY
@given(st.dictionaries(st.sampled_from(TICKER_FIELDS), FIELD_VALUES, max_size=8))
def test_ticker_validator_raises_only_its_own_error(changes: dict[str, Any]) -> None:
    for payload in ({**VALID_TICKER, **changes}, changes):
        try:
            TickerConfig.from_payload(payload)
        except TickerValidationError:
            pass


@PROPERTY
@given(JSON_VALUES)
def test_ticker_validator_takes_any_json_document(payload: Any) -> None:
    try:
        TickerConfig.from_payload(payload)
    except TickerValidationError:
        pass


RISK_FIELDS = tuple(RiskLimits.__dataclass_fields__)


@PROPERTY
@given(st.dictionaries(st.sampled_from(RISK_FIELDS) | st.text(max_size=5),
                       FIELD_VALUES | st.dictionaries(st.sampled_from(["MES", "ema", "x", "²"]), FIELD_VALUES,
                                                      max_size=3), max_size=5))
def test_risk_limits_validator_raises_only_its_own_error(payload: dict[str, Any]) -> None:
    try:
        apply_update(RiskLimits(), payload)
    except LimitsValidationError:
        pass


BACKTEST_FIELDS = TICKER_FIELDS + ("data", "from", "to", "quantity", "commission", "slippage_ticks", "instrument",
                                   "tz", "bar_time")


@PROPERTY
@given(st.dictionaries(st.sampled_from(BACKTEST_FIELDS), FIELD_VALUES, max_size=8))
def test_backtest_validator_raises_only_its_own_error(tmp_path_factory: Any, changes: dict[str, Any]) -> None:
    data_dir = Path(tmp_path_factory.getbasetemp())
    for payload in ({**VALID_TICKER, "data": ["bars.csv"], **changes}, changes):
        try:
            validate_request(payload, [data_dir])
        except JobValidationError:
            pass


@pytest.mark.parametrize(("field", "raw"), [("period_1", "²"), ("tastytrade_quantity", "١"), ("period_2", "２１"),
                                            ("stop_loss_atr", "NaN"), ("stop_loss_atr", "Infinity"),
                                            ("stop_loss_atr", "1e999"), ("stop_loss_atr", "１")])
def test_ticker_fields_refuse_unicode_digits_and_non_finite_numbers(field: str, raw: str) -> None:
    with pytest.raises(TickerValidationError) as caught:
        TickerConfig.from_payload({**VALID_TICKER, field: raw})
    assert caught.value.field == field


@pytest.mark.parametrize(("field", "raw"), [("max_position", "²"), ("max_order_quantity", "١"),
                                            ("daily_loss_limit_global", "NaN"), ("risk_per_trade", "Infinity"),
                                            ("daily_loss_limit_global", "1e999"), ("daily_loss_limit_global", "５")])
def test_risk_fields_refuse_unicode_digits_and_non_finite_numbers(field: str, raw: str) -> None:
    with pytest.raises(LimitsValidationError) as caught:
        apply_update(RiskLimits(), {field: raw})
    assert caught.value.field == field


@pytest.mark.parametrize("text", ["５Min", "١t", "٥", "1ｈ"])
def test_timeframes_refuse_non_ascii_digits(text: str) -> None:
    with pytest.raises(TimeframeError):
        Timeframe.parse(text)
