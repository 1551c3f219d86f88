"""Redis layout and idempotent writes for trades and bars.

Keys (all via `store.key`): `md:trades:<symbol>` (stream), `md:bars:<symbol>:<tf>` (stream),
`md:hist:<symbol>:<tf>` (stream, longer), `md:last:<symbol>` (hash price/ts/size).

Idempotency: every XADD carries an explicit ID computed before the write, so re-sending a batch
after a connection error (when Redis may or may not have applied it) cannot create duplicates —
Redis rejects an ID that is not above the stream's top, and we ignore exactly that rejection.
- time bars: ID = `<bar start ms>-0` (a bar's start is unique within its timeframe, even across
  service restarts: a rebuilt bar for an already-published start is rejected);
- tick bars and trades: `<ts ms>-<n>`, n counting up within the same millisecond (the allocator is
  seeded from the stream's top on first use so restarts continue above it).

Trades are written with one Lua call per batch and symbol (a loop of XADDs inside Redis): that is
what makes >= 100k trades/s possible from Python without hiredis.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis

from domain.market import Bar, Trade
from store.redis_store import Store, is_noscript

TRADES_MAXLEN = 100_000
BARS_MAXLEN = 5_000
HIST_MAXLEN = 20_000

_XADD_TRADES = """
local maxlen = ARGV[1]
local added = 0
for i = 2, #ARGV, 5 do
  local ok = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', maxlen, ARGV[i],
                         't', ARGV[i+1], 'p', ARGV[i+2], 's', ARGV[i+3], 'q', ARGV[i+4])
  if type(ok) == 'string' then added = added + 1 end
end
return added
"""


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class IdAllocator:
    """Strictly increasing stream IDs `<ms>-<seq>` for one stream."""

    __slots__ = ("last_ms", "last_seq")

    def __init__(self, last_ms: int = 0, last_seq: int = -1) -> None:
        self.last_ms, self.last_seq = last_ms, last_seq

    def next(self, ms: int) -> str:
        if ms > self.last_ms:
            self.last_ms, self.last_seq = ms, 0
        else:
            self.last_seq += 1
        return f"{self.last_ms}-{self.last_seq}"


@dataclass
class WriteBatch:
    """Everything one flush writes, with IDs already assigned (so it can be retried verbatim)."""

    trades: dict[str, list[str]] = field(default_factory=dict)  # symbol -> flat [id, t, p, s, q, ...]
    bars: list[tuple[str, str, Bar]] = field(default_factory=list)  # (stream id, tf_raw, bar)
    last: dict[str, Trade] = field(default_factory=dict)  # symbol -> last trade (hash built at write)
    trade_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.trades or self.bars or self.last)


@dataclass
class WriteResult:
    trades_added: int = 0
    bars_added: int = 0
    bars_rejected_duplicate: int = 0


class RedisMarketBuffer:
    def __init__(self, store: Store, *, trades_maxlen: int = TRADES_MAXLEN, bars_maxlen: int = BARS_MAXLEN,
                 hist_maxlen: int = HIST_MAXLEN) -> None:
        self.store = store
        self.trades_maxlen = trades_maxlen
        self.bars_maxlen = bars_maxlen
        self.hist_maxlen = hist_maxlen
        self._sha: str | None = None  # loaded lazily: Redis may be down when we are built
        self._allocators: dict[str, IdAllocator] = {}

    def trades_key(self, symbol: str) -> str:
        return self.store.key("md", "trades", symbol)

    def bars_key(self, symbol: str, tf_raw: str) -> str:
        return self.store.key("md", "bars", symbol, tf_raw)

    def hist_key(self, symbol: str, tf_raw: str) -> str:
        return self.store.key("md", "hist", symbol, tf_raw)

    def last_key(self, symbol: str) -> str:
        return self.store.key("md", "last", symbol)

    def allocator(self, key: str) -> IdAllocator:
        """Allocator seeded from the stream's current top (so a restart continues above it)."""
        alloc = self._allocators.get(key)
        if alloc is None:
            top = self.store.redis.xrevrange(key, count=1)
            alloc = IdAllocator(*parse_id(top[0][0])) if top else IdAllocator()
            self._allocators[key] = alloc
        return alloc

    def bar_id(self, bar: Bar, is_tick: bool) -> str:
        if not is_tick:
            return f"{bar.start_ns // 1_000_000}-0"
        return self.allocator(self.bars_key(bar.symbol, bar.timeframe)).next(bar.start_ns // 1_000_000)

    def write(self, batch: WriteBatch) -> WriteResult:
        """One round trip, one MULTI/EXEC. Raises redis.ConnectionError/TimeoutError (caller retries).

        The transaction is for the readers: a client blocked in XREAD is served after each command
        outside a transaction, so the engine's hub would wake for the first stream written and read
        again for the rest. In MULTI/EXEC every stream of the batch is ready when it is served: one
        wake-up and one reply for all the bars that closed together."""
        if batch.trades and self._sha is None:
            self._sha = self.store.redis.script_load(_XADD_TRADES)
        pipe = self.store.redis.pipeline(transaction=True)
        # Bars before trades: a reader woken by this write (Redis 7.0 answers a blocked multi-stream
        # XREAD with the first stream written) acts on the completed bar before the next bar's
        # first trade, the order in which they happened.
        for stream_id, tf_raw, bar in batch.bars:
            fields = bar.to_fields()
            pipe.xadd(self.bars_key(bar.symbol, tf_raw), fields, id=stream_id, maxlen=self.bars_maxlen,
                      approximate=True)
            pipe.xadd(self.hist_key(bar.symbol, tf_raw), fields, id=stream_id, maxlen=self.hist_maxlen,
                      approximate=True)
        for symbol, flat in batch.trades.items():
            # EVALSHA directly (not redis-py's Script in a pipeline, which adds a SCRIPT EXISTS
            # round trip to every flush); NOSCRIPT after a Redis restart -> reload and re-send.
            pipe.evalsha(self._sha, 1, self.trades_key(symbol), self.trades_maxlen, *flat)
        for symbol, trade in batch.last.items():
            pipe.hset(self.last_key(symbol), mapping={"p": repr(trade.price), "t": str(trade.ts_ns), "s": str(trade.size)})
        results = pipe.execute(raise_on_error=False)
        out = WriteResult()
        for r in results:
            if isinstance(r, (redis.ConnectionError, redis.TimeoutError)):
                raise r
        i = 0
        for _ in batch.bars:
            bar_result = results[i]
            if isinstance(bar_result, redis.ResponseError):
                if "equal or smaller" not in str(bar_result):
                    raise bar_result
                out.bars_rejected_duplicate += 1
            else:
                out.bars_added += 1
            i += 2
        for _ in batch.trades:
            r = results[i]
            if is_noscript(r):
                self._sha = None
                return self.write(batch)  # IDs are explicit, so re-sending cannot duplicate
            if isinstance(r, redis.ResponseError):
                raise r
            out.trades_added += int(r) if isinstance(r, int) else 0
            i += 1
        return out
