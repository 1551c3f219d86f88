"""Input files read through pyarrow: compressed CSV, Parquet, and the common ways files name and
write their timestamps all give the same bars as the plain CSV."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data import DataError, LoadOptions, load
from tests.backtest.helpers import NS, random_walk, write_csv

BARS = random_walk(400, seed=21)
SECONDS = (BARS.start_ns // NS).astype(np.int64)


def _load(path: Path, **kw: object) -> np.ndarray:
    data = load(LoadOptions((path,), "1Min", **kw))  # type: ignore[arg-type]
    return np.column_stack((data.bars.start_ns, data.bars.open, data.bars.high, data.bars.low, data.bars.close,
                            data.bars.volume))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _load(write_csv(tmp_path_factory.mktemp("ref") / "bars.csv", BARS))


def _text(header: str, stamps: list[str]) -> str:
    rows = [f"{t},{o},{h},{lo},{c},{v}" for t, o, h, lo, c, v in
            zip(stamps, BARS.open, BARS.high, BARS.low, BARS.close, BARS.volume)]
    return "\n".join([header, *rows]) + "\n"


def _iso(fmt: str) -> list[str]:
    return [str(np.datetime64(int(s), "s").astype(object).strftime(fmt)) for s in SECONDS]


def test_gzip_csv_with_a_timestamp_utc_column(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_text("timestamp_utc,open,high,low,close,volume", _iso("%Y-%m-%dT%H:%M:%S")))
    # The column's name says UTC: naive values are UTC even when --tz names another zone.
    assert np.array_equal(_load(path, tz="America/New_York"), reference)


@pytest.mark.parametrize("header,stamps", [
    ("Time,Open,High,Low,Close,Volume", [str(s) for s in SECONDS]),  # TradingView: epoch seconds under "time"
    ("open_time,o,h,l,c,v", [str(s * 1000) for s in SECONDS]),  # epoch milliseconds
    ("Gmt time,Open,High,Low,Close,Volume", _iso("%d.%m.%Y %H:%M:%S.000")),  # Dukascopy
    ("Timestamp,Open,High,Low,Close,Volume", _iso("%Y-%m-%dT%H:%M:%SZ")),  # zoned ISO 8601
    ("Datetime,Open,High,Low,Close,Volume", _iso("%Y-%m-%d %H:%M:%S+00:00")),
])
def test_common_timestamp_columns(tmp_path: Path, reference: np.ndarray, header: str, stamps: list[str]) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(_text(header, stamps))
    assert np.array_equal(_load(path), reference)


def test_metatrader_header_with_separate_date_and_time(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "mt5.csv"
    stamps = [f"{d},{t}" for d, t in zip(_iso("%Y.%m.%d"), _iso("%H:%M:%S"))]
    path.write_text(_text("<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<TICKVOL>", stamps))
    assert np.array_equal(_load(path), reference)


def test_naive_times_in_the_given_zone(tmp_path: Path, reference: np.ndarray) -> None:
    path = tmp_path / "ny.csv"
    ny = (np.asarray(SECONDS) - 5 * 3600)  # January: New York is UTC-5
    path.write_text(_text("Datetime,Open,High,Low,Close,Volume",
                          [str(np.datetime64(int(s), "s")).replace("T", " ") for s in ny]))
    assert np.array_equal(_load(path, tz="America/New_York"), reference)


def test_parquet_input_with_typed_and_text_timestamps(tmp_path: Path, reference: np.ndarray) -> None:
    columns = {"open": BARS.open, "high": BARS.high, "low": BARS.low, "close": BARS.close, "volume": BARS.volume}
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"ts_event": pa.array(BARS.start_ns, pa.timestamp("ns", tz="UTC")), **columns}), typed)
    assert np.array_equal(_load(typed), reference)
    naive_ms = tmp_path / "naive.pq"
    pq.write_table(pa.table({"Date": pa.array(BARS.start_ns // 1_000_000, pa.timestamp("ms")), **columns}), naive_ms)
    assert np.array_equal(_load(naive_ms), reference)


def test_compact_dates_of_a_daily_file(tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text("Date,Open,High,Low,Close,Volume\n20240102,10,11,9,10.5,100\n20240103,10.5,12,10,11,90\n"
                    "20240104,11,11.5,10,10.25,80\n")
    data = load(LoadOptions((path,), "1Day"))
    assert [str(np.datetime64(int(t), "ns"))[:10] for t in data.bars.start_ns] == ["2024-01-02", "2024-01-03",
                                                                                 "2024-01-04"]


def test_a_non_numeric_price_is_one_line_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("Datetime,Open,High,Low,Close\n2024-01-02 10:00,1,2,0.5,1.5\n2024-01-02 10:01,1,oops,0.5,1.5\n")
    with pytest.raises(DataError, match=r"bad.csv.gz: column 'High' has non-numeric values"):
        load(LoadOptions((path,), "1Min"))
