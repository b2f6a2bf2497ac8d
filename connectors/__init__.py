"""Connectors: the SDK (``connectors.sdk``; its wire types in ``connectors.base``), the
built-in destinations (webhook, google_customer_match, meta_custom_audiences, hubspot,
salesforce, warehouse, email), sources (``connectors.sources``) and the loopback fakes
of their vendors (``connectors.fakes``). See docs/connectors.md."""

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
