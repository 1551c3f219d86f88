"""Whether the Redis behind a Store keeps anything across its own restart, as Redis reports it.

`Store.persistent` only says "a real Redis, not in-process fakeredis": a real Redis started with
`save ""` and `appendonly no` forgets every position, order and halt when it restarts. Redis is
asked with CONFIG GET appendonly / save. Managed Redis services and hardened set-ups often
disable CONFIG (renamed command, or an ACL user without +config): the answer is then unknown,
never guessed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from store.redis_store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RedisPersistence:
    """`persistent`: True (AOF or RDB snapshots on), False (neither, or in-process fakeredis), None
    (Redis would not say). `appendonly` and `save` are Redis's own values, None when unknown."""

    persistent: bool | None
    appendonly: str | None
    save: str | None

    def to_json(self) -> dict[str, object]:
        return {"persistent": self.persistent, "appendonly": self.appendonly, "save": self.save}


IN_PROCESS = RedisPersistence(persistent=False, appendonly=None, save=None)
UNKNOWN = RedisPersistence(persistent=None, appendonly=None, save=None)


def redis_persistence(store: Store) -> RedisPersistence:
    """Ask Redis (one round trip). Never raises: a Redis error means "unknown"."""
    if not store.persistent:
        return IN_PROCESS
    try:
        with store.redis.pipeline(transaction=False) as pipe:
            pipe.config_get("appendonly")
            pipe.config_get("save")
            appendonly_reply, save_reply = pipe.execute()
    except redis.RedisError:  # CONFIG renamed away or not permitted (NoPermissionError), or Redis down
        return UNKNOWN
    appendonly = appendonly_reply.get("appendonly") if isinstance(appendonly_reply, dict) else None
    save = save_reply.get("save") if isinstance(save_reply, dict) else None
    if appendonly is None or save is None:  # a Redis-compatible server that does not know the parameters
        return RedisPersistence(persistent=None, appendonly=appendonly, save=save)
    aof = str(appendonly).strip().lower() == "yes"
    rdb = bool(str(save).strip())  # `save ""` turns snapshots off
    return RedisPersistence(persistent=aof or rdb, appendonly=str(appendonly), save=str(save))


def warn_if_not_persistent(store: Store, live: bool) -> RedisPersistence:
    """At start-up: live trading on a Redis that keeps nothing loses positions, orders and halts
    when Redis restarts, so say so loudly. Returns what Redis reported."""
    persistence = redis_persistence(store)
    if persistence.persistent is False and store.persistent:
        message = ("Redis at %s persists nothing (appendonly=%s, save=%r): positions, orders and halts are "
                   "lost when Redis restarts; enable AOF (see systemd/redis-persistence.conf)")
        (log.warning if live else log.info)(message, store.url, persistence.appendonly, persistence.save)
    elif persistence.persistent is None and live:
        log.warning("Redis at %s does not report its persistence (CONFIG GET refused); make sure AOF is on",
                    store.url)
    return persistence
