"""Positions, balances, quotes and the SPXW chain mapped from realistic Schwab JSON."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from brokers.errors import BrokerError
from domain.orders import BrokerPosition, OptionRight
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    ACCOUNT_HASH,
    FakeClock,
    SchwabEnv,
    json_reply,
    load,
    schwab_env,
)

ACCOUNT_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}"


def test_positions_signed_equities_and_occ_options(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, json_reply(load("account_positions.json")))
    positions = adapter.positions()
    [call] = schwab_env.fake.calls("GET", ACCOUNT_PATH)
    assert call.params == {"fields": ["positions"]}
    assert positions == [
        BrokerPosition("NVDA", 10, Decimal("182.1")),
        BrokerPosition("TSLA", -5, Decimal("351.42")),  # short: longQuantity - shortQuantity
        BrokerPosition("SPXW  251219C06000000", 2, Decimal("12.35"), Decimal(100)),
    ]  # the money-market sweep is not a traded position


def test_balances_margin_account(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", ACCOUNT_PATH, json_reply(load("account_positions.json")))
    balances = adapter.balances()
    [call] = schwab_env.fake.calls("GET", ACCOUNT_PATH)
    assert call.params == {}
    assert (balances.cash, balances.equity, balances.buying_power) == (
        Decimal("24876.43"), Decimal("29339.86"), Decimal("47632.2"))


def test_balances_cash_account_falls_back_to_cash_available(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    raw = load("account_positions.json")
    raw["securitiesAccount"]["type"] = "CASH"
    raw["securitiesAccount"]["currentBalances"] = {
        "cashBalance": 5000.0, "liquidationValue": 7000.5, "cashAvailableForTrading": 4800.25,
    }
    schwab_env.fake.on("GET", ACCOUNT_PATH, json_reply(raw))
    assert adapter.balances().buying_power == Decimal("4800.25")


def test_spx_quote_uses_dollar_symbol(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/quotes", json_reply(load("quote_spx.json")))
    quote = adapter.quote("spx")
    [call] = schwab_env.fake.calls("GET", "/marketdata/v1/quotes")
    assert call.params["symbols"] == ["$SPX"]
    assert quote.symbol == "SPX" and quote.last == Decimal("6857.12")
    assert quote.bid is None and quote.ask is None  # an index has no bid/ask
    assert quote.ts == datetime.fromtimestamp(1764948600.123, tz=timezone.utc)


def test_equity_quote(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/quotes", json_reply(load("quote_nvda.json")))
    quote = adapter.quote("NVDA")
    assert (quote.bid, quote.ask, quote.last) == (Decimal("183.34"), Decimal("183.36"), Decimal("183.35"))


def test_futures_quote_uses_schwab_front_month_code(schwab_env: SchwabEnv) -> None:
    schwab_env.clock = FakeClock(datetime(2025, 11, 3, 15, 0, tzinfo=timezone.utc))
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/quotes", json_reply(
        {"/MESZ25": {"symbol": "/MESZ25", "quote": {"bidPrice": 6850.25, "askPrice": 6850.5, "lastPrice": 6850.5}}}))
    quote = adapter.quote("/MES")
    assert schwab_env.fake.calls("GET", "/marketdata/v1/quotes")[0].params["symbols"] == ["/MESZ25"]
    assert quote.symbol == "/MES" and quote.bid == Decimal("6850.25")


def test_missing_quote_is_an_error(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/quotes", json_reply({"errors": {"invalidSymbols": ["$SPX"]}}))
    with pytest.raises(BrokerError, match="no quote"):
        adapter.quote("SPX")


def test_spx_chain_returns_spxw_contracts_for_the_date(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/chains", json_reply(load("chain_spx.json")))
    chain = adapter.option_chain("SPX", date(2025, 12, 19))
    [call] = schwab_env.fake.calls("GET", "/marketdata/v1/chains")
    assert call.params == {"symbol": ["$SPX"], "fromDate": ["2025-12-19"], "toDate": ["2025-12-19"]}
    assert [(c.strike, c.right, c.bid, c.ask) for c in chain] == [
        (Decimal("6850.0"), OptionRight.CALL, Decimal("41.2"), Decimal("41.9")),
        (Decimal("6850.0"), OptionRight.PUT, Decimal("34.0"), Decimal("34.7")),
        (Decimal("6855.0"), OptionRight.CALL, Decimal("38.1"), Decimal("38.8")),
        (Decimal("6855.0"), OptionRight.PUT, None, Decimal("36.2")),  # bid 0.0 = no bid
    ]
    assert all(c.root == "SPXW" and c.underlying == "SPX" and c.expiration == date(2025, 12, 19) for c in chain)
    assert chain[0].occ_symbol == "SPXW  251219C06850000" and chain[0].broker_symbol is None


def test_failed_chain_is_an_error(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("GET", "/marketdata/v1/chains", json_reply({"symbol": "$SPX", "status": "FAILED"}))
    with pytest.raises(BrokerError, match="FAILED"):
        adapter.option_chain("SPX", date(2025, 12, 19))
