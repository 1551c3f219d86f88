"""A broker's own verdict on an order it was asked to check without placing it, and the pure
translation of each broker's answer into it.

- Schwab: POST /trader/v1/accounts/{hash}/previewOrder (schwab-py `Client.preview_order`). Its
  answer is Schwab's `PreviewOrder` schema: `orderStrategy` (the order as Schwab would hold it, with
  a `status`) and `orderValidationResult` with lists of findings (`rejects`, `alerts`, `reviews`,
  `warns`, `accepts`), each an `OrderValidationDetail` (`validationRuleName`, `message`,
  `activityMessage`, ...). A preview Schwab would refuse still answers 200: the verdict is in the
  rejects (and a REJECTED status), not in the HTTP status.
- Tastytrade: POST /accounts/{n}/orders/dry-run (the SDK's `Account.place_order(dry_run=True)`):
  a refused order answers 4xx (the adapter turns that into a refusal); an accepted one carries the
  buying-power effect, the fees and optional `warnings` / `errors` messages.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tastytrade.order import PlacedOrderResponse


@dataclass(frozen=True, slots=True)
class OrderPreview:
    """`accepted`: the broker would take the order as sent. `detail`: its reasons when it would
    not, else a short summary of what it reported. Nothing was placed either way."""

    accepted: bool
    detail: str
    warnings: tuple[str, ...] = ()


def _finding(detail: Any) -> str:
    if not isinstance(detail, Mapping):
        return str(detail)
    text = detail.get("message") or detail.get("activityMessage") or detail.get("validationRuleName")
    return " ".join(str(text or "unnamed finding").split())


def schwab_preview(payload: Any) -> OrderPreview:
    """Schwab's previewOrder answer -> verdict."""
    if not isinstance(payload, Mapping):
        return OrderPreview(False, "Schwab answered the preview without a verdict")
    result = payload.get("orderValidationResult") or {}
    rejects = [_finding(d) for d in result.get("rejects") or []]
    warnings = tuple(_finding(d) for key in ("alerts", "reviews", "warns") for d in result.get(key) or [])
    strategy = payload.get("orderStrategy") or {}
    status = strategy.get("status")
    if rejects or status == "REJECTED":
        return OrderPreview(False, "; ".join(rejects) or "Schwab's preview rejects it (status REJECTED)", warnings)
    commission = (strategy.get("orderBalance") or {}).get("projectedCommission")
    summary = "accepted by Schwab's preview (nothing placed)"
    if isinstance(commission, (int, float)) and not isinstance(commission, bool):
        summary += f", projected commission {commission:.2f}"
    return OrderPreview(True, summary, warnings)


def tastytrade_preview(response: PlacedOrderResponse[Any]) -> OrderPreview:
    """Tastytrade's 2xx dry-run answer -> verdict (errors in the body refuse it too)."""
    warnings = tuple(f"{m.code}: {m.message}" for m in response.warnings or [])
    errors = [f"{m.code}: {m.message}" for m in response.errors or []]
    if errors:
        return OrderPreview(False, "; ".join(errors), warnings)
    summary = "validated by Tastytrade's dry run (not routed)"
    summary += f", buying power change {response.buying_power_effect.change_in_buying_power}"
    if response.fee_calculation is not None:
        summary += f", fees {abs(response.fee_calculation.total_fees)}"  # the SDK signs a debit negative
    return OrderPreview(True, summary, warnings)
