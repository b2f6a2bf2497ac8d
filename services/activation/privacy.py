"""Whose personal data activation's stored events hold (shared.privacy): each planned,
delivered, suppressed, skipped or dead-lettered item carries its profile's traits; what
a ledger needs to count and explain an outcome stays readable."""

from __future__ import annotations

from services.activation.domain import DeliveryPlan, DestinationLedger
from shared.privacy import PLAIN, Items

_KEEP = ("profile_id", "idempotency_key", "destination", "segment", "action", "change",
         "decision_id", "reason", "position")

RULES = {
    DeliveryPlan.Planned: Items(keep=_KEEP),
    DestinationLedger.Opened: PLAIN,
    DestinationLedger.Delivered: Items(keep=_KEEP),
    DestinationLedger.Suppressed: Items(keep=_KEEP),
    DestinationLedger.Skipped: Items(keep=_KEEP),
    DestinationLedger.DeadLettered: Items(keep=_KEEP),
    DestinationLedger.Replayed: PLAIN,
}
