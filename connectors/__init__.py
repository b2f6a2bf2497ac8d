"""Destination connectors: the SDK (``connectors.base``), retries and the connectors."""

from connectors.base import (
    Connector,
    DeliveryError,
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    load_connector,
    register_connector,
)

__all__ = [
    "Connector",
    "DeliveryError",
    "DeliveryItem",
    "PermanentDeliveryError",
    "SendResult",
    "TransientDeliveryError",
    "load_connector",
    "register_connector",
]
