"""Databento offline, answering as the SDK source and Databento's documentation say, through the
real SDK clients (databento 0.87.0).

`Market` is the truth both fakes serve: the DBN records of each dataset (the tape), the
instrument id of each raw symbol, the clock, and Historical's available end, which lags it.

`FakeHistoricalGateway`: Databento's Historical HTTP gateway behind a requests transport adapter
(the SDK calls `requests.get`/`requests.post`, whose fresh Session asks `get_adapter` for the URL).
- GET /v0/metadata.get_dataset_range: `{dataset, start, end, schema: {name: {start, end}}}`, start
  inclusive, end exclusive, a schema's end possibly before the dataset's
  (databento.com/docs/api-historical/metadata/metadata-get-dataset-range).
- POST /v0/timeseries.get_range with the form fields the SDK sends (`TimeseriesHttpAPI.get_range`:
  dataset, start, end, symbols, schema, stype_in, stype_out, encoding=dbn, compression=zstd): a
  zstd DBN stream whose metadata maps each raw symbol to its instrument id (`Metadata.mappings`,
  read by the SDK's `DBNStore.mappings`); a Historical stream holds no mapping records. Records are
  filtered on ts_recv, or ts_event for a schema without it (OHLCV), start inclusive and end
  exclusive (the SDK's `get_range` docstring).
- An `end` after the available end is refused with 422 `data_end_after_available_end`, a `start`
  at or after it with 422 `data_start_after_available_end`, in the envelope the real service sends
  (`{"detail": {case, message, status_code, docs, payload}}`, recorded in
  QuantConnect/Lean.DataSource.DataBento QuantConnect.DataBento.Tests/DataBentoJsonConverterTests.cs)
  that the SDK's `BentoHttpError` reads (detail.case, .message, .docs).
- HTTP Basic auth with the API key as user name (SDK `BentoHttpAPI._get`/`_post`), else 401;
  `refuse_historical` answers 403 (a key without the dataset's license) to every request.

`FakeLive`: `databento.Live` minus the TCP connection. Records go through the SDK's own callback
wrappers (`LiveSession._user_callbacks`) and reconnects through its own dispatch
(`LiveSession._dispatch_reconnect_callbacks`).
- subscribe: one dataset per session (ValueError, as `LiveSession.subscribe` raises); `start=` only
  before the session starts (SDK `Live.subscribe`: "Cannot be specified after the session is
  started"; docs, Live API, Intraday replay: "newly added subscriptions are not eligible").
- start, and every subscription after it: a mapping record per symbol (the live gateway announces
  mappings in the stream, stype_out_symbol the raw symbol). A subscription with `start` then gets
  the tape's records of its symbols and schema from `start` on, filtered on ts_event, and a
  replay-completed SystemMsg (docs, Intraday replay: "sent for each replayed schema once it
  catches up to real-time data"); a start more than 24 hours back is refused with an ErrorMsg.
- `Market.refuse_replay` answers a replay with an ErrorMsg (e.g. a key without a live license);
  `Market.replay_gate` holds a replay until the test releases it.
- `Market.publish(record)` adds to the tape and reaches every started session subscribed to the
  record's instrument and schema, except one whose connection is down (`FakeLive.drop`).
"""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import databento as db
import databento_dbn as dbn
import pandas as pd
import pytest
import requests
import zstandard
from databento.common.parsing import optional_datetime_to_unix_nanoseconds
from databento.common.validation import validate_enum, validate_semantic_string
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

KEY = "db-" + "k" * 29
GATEWAY = "https://hist.databento.com"
NS = 1_000_000_000
DAY_NS = 86_400 * NS
OHLCV_1M = 0x21  # DBN rtype of ohlcv-1m records


