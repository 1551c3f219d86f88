"""Which adapter trades for each broker name, and the OAuth entry points behind the API.

TRADING_MODE=paper routes every order to the paper account of that broker name, even when the real
broker is connected; a connected real broker may still supply quotes and option chains.
TRADING_MODE=live routes orders to the real adapters.

Real adapters exist only when their credentials are configured (SCHWAB_API_KEY + SCHWAB_APP_SECRET,
TASTYTRADE_CLIENT_ID + TASTYTRADE_CLIENT_SECRET); asking for an unconfigured one raises
`BrokerNotConfigured`, which the API turns into a clear 503.
"""
from __future__ import annotations

import logging
from datetime import date
from typing import Any, Callable

from brokers.base import BrokerAdapter
from brokers.errors import BrokerError
from config.settings import Settings
from domain.orders import BROKERS, BrokerName, OptionContract

log = logging.getLogger(__name__)


class BrokerNotConfigured(RuntimeError):
    """The real adapter for this broker has no credentials configured."""


class BrokerRegistry:
    def __init__(
        self,
        settings: Settings,
        *,
        live: dict[BrokerName, BrokerAdapter],
        paper: dict[BrokerName, BrokerAdapter],
        on_connection_change: Callable[[BrokerName, dict[str, Any]], None] | None = None,
    ) -> None:
        self._settings = settings
        self.live = live
        self.paper = paper
        self.on_connection_change = on_connection_change

    def trading_adapters(self) -> dict[BrokerName, BrokerAdapter]:
        """The adapters orders go to: paper accounts in paper mode, real brokers in live mode."""
        return dict(self.live) if self._settings.is_live else dict(self.paper)

    def _live(self, broker: str) -> Any:
        name = BrokerName(broker)
        if name not in BROKERS:
            raise BrokerNotConfigured(f"unknown broker {broker!r}")
        adapter = self.live.get(name)
        if adapter is None:
            needed = ("SCHWAB_API_KEY and SCHWAB_APP_SECRET" if name == "schwab"
                      else "TASTYTRADE_CLIENT_ID and TASTYTRADE_CLIENT_SECRET")
            raise BrokerNotConfigured(f"{name} is not configured: set {needed} in .env")
        return adapter

    # --- OAuth (the API's broker endpoints) --------------------------------------------------
    def authorize_url(self, broker: str) -> str:
        return str(self._live(broker).authorize_url())

    def complete_login(self, broker: str, text: str) -> dict[str, Any]:
        status = self._live(broker).complete_login(text).to_json()
        self._changed(BrokerName(broker), status)
        return status

    def login_with_refresh_token(self, broker: str, refresh_token: str) -> dict[str, Any]:
        """A personal application's login (Tastytrade's "Create Grant" refresh token)."""
        status = self._live(broker).login_with_refresh_token(refresh_token).to_json()
        self._changed(BrokerName(broker), status)
        return status

    def refresh(self, broker: str) -> dict[str, Any]:
        status = self._live(broker).refresh().to_json()
        self._changed(BrokerName(broker), status)
        return status

    def connection(self, broker: str) -> dict[str, Any]:
        try:
            status = self._live(broker).status().to_json()
        except BrokerNotConfigured as exc:
            return {"connected": False, "message": str(exc)}
        return {"connected": bool(status["connected"]), "message": status["message"] or
                ("connected" if status["connected"] else "not connected"), "status": status}

    def statuses(self) -> list[dict[str, Any]]:
        out = []
        for name in BROKERS:
            entry: dict[str, Any] = {"broker": name, "mode": self._settings.trading_mode.value,
                                     "orders_go_to": "live" if self._settings.is_live else "paper"}
            adapter = self.live.get(name)
            if adapter is None:
                entry["live"] = {"configured": False, "connected": False}
            else:
                try:
                    entry["live"] = {"configured": True, **adapter.status().to_json()}
                except BrokerError as exc:
                    entry["live"] = {"configured": True, "connected": False, "message": exc.message}
            paper = self.paper.get(name)
            if paper is not None:
                entry["paper"] = paper.status().to_json()
            out.append(entry)
        return out

    def _changed(self, broker: BrokerName, status: dict[str, Any]) -> None:
        if self.on_connection_change:
            self.on_connection_change(broker, status)

    # --- data sources ------------------------------------------------------------------------
    def option_chain(self, broker: BrokerName, underlying: str, expiration: date) -> list[OptionContract]:
        """The chain used to pick 0DTE contracts: the broker's own when it is connected, else the
        paper broker's synthetic chain (paper mode only; live mode needs the real chain)."""
        adapter = self.live.get(broker)
        if adapter is not None:
            try:
                if adapter.status().connected:
                    return adapter.option_chain(underlying, expiration)
            except BrokerError as exc:
                log.warning("%s option chain unavailable (%s)", broker, exc.message)
        if self._settings.is_live:
            raise BrokerNotConfigured(f"{broker} is not connected: no option chain in live mode")
        return self.paper[broker].option_chain(underlying, expiration)

    def close(self) -> None:
        for adapter in [*self.live.values(), *self.paper.values()]:
            try:
                adapter.close()
            except Exception:  # closing is best effort at shutdown
                log.exception("closing %s failed", adapter.name)
