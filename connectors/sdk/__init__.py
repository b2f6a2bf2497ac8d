"""The connector SDK: everything a connector package needs, from one import.

    from connectors.sdk import Capability, Destination, HttpDestination, ...

See docs/connectors.md for the walk-through.
"""

from connectors.base import (
    DeliveryError,
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    parse_retry_after,
)
from connectors.sdk.destination import (
    Capability,
    Destination,
    DestinationConfigSchema,
    HttpDestination,
    OutboundRequest,
    classify_status,
)
from connectors.sdk.registry import (
    ENTRY_POINT_GROUP,
    connector_class,
    known_connectors,
    register_connector,
)
from connectors.sdk.source import Page, Source

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capability",
    "DeliveryError",
    "DeliveryItem",
    "Destination",
    "DestinationConfigSchema",
    "HttpDestination",
    "OutboundRequest",
    "Page",
    "PermanentDeliveryError",
    "SendResult",
    "Source",
    "TransientDeliveryError",
    "classify_status",
    "connector_class",
    "known_connectors",
    "parse_retry_after",
    "register_connector",
]
