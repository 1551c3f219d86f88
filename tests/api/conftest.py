"""Fixtures for the API tests: an app on the parametrised `store` (real Redis and fakeredis) and
logged-in admin and viewer headers."""
from __future__ import annotations

from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from auth.users import Role
from config.settings import Settings
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, FUZZ_STATS, VIEWER_EMAIL, VIEWER_PASSWORD, login


@pytest.fixture
def app(settings: Settings, store: Store) -> Iterator[Flask]:
    application = create_app(settings, store)
    application.config["TESTING"] = True
    yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin_headers(client: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}


@pytest.fixture
def viewer_headers(app: Flask, client: FlaskClient) -> dict[str, str]:
    app.extensions["services"].users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    return {"Authorization": f"Bearer {login(client, VIEWER_EMAIL, VIEWER_PASSWORD)}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many cases the schemathesis run made (tests/api/test_fuzz_contract.py)."""
    if FUZZ_STATS["cases"]:
        terminalreporter.write_line(f"schemathesis: {FUZZ_STATS['cases']} cases over {FUZZ_STATS['operations']} "
                                    "operations")
