"""The orders-per-minute window as a Lua fragment, shared by every script that takes a slot.

An allowed order takes its slot in the same Redis call that records it (the order manager's
claim), so a crash never leaves a slot taken by an order that does not exist, nor an order without
its slot. The fragment reads `RATE_ARGC` arguments starting at the script's local `rate_at`:
key, limit (-1: no window), window ms, now ms, member, audit stream key ("" = none), audit maxlen,
audit fields (JSON list of field/value pairs). A full window makes the fragment `return {-2, n}`
with nothing written; otherwise the slot (and the audit entry) are added and the script goes on.
"""
from __future__ import annotations

import orjson

from domain.risk import RateSlot

RATE_ARGC = 8

# Expects `local rate_at = <index of the first rate argument in ARGV>` before it. The rate key is
# passed as an argument, not in KEYS: one Redis instance (no cluster), like every script here.
RATE_SLOT_LUA = """
if ARGV[rate_at] ~= '' then
  local rk, limit, window, now = ARGV[rate_at], tonumber(ARGV[rate_at + 1]), tonumber(ARGV[rate_at + 2]),
    tonumber(ARGV[rate_at + 3])
  if limit >= 0 then
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - window)
    local n = redis.call('ZCARD', rk)
    if n >= limit then return {-2, n} end
    redis.call('ZADD', rk, now, ARGV[rate_at + 4])
    redis.call('PEXPIRE', rk, window * 2)
  end
  if ARGV[rate_at + 5] ~= '' then
    local f = cjson.decode(ARGV[rate_at + 7])
    redis.pcall('XADD', ARGV[rate_at + 5], 'MAXLEN', '~', ARGV[rate_at + 6], '*', (unpack or table.unpack)(f))
  end
end
"""


def rate_slot_args(slot: RateSlot | None) -> list[str]:
    """The fragment's arguments for `slot` (all empty: no slot to take)."""
    if slot is None:
        return [""] * RATE_ARGC
    return [slot.key, str(slot.limit), str(slot.window_ms), str(slot.now_ms), slot.member, slot.audit_key,
            str(slot.audit_maxlen), orjson.dumps(slot.audit_fields).decode()]  # orjson: once per order
