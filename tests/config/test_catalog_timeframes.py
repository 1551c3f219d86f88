"""Instrument catalog and timeframe parsing as the API relies on them."""
from __future__ import annotations

from decimal import Decimal

import pytest

from config.instruments import CATALOG, UnknownSymbolError, canonical_symbol
from config.timeframes import Timeframe, TimeframeError


@pytest.mark.parametrize(("raw", "canonical"), [
    ("MES", "/MES"), ("/mes", "/MES"), (" es ", "/ES"), ("MNQ", "/MNQ"), ("/NQ", "/NQ"), ("M2K", "/M2K"),
    ("RTY", "/RTY"), ("nvda", "NVDA"), ("TSLA", "TSLA"), ("MSTR", "MSTR"), ("spx", "SPX"),
])
def test_canonical_symbols(raw: str, canonical: str) -> None:
    assert canonical_symbol(raw) == canonical


@pytest.mark.parametrize("raw", ["AAPL", "../../etc", "/MES/../x", "", "M" * 100, None, 5, "ME S"])
def test_unknown_symbols(raw: object) -> None:
    with pytest.raises(UnknownSymbolError):
        canonical_symbol(raw)


def test_contract_properties() -> None:
    assert CATALOG["/MES"].tick_value == Decimal("1.25")  # type: ignore[index]
    assert CATALOG["/ES"].tick_value == Decimal("12.50")  # type: ignore[index]
    assert CATALOG["/NQ"].tick_value == Decimal("5.00")  # type: ignore[index]
    assert CATALOG["/M2K"].tick_size == Decimal("0.10")  # type: ignore[index]


@pytest.mark.parametrize(("text", "raw", "display"), [
    ("5Min", "5", "5Min"), ("1Min", "1", "1Min"), ("1Hour", "1h", "1Hour"), ("4Hour", "4h", "4Hour"),
    ("1Day", "1d", "1Day"), ("144t", "144t", "144t"), ("5m", "5", "5Min"), ("1h", "1h", "1Hour"),
    ("60", "1h", "1Hour"), ("512t", "512t", "512t"), ("30", "30", "30Min"),
])
def test_timeframe_forms(text: str, raw: str, display: str) -> None:
    tf = Timeframe.parse(text)
    assert tf.raw == raw and tf.display == display and Timeframe.parse(tf.raw) == tf


@pytest.mark.parametrize("text", ["7Min", "0t", "2Day", "abc", "", "5" * 50, None, 5])
def test_bad_timeframes(text: object) -> None:
    with pytest.raises(TimeframeError):
        Timeframe.parse(text)


def _every_time_bar_timeframe() -> list[Timeframe]:
    """Every time-bar timeframe parse() accepts, found by trying every size its patterns can match."""
    found: set[Timeframe] = set()
    for text in [f"{n}m" for n in range(1000)] + [f"{n}h" for n in range(100)] + [f"{n}d" for n in range(10)]:
        try:
            found.add(Timeframe.parse(text))
        except TimeframeError:
            pass
    return sorted(found, key=lambda tf: tf.size)


def test_the_timeframe_error_lists_every_accepted_timeframe() -> None:
    with pytest.raises(TimeframeError) as info:
        Timeframe.parse("7Min")
    message = str(info.value)
    listed = message.split("use ", 1)[1].split(" (", 1)[0].split(", ")
    assert listed == [tf.display for tf in _every_time_bar_timeframe()]
    assert all(Timeframe.parse(text) for text in listed)
    for spelling in ("'5'", "'5m'", "'1h'", "'1d'", "'512t'", "1 to 100000 trades"):
        assert spelling in message
    assert Timeframe.parse("1t").is_tick and Timeframe.parse("100000t").is_tick
    with pytest.raises(TimeframeError):
        Timeframe.parse("100001t")
