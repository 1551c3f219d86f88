"""No token, app secret or account number in any log line, status or exception, even at DEBUG
(schwab-py logs whole response bodies at DEBUG, including every account number on the login)."""
from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal

import httpx2
import pytest

from brokers.errors import BrokerError
from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderType, PositionEffect
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    ACCOUNT_HASH,
    ACCOUNT_ID,
    APP_SECRET,
    OTHER_ACCOUNT_ID,
    SchwabEnv,
    created,
    json_reply,
    load,
    redirect_url_for,
    schwab_env,
    status_reply,
)

ACCOUNT_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}"
ORDERS_PATH = f"{ACCOUNT_PATH}/orders"


def _secrets() -> list[str]:
    token, refreshed = load("token_response.json"), load("token_refreshed.json")
    values = [APP_SECRET, ACCOUNT_ID, OTHER_ACCOUNT_ID, ACCOUNT_HASH, "AUTHCODE"]
    for t in (token, refreshed):
        values += [t["access_token"], t["refresh_token"], t["id_token"]]
    return values


def test_no_secrets_in_logs_statuses_or_errors(schwab_env: SchwabEnv, caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # everything, including schwab-py's and httpx2's debug output
    env = schwab_env
    outputs: list[str] = []
    adapter = env.adapter()
    outputs.append(adapter.authorize_url().split("state=")[0])  # the URL legitimately has client_id + state
    status = adapter.complete_login(redirect_url_for(adapter.authorize_url()))
    outputs.append(json.dumps(status.to_json()))

    env.fake.on("GET", ACCOUNT_PATH, status_reply(401), json_reply(load("account_positions.json")))
    env.fake.on("POST", "/v1/oauth/token", json_reply(load("token_refreshed.json")))
    outputs.append(repr(adapter.balances()))
    outputs.append(repr(adapter.positions()))
    outputs.append(json.dumps(adapter.refresh().to_json()))

    env.fake.on("POST", ORDERS_PATH, created(1004123456789), json_reply(load("order_rejection_400.json"), status=400),
                httpx2.ReadTimeout("timed out"))
    env.fake.on("GET", f"{ORDERS_PATH}/1004123456789", json_reply(load("order_partial.json")))
    env.fake.on("GET", ORDERS_PATH, json_reply([load("order_partial.json")]))
    env.fake.on("GET", "/marketdata/v1/quotes", json_reply(load("quote_spx.json")))
    env.fake.on("GET", "/marketdata/v1/chains", json_reply(load("chain_spx.json")))
    for n in range(3):
        order = OrderRequest(ClientOrderId(f"c-{n}"), "NVDA", OrderSide.BUY, 1, PositionEffect.OPEN,
                             OrderType.LIMIT, Decimal("185.50"))
        try:
            outputs.append(repr(adapter.place_order(order)))
        except BrokerError as exc:
            outputs.append(str(exc))
    outputs.append(repr(adapter.get_order(ClientOrderId("c-0"), None)))
    outputs.append(repr(adapter.open_orders()))
    outputs.append(repr(adapter.quote("SPX")))
    outputs.append(repr(adapter.option_chain("SPX", date(2025, 12, 19))))

    env.fake.on("GET", ACCOUNT_PATH, status_reply(401))
    env.fake.on("POST", "/v1/oauth/token", json_reply({"error": "invalid_grant"}, status=400))
    with pytest.raises(BrokerError) as info:
        adapter.balances()
    outputs.append(str(info.value))
    outputs.append(json.dumps(adapter.status().to_json()))

    # A misconfigured account lists the login's accounts -- masked.
    other = env.adapter()
    other._settings = env.settings.with_overrides(schwab_account_id="99990000")  # noqa: SLF001
    env.seed_token()
    with pytest.raises(BrokerError) as info:
        other.connect()
    outputs.append(str(info.value))

    # Sanity: the flows really produced SDK debug output with bodies (else this test proves nothing).
    assert any(r.name == "schwab.client.base" for r in caplog.records)
    assert any("securitiesAccount" in r.getMessage() for r in caplog.records)

    captured = capsys.readouterr()
    lines = [r.getMessage() for r in caplog.records] + [caplog.text, captured.out, captured.err] + outputs
    for secret in _secrets():
        leaks = [line for line in lines if secret in line]
        assert not leaks, f"secret {secret[:6]}... leaked in: {leaks[0][:200]}"
