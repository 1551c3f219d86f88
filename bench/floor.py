"""What the benchmarks share: a private redis-server, a record of every Redis round trip, and the
floor each benchmark measures in the same run.

A benchmark's absolute figure depends on the machine (and on what else runs on it); its ratio to a
floor measured in the same run, on the same Redis, does much less. The floor of an order path is a
minimal redis-py loop making the same Redis round trips with the same payloads: every request the
measured code wrote to a Redis socket is recorded (`RoundTrips`), and `FloorReplay` sends each one
again, the same commands with the same arguments, except that each Lua script call (EVALSHA) runs a
stand-in script of the same length that reads its keys and arguments and returns what the real
script returns in the measured case (`FLOOR_REPLIES`), writing nothing. So the floor pays redis-py's
packing and parsing, the socket and the server's command dispatch for the same bytes, and none of
the Python that decides what to send. The real scripts' own writes inside Redis are in the measured
path and not in the floor.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import redis

# Read-only commands a recorded round trip may carry besides script calls; anything else would
# write again when replayed, so the replay refuses it (a benchmark's measured loop should not send
# plain writes; if it does, the floor would no longer be a like-for-like one).
_READS = {b"GET", b"MGET", b"HGET", b"HMGET", b"HGETALL", b"HLEN", b"SMEMBERS", b"SCARD", b"SISMEMBER",
          b"EXISTS", b"XLEN", b"XRANGE", b"XREVRANGE", b"ZCARD", b"ZRANGE", b"ZREVRANGE", b"PING"}


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of this benchmark's own on a free loopback port (no persistence, a scratch
    directory), stopped and removed afterwards; yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("private redis-server did not start")
                threading.Event().wait(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


class RoundTrips:
    """Counts every request written to a Redis socket (one command, pipeline or MULTI/EXEC is one
    round trip) and, on a thread that asked for it (`record_into`), keeps the request's bytes.
    Installed once per process, on redis-py's Connection."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes_sent = 0
        self._local = threading.local()
        original = redis.connection.Connection.send_packed_command
        recorder = self

        def send_packed_command(conn, command, check_health=True):  # type: ignore[no-untyped-def]
            data = command if isinstance(command, (bytes, str)) else b"".join(bytes(c) for c in command)
            if isinstance(data, str):
                data = data.encode()
            recorder.count += 1
            recorder.bytes_sent += len(data)
            sink = getattr(recorder._local, "sink", None)
            if sink is not None:
                sink.append(data)
            return original(conn, [data], check_health)

        redis.connection.Connection.send_packed_command = send_packed_command  # type: ignore[method-assign]

    def record_into(self, sink: list[bytes] | None) -> None:
        """Keep this thread's requests in `sink` from now on (None: stop keeping them)."""
        self._local.sink = sink


def parse_requests(data: bytes) -> list[list[bytes]]:
    """The commands in one request as redis-py writes them (RESP arrays of bulk strings)."""
    out: list[list[bytes]] = []
    i = 0
    while i < len(data):
        if data[i:i + 1] != b"*":
            raise ValueError(f"not a RESP array at byte {i}")
        end = data.index(b"\r\n", i)
        n = int(data[i + 1:end])
        i = end + 2
        args: list[bytes] = []
        for _ in range(n):
            end = data.index(b"\r\n", i)
            size = int(data[i + 1:end])
            i = end + 2
            args.append(data[i:i + size])
            i += size + 2
        out.append(args)
    return out


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


def _floor_reply(source: str, reply: str) -> str:
    """A script as long as `source` that reads every key and argument and returns `reply`."""
    body = ("local n = 0\nfor i = 1, #KEYS do n = n + #KEYS[i] end\n"
            f"for i = 1, #ARGV do n = n + #ARGV[i] end\nreturn {reply}\n")
    pad = max(0, len(source) - len(body) - 3)
    return body + "--" + "x" * pad + "\n"


def floor_replies() -> dict[str, str]:
    """The project's scripts on the order and market data paths -> the Lua value each returns in
    the measured (successful) case: the claim 1, the paper fill false (nil), a batch its counts."""
    from brokers.paper import _WRITE_LUA
    from market_data.redis_buffer import _WRITE_BATCH
    from oms.order_manager import _CLAIM_LUA, _EXEC_LUA

    return {_CLAIM_LUA: "1", _EXEC_LUA: "1", _WRITE_LUA: "false", _WRITE_BATCH: "{1, 0, 1}"}


@dataclass(frozen=True, slots=True)
class _Trip:
    transaction: bool
    commands: tuple[tuple[str | bytes, ...], ...]


class FloorReplay:
    """Sends recorded round trips again through a plain redis-py client (see the module doc)."""

    def __init__(self, client: redis.Redis, replies: dict[str, str] | None = None, *,
                 allow_writes: bool = False) -> None:
        """`allow_writes`: replay plain write commands too (for a floor measured after the run,
        on keys deleted afterwards); otherwise a recorded write is refused."""
        self._client = client
        self._allow_writes = allow_writes
        self._floor_sha: dict[bytes, bytes] = {}
        for source, reply in (replies or floor_replies()).items():
            stand_in = _floor_reply(source, reply)
            self._floor_sha[_sha(source).encode()] = client.script_load(stand_in).encode()

    def prepare(self, requests: list[bytes]) -> list[_Trip]:
        """Parse recorded requests once (the floor's loop then only sends)."""
        trips = []
        for data in requests:
            commands = parse_requests(data)
            transaction = bool(commands) and commands[0][0].upper() == b"MULTI"
            if transaction:
                commands = commands[1:-1]  # redis-py's pipeline adds MULTI and EXEC itself
            out: list[tuple[str | bytes, ...]] = []
            for cmd in commands:
                name = cmd[0].upper()
                if name == b"EVALSHA":
                    floor = self._floor_sha.get(cmd[1])
                    if floor is None:
                        raise ValueError(f"no floor stand-in for script {cmd[1].decode()}: add it to floor_replies()")
                    cmd = [cmd[0], floor, *cmd[2:]]
                elif name not in _READS and not self._allow_writes:
                    raise ValueError(f"recorded round trip writes with {name.decode()}: no like-for-like floor")
                # The name as a str, as redis-py's own calls give it: its reply callbacks (HGETALL's
                # dict, ...) are looked up by it, so the floor parses replies as the real code does.
                out.append((name.decode(), *cmd[1:]))
            trips.append(_Trip(transaction, tuple(out)))
        return trips

    def send(self, trip: _Trip) -> None:
        """One round trip, as the measured code made it: a single command, a pipeline or a
        MULTI/EXEC."""
        if len(trip.commands) == 1 and not trip.transaction:
            self._client.execute_command(*trip.commands[0])
            return
        pipe = self._client.pipeline(transaction=trip.transaction)
        for cmd in trip.commands:
            pipe.execute_command(*cmd)
        pipe.execute()


def cpu_seconds() -> float:
    """This process's CPU time (all threads, user + system)."""
    return time.process_time()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def redis_server_cpu(client: redis.Redis) -> float:
    """The redis-server process's CPU time so far (user + system, seconds, from INFO cpu): the
    server's share of a loop, which the client's process time does not include."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
