"""Login rate limits per client address and per (account, client address), behind a trusted proxy:
an attacker at one address cannot lock the admin out at another, and X-Forwarded-For is believed
only as far as TRUSTED_PROXIES says."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app import create_app
from config.settings import Settings, SettingsError, settings_from_mapping
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VIEWER_EMAIL, VIEWER_PASSWORD

ATTACKER, ADMIN_HOME = "203.0.113.9", "198.51.100.7"
NGINX = {"REMOTE_ADDR": "127.0.0.1"}  # what the app sees behind the README's nginx


def _client(settings: Settings, store: Store, **overrides: object) -> FlaskClient:
    return create_app(settings.with_overrides(**overrides), store).test_client()


def _login(client: FlaskClient, password: str, *, via: str | None = None, remote: str = "127.0.0.1",
           email: str = ADMIN_EMAIL) -> int:
    headers = {"X-Forwarded-For": via} if via else {}
    response = client.post("/api/login", json={"email": email, "password": password}, headers=headers,
                           environ_base={"REMOTE_ADDR": remote})
    return response.status_code


def test_behind_a_trusted_proxy_an_attacker_cannot_lock_out_the_admin(settings: Settings, store: Store) -> None:
    client = _client(settings, store, trusted_proxies=1, login_rate_limit="3 per hour")
    assert [_login(client, "wrong", via=ATTACKER) for _ in range(4)] == [401, 401, 401, 429]
    assert _login(client, ADMIN_PASSWORD, via=ADMIN_HOME) == 200


def test_only_the_trusted_number_of_forwarded_entries_is_believed(settings: Settings, store: Store) -> None:
    # The client can send its own X-Forwarded-For; nginx appends the real peer, the last entry.
    client = _client(settings, store, trusted_proxies=1, login_rate_limit="3 per hour")
    statuses = [_login(client, "wrong", via=f"10.0.0.{i}, {ATTACKER}") for i in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings: Settings, store: Store) -> None:
    client = _client(settings, store, login_rate_limit="3 per hour")
    statuses = [_login(client, "wrong", via=f"10.0.0.{i}", remote=ATTACKER) for i in range(4)]
    assert statuses == [401, 401, 401, 429]  # a new forged address per request gets no fresh budget
    assert _login(client, ADMIN_PASSWORD, remote=ADMIN_HOME) == 200


def test_failed_logins_are_limited_per_account_and_address(settings: Settings, store: Store) -> None:
    client = _client(settings, store, login_rate_limit="50 per hour", login_account_rate_limit="2 per hour")
    client.application.extensions["services"].users.add(VIEWER_EMAIL, VIEWER_PASSWORD)
    assert [_login(client, "wrong", remote=ATTACKER) for _ in range(2)] == [401, 401]
    response = client.post("/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                           environ_base={"REMOTE_ADDR": ATTACKER})
    assert response.status_code == 429  # even the right password: the budget for this pair is spent
    assert response.json["code"] == "login_rate_limited" and response.json["error"]
    assert 3500 <= int(response.headers["Retry-After"]) <= 3600
    # The same account from another address, and another account from the same address, are open.
    assert _login(client, ADMIN_PASSWORD, remote=ADMIN_HOME) == 200
    assert _login(client, VIEWER_PASSWORD, remote=ATTACKER, email=VIEWER_EMAIL) == 200


def test_successful_logins_do_not_spend_the_per_account_budget(settings: Settings, store: Store) -> None:
    client = _client(settings, store, login_rate_limit="50 per hour", login_account_rate_limit="2 per hour")
    assert [_login(client, ADMIN_PASSWORD, remote=ADMIN_HOME) for _ in range(5)] == [200] * 5


def test_wrong_current_passwords_spend_the_per_account_budget(settings: Settings, store: Store) -> None:
    client = _client(settings, store, login_rate_limit="50 per hour", login_account_rate_limit="2 per hour")
    token = client.post("/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json["token"]
    body = {"currentPassword": "wrong password", "newPassword": "a brand new password"}
    statuses = [client.post("/api/update-credentials", json=body, headers={"Authorization": f"Bearer {token}"})
                .status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.mark.parametrize(("env", "name"), [
    ({"TRUSTED_PROXIES": "-1"}, "TRUSTED_PROXIES"), ({"TRUSTED_PROXIES": "one"}, "TRUSTED_PROXIES"),
    ({"LOGIN_RATE_LIMIT": "lots"}, "LOGIN_RATE_LIMIT"), ({"LOGIN_RATE_LIMIT": "0 per minute"}, "LOGIN_RATE_LIMIT"),
    ({"LOGIN_ACCOUNT_RATE_LIMIT": "5 per fortnight"}, "LOGIN_ACCOUNT_RATE_LIMIT"),
])
def test_bad_limit_settings_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        settings_from_mapping(env)


def test_limit_settings_defaults_and_values() -> None:
    defaults = settings_from_mapping({})
    assert defaults.trusted_proxies == 0 and defaults.login_account_rate_limit == "5 per minute; 20 per hour"
    custom = settings_from_mapping({"TRUSTED_PROXIES": "2", "LOGIN_ACCOUNT_RATE_LIMIT": "3 per hour"})
    assert custom.trusted_proxies == 2 and custom.login_account_rate_limit == "3 per hour"


def test_behind_a_trusted_proxy_metrics_are_not_served_to_remote_clients_as_localhost(settings: Settings,
                                                                                      store: Store) -> None:
    client = _client(settings, store, trusted_proxies=1)
    assert client.get("/metrics", headers={"X-Forwarded-For": ATTACKER}, environ_base=NGINX).status_code == 403
    assert client.get("/metrics", environ_base=NGINX).status_code == 200  # a scrape on the host itself
