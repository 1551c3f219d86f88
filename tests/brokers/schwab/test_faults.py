"""Faults -> the exception tree: 401 refresh+retry once, bounded backoff on reads, timeouts on
place_order end UNKNOWN without a second POST and are later found by querying Schwab."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx2
import pytest

from brokers.errors import (
    AuthenticationRequired,
    BrokerConfigError,
    OrderOutcomeUnknown,
    TemporaryBrokerError,
)
from brokers.schwab.adapter import SchwabAdapter
from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderState, OrderType, PositionEffect
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    ACCOUNT_HASH,
    SchwabEnv,
    created,
    json_reply,
    load,
    schwab_env,
    status_reply,
)

ACCOUNT_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}"
ORDERS_PATH = f"{ACCOUNT_PATH}/orders"
COID = ClientOrderId("ema-NVDA-open-0001")


def buy_nvda(coid: ClientOrderId = COID) -> OrderRequest:
    return OrderRequest(coid, "NVDA", OrderSide.BUY, 10, PositionEffect.OPEN, OrderType.LIMIT, Decimal("185.50"))


# --- account resolution ---------------------------------------------------------------------


def test_account_hash_resolved_from_configured_number(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, json_reply(load("account_positions.json")))
    adapter.balances()
    # The configured account (second in the list), not the first one.
    assert schwab_env.fake.calls("GET", ACCOUNT_PATH)
    assert not schwab_env.fake.calls("GET", "/trader/v1/accounts/0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0")


def test_account_absent_from_login_is_config_error_never_first_account(schwab_env: SchwabEnv) -> None:
    schwab_env.settings = schwab_env.settings.with_overrides(schwab_account_id="99990000")
    schwab_env.seed_token()
    adapter = schwab_env.adapter()
    with pytest.raises(BrokerConfigError) as info:
        adapter.connect()
    assert "****0000" in str(info.value) and "99990000" not in str(info.value)
    assert "****2222" in str(info.value) and "11112222" not in str(info.value)
    status = adapter.status()
    assert not status.connected and "not an account on this Schwab login" in status.message
    with pytest.raises(BrokerConfigError):
        adapter.place_order(buy_nvda())
    assert schwab_env.fake.calls("POST", "/trader/v1/accounts/0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0/orders") == []
    assert [r.method for r in schwab_env.fake.requests if r.method == "POST"] == []


def test_account_id_unset_is_config_error(schwab_env: SchwabEnv) -> None:
    schwab_env.settings = schwab_env.settings.with_overrides(schwab_account_id=None)
    schwab_env.seed_token()
    with pytest.raises(BrokerConfigError, match="SCHWAB_ACCOUNT_ID is not set"):
        schwab_env.adapter().connect()


# --- 401 -------------------------------------------------------------------------------------


def test_401_refreshes_once_and_retries(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(load("token_refreshed.json")))
    schwab_env.fake.on("GET", ACCOUNT_PATH, status_reply(401, payload={"message": "Unauthorized"}),
                       json_reply(load("account_positions.json")))
    balances = adapter.balances()
    assert balances.equity == Decimal("29339.86")
    reads = schwab_env.fake.calls("GET", ACCOUNT_PATH)
    assert len(reads) == 2 and len(schwab_env.fake.token_calls("refresh_token")) == 1
    assert reads[1].headers["authorization"].endswith(load("token_refreshed.json")["access_token"])
    assert adapter.status().connected


def test_401_after_refresh_is_authentication_required(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, status_reply(401))
    with pytest.raises(AuthenticationRequired):
        adapter.balances()
    assert len(schwab_env.fake.calls("GET", ACCOUNT_PATH)) == 2  # original + exactly one retry
    assert len(schwab_env.fake.token_calls("refresh_token")) == 1
    status = adapter.status()
    assert not status.connected and "log in again" in status.message


def test_401_on_place_order_refreshes_and_resends_once(schwab_env: SchwabEnv) -> None:
    # A 401 means Schwab did not process the order, so one resend after refresh is safe.
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, status_reply(401), created(1004123456789))
    update = adapter.place_order(buy_nvda())
    assert update.broker_order_id == "1004123456789"
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 2


def test_401_twice_on_place_order(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, status_reply(401))
    with pytest.raises(AuthenticationRequired):
        adapter.place_order(buy_nvda())
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 2
    assert not adapter.status().connected


# --- 429 / 5xx on reads -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 500, 502, 503])
def test_read_retries_with_bounded_backoff_then_succeeds(schwab_env: SchwabEnv, code: int) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, status_reply(code), status_reply(code),
                       json_reply(load("account_positions.json")))
    assert adapter.balances().cash == Decimal("24876.43")
    assert schwab_env.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("code", [429, 503])
def test_read_gives_up_after_max_retries(schwab_env: SchwabEnv, code: int) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, status_reply(code))
    with pytest.raises(TemporaryBrokerError) as info:
        adapter.balances()
    assert len(schwab_env.fake.calls("GET", ACCOUNT_PATH)) == 4  # 1 + 3 retries
    assert schwab_env.sleeps == [0.5, 1.0, 2.0]
    assert info.value.retry_after is not None


def test_retry_after_header_is_honoured_but_capped(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, status_reply(429, {"Retry-After": "3"}),
                       status_reply(429, {"Retry-After": "600"}), json_reply(load("account_positions.json")))
    adapter.balances()
    assert schwab_env.sleeps == [3.0, 8.0]


def test_read_network_errors_are_retried(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, httpx2.ReadTimeout("read timed out"),
                       httpx2.ConnectError("connection refused"), json_reply(load("account_positions.json")))
    adapter.balances()
    assert len(schwab_env.sleeps) == 2


# --- place_order faults -----------------------------------------------------------------------


def test_place_order_5xx_is_not_retried(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, status_reply(502))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(buy_nvda())
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 1 and schwab_env.sleeps == []


def test_place_order_429_is_temporary_and_not_retried_internally(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, status_reply(429), created(5))
    with pytest.raises(TemporaryBrokerError):
        adapter.place_order(buy_nvda())
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 1
    assert adapter.place_order(buy_nvda()).broker_order_id == "5"  # the caller may retry: nothing was placed


def test_connect_error_before_sending_is_temporary(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, httpx2.ConnectError("connection refused"), created(6))
    with pytest.raises(TemporaryBrokerError, match="not sent"):
        adapter.place_order(buy_nvda())
    assert adapter.place_order(buy_nvda()).broker_order_id == "6"


@pytest.mark.parametrize("error", [
    httpx2.ReadTimeout("timed out"), httpx2.RemoteProtocolError("Server disconnected without sending a response"),
    httpx2.WriteTimeout("write timed out"),
])
def test_timeout_after_sending_is_unknown_and_never_resent(schwab_env: SchwabEnv, error: Exception) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, error, created(7))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(buy_nvda())
    # The OMS (or a retry loop, or a restarted process) trying the same intent again must not POST.
    with pytest.raises(OrderOutcomeUnknown, match="not resending"):
        adapter.place_order(buy_nvda())
    with pytest.raises(OrderOutcomeUnknown):
        schwab_env.adapter().place_order(buy_nvda())
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 1
    assert schwab_env.sleeps == []


def test_unknown_order_is_found_by_querying_schwab(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, httpx2.ReadTimeout("timed out"))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(buy_nvda())

    # Schwab did place it: it shows up in the account's order list with the same shape.
    placed = dict(load("order_partial.json"), orderId=1004123456800)
    someone_elses = dict(load("order_partial.json"), orderId=1004123456801, quantity=3.0)
    schwab_env.fake.on("GET", ORDERS_PATH, json_reply([someone_elses, placed]))
    schwab_env.clock.advance(timedelta(seconds=30))
    restarted = schwab_env.adapter()  # reconciliation after a restart
    found = restarted.get_order(COID, None)
    assert found is not None
    assert found.broker_order_id == "1004123456800" and found.state is OrderState.PARTIALLY_FILLED
    [query] = schwab_env.fake.calls("GET", ORDERS_PATH)
    assert set(query.params) == {"fromEnteredTime", "toEnteredTime"}
    # Now mapped: later lookups go straight to the order.
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/1004123456800", json_reply(dict(placed, status="FILLED", filledQuantity=10.0)))
    assert restarted.get_order(COID, None).state is OrderState.FILLED  # type: ignore[union-attr]


def test_unknown_order_that_never_arrived_resolves_to_none(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, httpx2.ReadTimeout("timed out"))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(buy_nvda())
    schwab_env.fake.on("GET", ORDERS_PATH, json_reply([]))
    assert adapter.get_order(COID, None) is None


def test_latency_is_recorded_per_endpoint(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", ORDERS_PATH, created(9))
    adapter.place_order(buy_nvda())
    endpoints = [e for e, _ in schwab_env.latencies]
    assert "get_account_numbers" in endpoints and "place_order" in endpoints
    assert all(seconds >= 0 for _, seconds in schwab_env.latencies)


def test_broken_latency_hook_never_breaks_trading(schwab_env: SchwabEnv) -> None:
    def boom(endpoint: str, seconds: float) -> None:
        raise RuntimeError("metrics down")

    schwab_env.seed_token()
    adapter = schwab_env.adapter(on_latency=boom)
    assert adapter.connect().connected


def _connected_with_short_lived_token(env: SchwabEnv) -> SchwabAdapter:
    """Connected adapter whose access token is inside authlib's 300 s leeway, so the next request
    must refresh first (Schwab access tokens live 30 minutes)."""
    env.fake.on("POST", "/v1/oauth/token", json_reply(dict(load("token_response.json"), expires_in=60)))
    adapter = env.logged_in(access_expires_in=-10)  # connect itself refreshes (SDK, automatic)
    assert len(env.fake.token_calls("refresh_token")) == 1
    env.fake.requests.clear()
    return adapter


def test_expired_access_token_is_refreshed_before_the_order_post(schwab_env: SchwabEnv) -> None:
    adapter = _connected_with_short_lived_token(schwab_env)
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(load("token_refreshed.json")))
    schwab_env.fake.on("POST", ORDERS_PATH, created(11))
    adapter.place_order(buy_nvda())
    # The position read (which picks the instruction) refreshes first; the POST then needs none.
    assert [(r.method, r.path) for r in schwab_env.fake.requests] == [
        ("POST", "/v1/oauth/token"), ("GET", ACCOUNT_PATH), ("POST", ORDERS_PATH)]
    [post] = schwab_env.fake.calls("POST", ORDERS_PATH)
    assert post.headers["authorization"].endswith(load("token_refreshed.json")["access_token"])


def test_refresh_failing_before_the_order_post_means_nothing_was_sent(schwab_env: SchwabEnv) -> None:
    adapter = _connected_with_short_lived_token(schwab_env)
    # The position read's refresh yields another short-lived token, so the pre-POST refresh is
    # due again, and that one cannot reach Schwab.
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(dict(load("token_response.json"), expires_in=60)),
                       httpx2.ConnectError("connection refused"), json_reply(load("token_refreshed.json")))
    schwab_env.fake.on("POST", ORDERS_PATH, created(12))
    with pytest.raises(TemporaryBrokerError):
        adapter.place_order(buy_nvda())
    assert schwab_env.fake.calls("POST", ORDERS_PATH) == []
    assert adapter.place_order(buy_nvda()).broker_order_id == "12"


def test_paper_mode_never_sends_real_orders(schwab_env: SchwabEnv) -> None:
    from brokers.errors import OrderRejected
    from config.settings import TradingMode

    schwab_env.settings = schwab_env.settings.with_overrides(trading_mode=TradingMode.PAPER)
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected, match="paper"):
        adapter.place_order(buy_nvda())
    assert schwab_env.fake.calls("POST", ORDERS_PATH) == []
    assert adapter.status().mode == "paper" and adapter.status().connected  # still serves quotes/chains
