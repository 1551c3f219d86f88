"""Fixtures for the market data tests: a manual (push) feed and a service factory that always
stops its threads."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from config.settings import Settings
from market_data.feeds import Feed
from market_data.service import MarketDataService
from store.redis_store import Store
from tests.market_data.helpers import ManualFeed


@pytest.fixture
def manual_feed() -> ManualFeed:
    return ManualFeed()


ServiceFactory = Callable[..., MarketDataService]


@pytest.fixture
def make_service(settings: Settings) -> Iterator[ServiceFactory]:
    services: list[MarketDataService] = []

    def factory(store: Store, feed: Feed | None = None, **kwargs: object) -> MarketDataService:
        svc = MarketDataService(kwargs.pop("settings", settings), store, feed, **kwargs)  # type: ignore[arg-type]
        services.append(svc)
        return svc

    yield factory
    for svc in services:
        svc.stop()


