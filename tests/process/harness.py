"""The real service as a subprocess (`python app.py`) for process-level tests: its environment,
start, health wait, REST calls, SIGKILL and the cleanup of what a killed process leaves behind.

Every wait is bounded and waits on a condition (never a fixed sleep as synchronisation).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import redis

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "process test admin password"
JWT_SECRET = "process-test-jwt-secret-" + "k" * 32  # fixed: tokens survive a restart
STARTUP_SECONDS = 30.0
# Only what Python needs from the outer environment: no broker, data or metrics credentials leak in.
PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes (fails)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def service_env(redis_url: str, prefix: str, log_dir: Path, **overrides: str) -> dict[str, str]:
    """Paper mode on `redis_url`/`prefix`, a free port, known admin and JWT secret, logs in `log_dir`."""
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env.update({
        "REDIS_URL": redis_url, "REDIS_PREFIX": prefix, "PORT": str(free_port()), "HOST": "127.0.0.1",
        "ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD, "JWT_SECRET": JWT_SECRET,
        "LOG_DIR": str(log_dir), "MARKET_DATA_SOURCE": "simulated", "SIMULATED_TRADES_PER_SECOND": "50",
        "TRADING_MODE": "paper", "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


@dataclass
class Service:
    """One `python app.py` process with its env, port and captured output files."""

    env: dict[str, str]
    log_dir: Path
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = field(default=0.0)  # time.monotonic() at start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Service":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=self.env,
            stdout=self.stdout_path.open("wb"), stderr=self.stderr_path.open("wb"),
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""

    def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} during start-up:\n"
                                     f"{self.stderr()[-4000:]}")
            try:
                status, _ = self.request("GET", "/api/health", timeout=1.0)
            except OSError:
                return False
            return status == 200

        wait_for(healthy, timeout, f"{self.name} /api/health")

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                timeout: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(raw)
        return status, raw.decode("utf-8", errors="replace")

    def api(self, method: str, path: str, token: str, body: Any = None, expect: int = 200,
            timeout: float = 10.0) -> Any:
        status, payload = self.request(method, path, body, token, timeout=timeout)
        assert status == expect, f"{method} {path} -> {status}: {payload}"
        return payload

    def login(self) -> str:
        payload = self.api("POST", "/api/login", "", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        return str(payload["token"])

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (fails the test if it does not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f} s of SIGTERM:\n"
                                 f"{self.stderr()[-4000:]}") from None

    def kill9(self, timeout: float = 10.0) -> None:
        """SIGKILL (no handler, no cleanup: a crash) and reap it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.proc.pid}) survived SIGKILL for {timeout:.0f} s") from None

    def kill(self) -> None:
        """Cleanup: make sure the process is gone, whatever state it is in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def release_dead_holders_lock(client: redis.Redis, prefix: str, pid: int) -> list[str]:
    """Delete the instance lock(s) a SIGKILLed process (`pid`, already reaped) still holds: the lock
    would expire by itself within its TTL (30 s); deleting it is what that expiry does, sooner. A
    lock held by any other process is left alone."""
    released: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:instance_lock:*", count=100):
        raw = client.get(key)
        try:
            holder = json.loads(raw) if raw else None
        except ValueError:
            holder = None
        if isinstance(holder, dict) and holder.get("pid") == pid and holder.get("host") == socket.gethostname():
            client.delete(key)
            released.append(str(key))
    return released
