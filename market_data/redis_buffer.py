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

A batch (the bars that closed, the trades, the last prices) is one Lua call: one command to pack
and one reply to parse instead of one per stream, which is what makes >= 100k trades/s possible
and keeps the Python cost of a bar close (many symbols' bars at once) small. A script is atomic,
so a reader blocked on these streams is woken once, with every stream of the batch ready.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis

from domain.market import Bar, Trade
from store.redis_store import Store, is_noscript

TRADES_MAXLEN = 100_000
BARS_MAXLEN = 5_000
HIST_MAXLEN = 20_000

# KEYS: per bar its bars and hist streams, then per symbol its trades stream, then per symbol its
# last-price hash. ARGV: n bars, n trade symbols, n last prices, bars/hist/trades MAXLEN, then per
# bar its id, field count and fields; per trade symbol its trade count and (id, t, p, s, q) each;
# per last price p, t, s. Bars are written before trades: a reader acts on a completed bar before
# the next bar's first trade, the order in which they happened. Returns {bars added, bars
# rejected as already there (same id: idempotent re-send), trades added}; any other XADD error
# of a bar is returned as the error.
_WRITE_BATCH = """
local n_bars, n_trades, n_last = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bars_max, hist_max, trades_max = ARGV[4], ARGV[5], ARGV[6]
local k, a = 1, 7
local added, dup, trades = 0, 0, 0
local unpack = unpack or table.unpack
for _ = 1, n_bars do
  local id, nf = ARGV[a], tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + nf)}
  local ok = redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', bars_max, id, unpack(fields))
  if type(ok) == 'table' and ok.err then
    if not string.find(tostring(ok.err), 'equal or smaller', 1, true) then return ok end
    dup = dup + 1
  else
    added = added + 1
  end
  redis.pcall('XADD', KEYS[k + 1], 'MAXLEN', '~', hist_max, id, unpack(fields))
  k, a = k + 2, a + 2 + nf
end
for _ = 1, n_trades do
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    local ok = redis.pcall('XADD', KEYS[k], 'MAXLEN', '~', trades_max, ARGV[a],
                           't', ARGV[a + 1], 'p', ARGV[a + 2], 's', ARGV[a + 3], 'q', ARGV[a + 4])
    if type(ok) == 'string' then trades = trades + 1 end
    a = a + 5
  end
  k = k + 1
end
for _ = 1, n_last do
  redis.call('HSET', KEYS[k], 'p', ARGV[a], 't', ARGV[a + 1], 's', ARGV[a + 2])
  k, a = k + 1, a + 3
end
return {added, dup, trades}
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
        """One round trip, one atomic Lua call. Raises redis.ConnectionError/TimeoutError (caller
        retries: IDs are explicit, so re-sending cannot duplicate).

        Atomic for the readers: a client blocked in XREAD is served after each command, so the
        engine's hub would otherwise wake for the first stream written and read again for the
        rest. After one script every stream of the batch is ready: one wake-up and one reply for
        all the bars that closed together."""
        if not batch:
            return WriteResult()
        keys: list[str] = []
        args: list[str | int] = [len(batch.bars), len(batch.trades), len(batch.last),
                                 self.bars_maxlen, self.hist_maxlen, self.trades_maxlen]
        for stream_id, tf_raw, bar in batch.bars:
            keys += (self.bars_key(bar.symbol, tf_raw), self.hist_key(bar.symbol, tf_raw))
            fields = bar.to_fields()
            args += (stream_id, 2 * len(fields))
            for name, value in fields.items():
                args += (name, value)
        for symbol, flat in batch.trades.items():
            keys.append(self.trades_key(symbol))
            args.append(len(flat) // 5)
            args += flat
        for symbol, trade in batch.last.items():
            keys.append(self.last_key(symbol))
            args += (repr(trade.price), str(trade.ts_ns), str(trade.size))
        r = self.store.redis
        if self._sha is None:
            self._sha = r.script_load(_WRITE_BATCH)
        try:
            added, duplicate, trades = r.evalsha(self._sha, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not is_noscript(exc):
                raise
            self._sha = None  # Redis lost it (a restart): load it again and re-send
            return self.write(batch)
        return WriteResult(trades_added=int(trades), bars_added=int(added), bars_rejected_duplicate=int(duplicate))