def ns(text: str) -> int:
    """An ISO time (UTC unless it says otherwise) in ns."""
    stamp = pd.Timestamp(text)
    return int((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value)


def px(price: float) -> int:
    return int(round(price * 1e9))


@dataclass
class Market:
    now_ns: int
    historical_lag_ns: int = 20 * 60 * NS  # Historical's available end: this far behind now
    tape: dict[str, list[Any]] = field(default_factory=dict)  # dataset -> records
    ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (dataset, raw symbol) -> id
    sessions: list["FakeLive"] = field(default_factory=list)
    get_range_calls: list[dict[str, Any]] = field(default_factory=list)
    range_calls: list[str] = field(default_factory=list)
    refuse_historical: bool = False
    refuse_replay: str | None = None  # an ErrorMsg text replay sessions get instead of the replay
    replay_gate: threading.Event | None = None  # replay sessions wait for it before replaying
    lock: threading.RLock = field(default_factory=threading.RLock)

    def clock(self) -> int:
        return self.now_ns

    def available_end(self, schema: str) -> int:
        end = self.now_ns - self.historical_lag_ns
        return end - end % (60 * NS) if schema.startswith("ohlcv") else end  # a bar is there once it closed

    def instrument(self, dataset: str, raw: str) -> int:
        with self.lock:
            return self.ids.setdefault((dataset, raw), 100 + len(self.ids))

    def raw_of(self, dataset: str, instrument_id: int) -> str | None:
        return next((raw for (d, raw), i in self.ids.items() if d == dataset and i == instrument_id), None)

    # ---- records ---------------------------------------------------------------------------
    def trade(self, dataset: str, raw: str, ts: int, price: float, size: int = 1, *, sequence: int = 1,
              ts_recv: int | None = None) -> dbn.TradeMsg:
        return dbn.TradeMsg(publisher_id=1, instrument_id=self.instrument(dataset, raw), ts_event=ts,
                            price=px(price), size=size, action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0,
                            ts_recv=ts if ts_recv is None else ts_recv, ts_in_delta=0, sequence=sequence, flags=0)

    def bar(self, dataset: str, raw: str, ts: int, o: float, h: float, lo: float, c: float, v: int) -> dbn.OHLCVMsg:
        return dbn.OHLCVMsg(OHLCV_1M, 1, self.instrument(dataset, raw), ts, px(o), px(h), px(lo), px(c), v)

    def add(self, dataset: str, *records: Any) -> None:
        """Records that happened (in Historical and the replay) without reaching a live session."""
        with self.lock:
            self.tape.setdefault(dataset, []).extend(records)

    def publish(self, dataset: str, record: Any) -> None:
        """A record happening now: on the tape, and to each connected session that wants it."""
        self.add(dataset, record)
        for session in list(self.sessions):
            session.offer(dataset, record)

    def records(self, dataset: str, instrument_ids: set[int], schema: str) -> list[Any]:
        with self.lock:
            return [r for r in self.tape.get(dataset, []) if r.instrument_id in instrument_ids and _schema(r) == schema]

    # ---- the SDK's clients on this market ------------------------------------------------------
    def live_factory(self, key: str) -> "FakeLive":
        return FakeLive(self, key=key)

    def live_class(self) -> type:
        """A stand-in for `databento.Live` (as the feed's default factory builds it)."""
        market = self

        class BoundLive(FakeLive):
            def __init__(self, key: str | None = None, **kwargs: Any) -> None:
                super().__init__(market, key=key or "", **kwargs)

        return BoundLive

    def replay_sessions(self) -> list["FakeLive"]:
        return [s for s in self.sessions if any(sub["start"] is not None for sub in s.subscriptions)]

    def live_sessions(self, dataset: str | None = None) -> list["FakeLive"]:
        return [s for s in self.sessions if s.subscriptions and all(sub["start"] is None for sub in s.subscriptions)
                and dataset in (None, s.subscriptions[0]["dataset"])]


def _schema(record: Any) -> str:
    return "ohlcv-1m" if isinstance(record, dbn.OHLCVMsg) else "trades"


def _index_ts(record: Any) -> int:
    """The time Historical filters on: ts_recv, or ts_event for a schema without it."""
    return int(getattr(record, "ts_recv", record.ts_event))


# ---- Historical -------------------------------------------------------------------------------------
class FakeHistoricalGateway(BaseAdapter):
    def __init__(self, market: Market, key: str = KEY) -> None:
        super().__init__()
        self.market = market
        self.key = key

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = urlsplit(request.url or "")
        expected = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _json(request, 401, {"detail": "Authentication failed."})
        if self.market.refuse_historical:
            return _json(request, 403, {"detail": {"case": "license_not_found_unauthorized", "status_code": 403,
                                                   "message": "No license found for this dataset.", "docs": None}})
        if url.path == "/v0/metadata.get_dataset_range":
            return self._dataset_range(request, parse_qs(url.query)["dataset"][0])
        if url.path == "/v0/timeseries.get_range":
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
            return self._get_range(request, {k: v[0] for k, v in parse_qs(body).items()})
        return _json(request, 404, {"detail": f"no fake route for {url.path}"})

    def close(self) -> None:
        pass

    def _dataset_range(self, request: requests.PreparedRequest, dataset: str) -> requests.Response:
        self.market.range_calls.append(dataset)
        start = "2018-05-01T00:00:00.000000000Z"
        return _json(request, 200, {
            "dataset": dataset, "start": start, "end": _iso(self.market.available_end("trades")),
            "schema": {s: {"start": start, "end": _iso(self.market.available_end(s))} for s in ("trades", "ohlcv-1m")}})

    def _get_range(self, request: requests.PreparedRequest, form: dict[str, str]) -> requests.Response:
        market = self.market
        market.get_range_calls.append(form)
        dataset, schema = form["dataset"], form["schema"]
        start, end = _parse_time(form["start"]), _parse_time(form["end"])
        available = market.available_end(schema)
        if start >= available:
            return _refusal(request, "data_start_after_available_end", dataset, start, end, available,
                            f"`start` in query ('{_text(start)}') was after the available end of dataset {dataset} "
                            f"('{_text(available)}'). Try requesting with an earlier `start`.")
        if end > available:
            return _refusal(request, "data_end_after_available_end", dataset, start, end, available,
                            f"The dataset {dataset} has data available up to '{_text(available)}'. The `end` in the "
                            f"query ('{_text(end)}') is after the available range. Try requesting with an earlier "
                            "`end`.")
        raws = form["symbols"].split(",")
        if form.get("stype_in") != "raw_symbol" or form.get("stype_out") != "instrument_id":
            return _json(request, 422, {"detail": f"unsupported symbology in this fake: {form}"})
        ids = {raw: market.instrument(dataset, raw) for raw in raws}
        records = sorted((r for r in market.records(dataset, set(ids.values()), schema) if start <= _index_ts(r) < end),
                         key=_index_ts)
        metadata = dbn.Metadata(
            dataset=dataset, schema=dbn.Schema.from_str(schema), start=start, end=end,
            stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID, symbols=raws,
            mappings=[_Mapping(raw, [_Interval(_date(start), _date(end, after=True), str(i))]) for raw, i in ids.items()])
        data = bytes(metadata.encode()) + b"".join(bytes(r) for r in records)
        return _response(request, 200, zstandard.ZstdCompressor().compress(data), "application/octet-stream")


@dataclass
class _Interval:
    start_date: date
    end_date: date
    symbol: str


@dataclass
class _Mapping:
    raw_symbol: str
    intervals: list[_Interval]


def _date(ts_ns: int, after: bool = False) -> date:
    day = datetime.fromtimestamp(ts_ns / NS, timezone.utc).date()
    return date.fromordinal(day.toordinal() + 1) if after else day


def _parse_time(text: str) -> int:
    return int(text) if text.isdigit() else ns(text)


def _iso(ts_ns: int) -> str:
    return pd.Timestamp(ts_ns, tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(ts_ns: int) -> str:
    return str(pd.Timestamp(ts_ns, tz="UTC"))


def _refusal(request: requests.PreparedRequest, case: str, dataset: str, start: int, end: int, available: int,
             message: str) -> requests.Response:
    return _json(request, 422, {"detail": {
        "case": case, "message": message, "status_code": 422,
        "docs": "https://databento.com/docs/api-reference-historical/basics/datasets",
        "payload": {"dataset": dataset, "start": _iso(start), "end": _iso(end),
                    "available_start": "2018-05-01T00:00:00.000000000Z", "available_end": _iso(available)}}})


def _json(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
    return _response(request, status, json.dumps(body).encode(), "application/json")


def _response(request: requests.PreparedRequest, status: int, content: bytes, media: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = content
    response._content_consumed = True  # type: ignore[attr-defined]  # iter_content serves _content
    response.headers = CaseInsensitiveDict({"Content-Type": media})
    response.url = request.url or ""
    response.request = request
    response.encoding = "utf-8"
    return response


@pytest.fixture
def market(monkeypatch: pytest.MonkeyPatch) -> Market:
    """A market at Tuesday 2024-11-26 15:00 UTC with the Historical gateway installed."""
    market = Market(now_ns=ns("2024-11-26T15:00:00"))
    install_historical(monkeypatch, market)
    return market


def install_historical(monkeypatch: pytest.MonkeyPatch, market: Market, key: str = KEY) -> FakeHistoricalGateway:
    gateway = FakeHistoricalGateway(market, key)
    original = requests.Session.get_adapter

    def get_adapter(self: requests.Session, url: str) -> BaseAdapter:
        return gateway if url.startswith(GATEWAY) else original(self, url)

    monkeypatch.setattr(requests.Session, "get_adapter", get_adapter)
    return gateway


# ---- Live ---------------------------------------------------------------------------------------------
class FakeLive(db.Live):
    """The real client minus the TCP connection (see the module docstring)."""

    def __init__(self, market: Market, key: str, **kwargs: Any) -> None:
        kwargs.setdefault("reconnect_policy", db.ReconnectPolicy.RECONNECT)
        super().__init__(key=key, **kwargs)
        self.market = market
        self.subscriptions: list[dict[str, Any]] = []
        self.started = self.stopped = self.down = False
        self.replaying = False  # real-time records follow the replay, never interleave with it
        self.last_ts_event: int | None = None
        with market.lock:
            market.sessions.append(self)

    def subscribe(self, dataset: Any, schema: Any, symbols: Any = "ALL_SYMBOLS", stype_in: Any = "raw_symbol",
                  start: Any = None, snapshot: bool = False) -> int:
        dataset = validate_semantic_string(dataset, "dataset")
        schema = str(validate_enum(schema, dbn.Schema, "schema"))
        stype_in = str(validate_enum(stype_in, dbn.SType, "stype_in"))
        start = optional_datetime_to_unix_nanoseconds(start)
        if self.subscriptions and self.subscriptions[0]["dataset"] != dataset:
            raise ValueError(f"Cannot subscribe to dataset `{dataset}` because subscriptions to "
                             f"`{self.subscriptions[0]['dataset']}` have already been made.")
        if start is not None and self.started:
            raise ValueError("intraday replay is only for subscriptions made before the session starts")
        if stype_in != "raw_symbol":
            raise ValueError(f"this fake resolves raw symbols only, not {stype_in}")
        sub = {"dataset": dataset, "schema": schema, "symbols": list(symbols), "stype_in": stype_in, "start": start}
        self.subscriptions.append(sub)
        if self.started:
            self._announce(sub)
        return len(self.subscriptions) - 1

    def start(self) -> None:
        if self.started:
            raise ValueError("the session has already started")
        self.started = True
        for sub in self.subscriptions:
            self._announce(sub)
        replays = [s for s in self.subscriptions if s["start"] is not None]
        self.replaying = bool(replays)
        try:
            self._replay(replays)
        finally:
            self.replaying = False

    def _replay(self, replays: list[dict[str, Any]]) -> None:
        if replays and self.market.replay_gate is not None:
            assert self.market.replay_gate.wait(10), "the test never released the replay"
        if replays and self.market.refuse_replay is not None:
            self.deliver(dbn.ErrorMsg(ts_event=self.market.now_ns, err=self.market.refuse_replay))
            return
        for sub in replays:
            if sub["start"] < self.market.now_ns - DAY_NS:
                self.deliver(dbn.ErrorMsg(ts_event=self.market.now_ns, err="start is outside the replay window"))
                continue
            ids = {self.market.instrument(sub["dataset"], raw) for raw in sub["symbols"]}
            for record in self.market.records(sub["dataset"], ids, sub["schema"]):
                if record.ts_event >= sub["start"]:
                    self.deliver(record)
            self.deliver(dbn.SystemMsg(ts_event=self.market.now_ns, msg=f"Finished {sub['schema']} replay",
                                       code=dbn.SystemCode.REPLAY_COMPLETED))

    def stop(self) -> None:
        self.stopped = True

    def _announce(self, sub: dict[str, Any]) -> None:
        for raw in sub["symbols"]:
            self.deliver(dbn.SymbolMappingMsg(
                publisher_id=1, instrument_id=self.market.instrument(sub["dataset"], raw), ts_event=self.market.now_ns,
                stype_in=dbn.SType.RAW_SYMBOL, stype_in_symbol=raw, stype_out=dbn.SType.RAW_SYMBOL,
                stype_out_symbol=raw, start_ts=self.market.now_ns, end_ts=self.market.now_ns + DAY_NS))

    def wants(self, dataset: str, record: Any) -> bool:
        return any(sub["dataset"] == dataset and sub["schema"] == _schema(record)
                   and record.instrument_id in {self.market.instrument(dataset, r) for r in sub["symbols"]}
                   for sub in self.subscriptions)

    def offer(self, dataset: str, record: Any) -> None:
        if self.started and not (self.stopped or self.down or self.replaying) and self.wants(dataset, record):
            self.deliver(record)

    def deliver(self, record: Any) -> None:
        if hasattr(record, "ts_event"):
            self.last_ts_event = int(record.ts_event)  # what the SDK reports as the gap start
        for callback in list(self._session._user_callbacks):  # the SDK's own callback wrappers
            callback.call(record)

    def drop(self) -> None:
        """The connection is lost: published records stop arriving (they still happen)."""
        self.down = True

    def reconnect(self) -> None:
        """The SDK's reconnect: resubscribe without replay, then the reconnect callbacks with (last
        ts_event before the drop, start of the new session)."""
        gap_start = self.last_ts_event if self.last_ts_event is not None else self.market.now_ns
        self.down = False
        for sub in self.subscriptions:
            self._announce(sub)
        self._session._dispatch_reconnect_callbacks(gap_start=pd.Timestamp(gap_start, tz="UTC"),
                                                    gap_end=pd.Timestamp(self.market.now_ns, tz="UTC"))
