"""Build real DBN bytes with the databento_dbn SDK classes (no network) for feed tests."""
from __future__ import annotations

import databento_dbn as dbn

ES_ID = 7


def metadata(end: int | None = None, dataset: str = "GLBX.MDP3") -> dbn.Metadata:
    return dbn.Metadata(dataset=dataset, schema=dbn.Schema.TRADES, start=0, stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, end=end, symbols=["ESZ4"])


def mapping(instrument_id: int = ES_ID, raw: str = "ESZ4") -> dbn.SymbolMappingMsg:
    return dbn.SymbolMappingMsg(publisher_id=1, instrument_id=instrument_id, ts_event=1, stype_in=dbn.SType.RAW_SYMBOL,
                                stype_in_symbol=raw, stype_out=dbn.SType.INSTRUMENT_ID, stype_out_symbol=raw,
                                start_ts=0, end_ts=dbn.UNDEF_TIMESTAMP)


def trade(ts_event: int, price: float | None, size: int = 1, *, instrument_id: int = ES_ID, sequence: int = 1,
          ts_recv: int | None = None) -> dbn.TradeMsg:
    return dbn.TradeMsg(publisher_id=1, instrument_id=instrument_id, ts_event=ts_event,
                        price=int(round(price * 1e9)) if price is not None else dbn.UNDEF_PRICE, size=size,
                        action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0,
                        ts_recv=ts_recv if ts_recv is not None else ts_event, ts_in_delta=0, sequence=sequence, flags=0)


def encode(meta: dbn.Metadata, records: list[object]) -> bytes:
    return bytes(meta.encode()) + b"".join(bytes(r) for r in records)  # type: ignore[call-overload]
