"""The whole platform in one process, consent's `consent.changed` included: each service's
relay feeds the next service's application as the broker would, every item checked against
its contract, and a loopback webhook receiver recording what destinations received."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE

from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.activation.translation import translator as activation_translator
from services.consent.application import ConsentApplication
from services.consent.erasure import Erasure, ErasureLog
from services.consent.translation import translator as consent_translator
from services.contacts.application import ContactsApplication
from services.contacts.translation import translator as contacts_translator
from services.gateway.application import GatewayApplication
from services.gateway.translation import translator as gateway_translator
from services.identity.application import IdentityApplication
from services.identity.translation import translator as identity_translator
from services.segments.application import SegmentsApplication
from services.segments.translation import translator as segments_translator
from shared.config import Settings
from shared.contracts import CONSUMERS, SCHEMAS
from shared.envelope import Envelope
from shared.outbox import OutboxRelay
from tessera.testing.pipeline import stream_handlers
from tessera.testing.webhook_receiver import WebhookReceiver

PARTITIONS = 2
SECRET = "consent-platform"


class Broker:
    def __init__(self):
        self.envelopes: list[Envelope] = []

    def publish(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            schema = SCHEMAS[(envelope.type, envelope.version)](many=True, unknown=EXCLUDE)
            schema.load(envelope.items)  # raises if a producer broke its contract
        self.envelopes.extend(envelopes)


class ConsentPlatform:
    """`destinations`: name -> (segments, purposes)."""

    def __init__(self, data_dir, destinations: dict[str, tuple[tuple[str, ...],
                                                            tuple[str, ...]]], **settings):
        self.receiver = WebhookReceiver(SECRET)
        self.receiver.start()
        self.settings = Settings(data_dir=data_dir, partitions=PARTITIONS,
                                 write_keys={"wk": "web"}, **settings)
        configured = [Destination(name, "webhook", segments, purposes,
                                  {"url": self.receiver.url_for(name), "secret": SECRET})
                      for name, (segments, purposes) in destinations.items()]
        self.apps = {
            "gateway": GatewayApplication(self.settings),
            "identity": IdentityApplication(self.settings),
            "contacts": ContactsApplication(self.settings),
            "segments": SegmentsApplication(self.settings),
            "consent": ConsentApplication(self.settings),
            "activation": ActivationApplication(self.settings, destinations=configured,
                                                sleep=lambda seconds: None),
        }
        self.broker = Broker()
        translators = {"gateway": gateway_translator, "identity": identity_translator,
                       "contacts": contacts_translator, "segments": segments_translator,
                       "consent": consent_translator, "activation": activation_translator}
        self.relays = [OutboxRelay(self.apps[name], make(PARTITIONS), self.broker)
                       for name, make in translators.items()]
        apps = self.apps
        self.handlers = stream_handlers(apps)

    def drain(self, hold: frozenset[str] = frozenset()) -> list[Envelope]:
        """Relay and consume until nothing moves, as the broker and the lanes would;
        envelopes of the streams in `hold` are kept back and returned (still pending)."""
        held: list[Envelope] = []
        while True:
            moved = sum(relay.relay_once() for relay in self.relays)
            published = list(self.broker.envelopes)
            self.broker.envelopes.clear()
            for envelope in published:
                if envelope.type in hold:
                    held.append(envelope)
                    continue
                self.consume(envelope)
            if not moved and not published:
                return held

    def consume(self, envelope: Envelope) -> None:
        for consumer in CONSUMERS[envelope.type]:
            self.handlers[(consumer, envelope.type)](envelope)

    def send(self, *events: dict[str, Any]) -> None:
        self.apps["gateway"].ingest("web", {"batch": list(events)},
                                    received_at=datetime.now(UTC))
        self.drain()

    def erase(self, identifier: tuple[str, str]) -> dict[str, Any]:
        """Erase the person behind `identifier` everywhere, as consent's `erase` RPC does."""
        def call(service: str, method: str, **kwargs: Any) -> Any:
            return getattr(self.apps[service], method)(**kwargs)

        erasure = Erasure(ErasureLog(self.settings), call, sleep=lambda seconds: None)
        return erasure.erase(list(identifier), "property test")

    def profile_of(self, kind: str, value: str) -> str | None:
        return self.apps["identity"].profile_id_for(kind, value)

    def received(self, destination: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.receiver.items()
                if destination is None or i["destination"] == destination]

    def close(self) -> None:
        self.receiver.stop()
        for app in self.apps.values():
            app.close()
