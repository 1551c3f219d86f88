"""Browser tests of the operations console: the real service (`python app.py`, paper mode,
simulated data) on the private test Redis, driven in Debian's Chromium (/usr/bin/chromium) by a
pinned playwright. Nothing downloads a browser: without chromium (or playwright) these tests skip,
unless REQUIRE_CHROMIUM=1 (set by .ci/run), where that fails them.

One service and one browser serve the whole folder (starting them is most of the time); both stop
after its last test (a service left trading would load the rest of the suite). Each test gets a
fresh browser context, so its own tab storage (the token) and its own console log, which must hold
no Content-Security-Policy violation and no page error.

Screenshots go to logs/screenshots/ (gitignored), the path printed when the browser closes.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from tests import conftest as root_conftest
from tests.process.harness import ROOT, Service, service_env

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "logs" / "screenshots"
TIMEOUT_MS = 20_000  # generous: the 2-core CI machine is shared; every wait is on a condition

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev requirements pin it
    sync_playwright = None  # type: ignore[assignment]


def _unavailable() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


@pytest.fixture(autouse=True)
def _browser_available() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"REQUIRE_CHROMIUM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def console_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = root_conftest._real_url
    if not url:
        pytest.skip("no real Redis available for the service")
    prefix = f"console-{uuid.uuid4().hex[:10]}"
    logs = tmp_path_factory.mktemp("console-service")
    # Every test logs in through the page: more logins a minute than the default limit allows.
    env = service_env(url, prefix, logs / "logs", LOGIN_RATE_LIMIT="1000 per minute",
                      LOGIN_ACCOUNT_RATE_LIMIT="1000 per minute")
    svc = Service(env=env, log_dir=logs, name="console")
    svc.start()
    try:
        svc.wait_healthy()
        yield svc
    finally:
        svc.kill()
        client = redis.Redis.from_url(url, decode_responses=True)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root in CI, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM,
                                              args=["--no-sandbox"])
        yield launched
        launched.close()
    print(f"\nconsole screenshots: {SCREENSHOTS}")


class ConsoleLog:
    """What the page reported: console messages, page errors, CSP violations."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def violations(self) -> list[str]:
        return [text for _, text in self.messages if "Content Security Policy" in text or "CSP violation" in text]


# Reported to the console log by the page itself (an init script runs outside the page's CSP).
_REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} in ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def console_log() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def context(browser: Browser, console_log: ConsoleLog) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(_REPORT_VIOLATIONS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, console_log: ConsoleLog) -> Iterator[Page]:
    tab = context.new_page()
    tab.on("console", lambda m: console_log.messages.append((m.type, m.text)))
    tab.on("pageerror", lambda e: console_log.errors.append(str(e)))
    expect.set_options(timeout=TIMEOUT_MS)
    yield tab
    assert not console_log.violations(), console_log.violations()
    assert not console_log.errors, console_log.errors


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="package")
def admin_token(console_service: Service) -> str:
    return console_service.login()
