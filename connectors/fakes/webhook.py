"""A webhook receiver that verifies Standard Webhooks v1.0.0 signatures.

``POST /hooks/<destination>``: needs ``webhook-id``, ``webhook-timestamp`` (±5 min) and a
``webhook-signature`` with a matching ``v1,`` entry, else 401 and nothing recorded. Items
are applied once per ``(operation, idempotency_key)``: add/upsert put the profile in,
remove/delete take it out, a tracked event is kept under its messageId; a repeated key
is reported in ``duplicate_keys``.
"""

from __future__ import annotations

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor
from connectors.webhook import verify_standard_signature

_OUT = {"remove_from_audience", "delete_subject"}


class FakeStandardWebhookReceiver(FakeVendor):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.seen: set[tuple[str, str]] = set()
        self.present: dict[str, set[str]] = {}  # destination -> profile ids
        self.events: list[str] = []  # messageIds of the tracked events kept, in order
        self.sizes: list[int] = []

    def is_data_request(self, request: FakeRequest) -> bool:
        return request.path.startswith("/hooks/")

    def route(self, request: FakeRequest) -> FakeResponse:
        if request.method != "POST" or not self.is_data_request(request):
            return FakeResponse(404, {"error": "no such route"})
        if not verify_standard_signature(self.secret, request.headers, request.body):
            return FakeResponse(401, {"error": "bad or missing webhook signature"})
        payload = request.json()
        destination = request.path[len("/hooks/"):]
        operation = payload.get("operation", "add_to_audience")
        duplicates = []
        with self.lock:
            if payload["items"]:
                self.sizes.append(len(payload["items"]))
            present = self.present.setdefault(destination, set())
            for item in payload["items"]:
                key = (operation, item["idempotency_key"])
                if key in self.seen:
                    duplicates.append(item["idempotency_key"])
                    continue
                self.seen.add(key)
                if operation == "track_events":
                    if (item.get("event") or {}).get("messageId"):
                        self.events.append(item["event"]["messageId"])
                    continue
                (present.discard if operation in _OUT else present.add)(item["profile_id"])
        return FakeResponse(200, {"received": len(payload["items"]) - len(duplicates),
                                  "duplicate_keys": duplicates})

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return [p for present in self.present.values() for p in present]

    def event_ids(self) -> list[str]:
        with self.lock:
            return list(self.events)
