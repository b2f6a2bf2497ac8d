"""The sales and service context a CRM source sends: deals and tickets as track events.

The contract (docs/contacts.md), sent by a CRM source through the tracking API:

    track "Deal Updated"   {deal_id, amount, stage, closed, won, account_id?, name?}
    track "Ticket Updated" {ticket_id, status, created_at, closed?, account_id?, subject?}

Each event carries the deal's or ticket's whole current state, so the latest one is the
truth. From them a contact gets traits that segments can use: open_deal_value,
latest_deal_stage, open_deals, open_tickets, last_ticket_at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEAL_UPDATED = "Deal Updated"
TICKET_UPDATED = "Ticket Updated"
CLOSED_TICKET_STATUSES = frozenset({"closed", "resolved", "solved"})


def deal_of(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The deal a `Deal Updated` event describes, or None if it names no deal."""
    if event.get("type") != "track" or event.get("event") != DEAL_UPDATED:
        return None
    properties = event.get("properties") or {}
    if not properties.get("deal_id"):
        return None
    return {
        "deal_id": str(properties["deal_id"]),
        "name": properties.get("name"),
        "amount": _number(properties.get("amount")),
        "stage": properties.get("stage"),
        "closed": bool(properties.get("closed", False)),
        "won": bool(properties.get("won", False)),
        "account_id": _text(properties.get("account_id")),
        "at": event.get("timestamp"),
    }


def ticket_of(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ticket a `Ticket Updated` event describes, or None if it names no ticket."""
    if event.get("type") != "track" or event.get("event") != TICKET_UPDATED:
        return None
    properties = event.get("properties") or {}
    if not properties.get("ticket_id"):
        return None
    status = str(properties.get("status") or "open").lower()
    return {
        "ticket_id": str(properties["ticket_id"]),
        "subject": properties.get("subject"),
        "status": status,
        "closed": bool(properties.get("closed", status in CLOSED_TICKET_STATUSES)),
        "created_at": properties.get("created_at") or event.get("timestamp"),
        "account_id": _text(properties.get("account_id")),
        "at": event.get("timestamp"),
    }


def sales_traits(deals: Mapping[str, Mapping[str, Any]],
                 tickets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Traits segments can use; absent when the contact has no deal or no ticket."""
    traits: dict[str, Any] = {}
    if deals:
        open_deals = [deal for deal in deals.values() if not deal["closed"]]
        traits["open_deal_value"] = sum(deal["amount"] or 0 for deal in open_deals)
        traits["open_deals"] = len(open_deals)
        latest = max(deals.values(), key=lambda deal: deal.get("at") or "")
        traits["latest_deal_stage"] = latest["stage"]
    if tickets:
        traits["open_tickets"] = sum(1 for ticket in tickets.values() if not ticket["closed"])
        traits["last_ticket_at"] = max(ticket.get("created_at") or "" for ticket in
                                       tickets.values()) or None
    return traits


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
