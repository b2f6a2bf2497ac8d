"""What per-subject encryption costs (shared.privacy), in CPU time, back to back.

Two measurements, each run with the privacy rules off and on, alternately, so that the
load of a shared machine falls on both alike (CPU time of this process, not wall time):

1. **mapper**: encoding and decoding representative stored events (a gateway request of
   100 events, a contacts batch of 100 profile changes, one profile's timeline event);
2. **pipeline**: the six applications in one process, their outbox relays feeding each
   other without a broker (as tests/unit/test_pipeline_in_process.py), SQLite files:
   identifies and tracks of many people from the gateway to the segment changes. "Off"
   is main's behaviour before per-subject encryption; "on" is this code base (which also
   spares the outbox relay from decoding the events its own process just recorded).

Usage: python bench/privacy.py [--events 4000] [--people 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))

from services.activation.application import ActivationApplication
from services.activation.translation import translator as activation_translator
from services.consent.application import ConsentApplication
from services.contacts.application import ContactsApplication
from services.contacts.domain import ChangeBatch, Profile
from services.contacts.translation import translator as contacts_translator
from services.gateway.application import GatewayApplication, IngestRequest
from services.gateway.translation import translator as gateway_translator
from services.identity.application import IdentityApplication
from services.identity.translation import translator as identity_translator
from services.segments.application import SegmentsApplication
from services.segments.translation import translator as segments_translator
from shared.config import Settings
from shared.outbox import OutboxRelay
from shared.store import ServiceApplication

APPS = (GatewayApplication, IdentityApplication, ContactsApplication, SegmentsApplication,
        ConsentApplication, ActivationApplication)
RULES = {cls: cls.privacy_rules for cls in APPS}


@contextlib.contextmanager
def privacy(on: bool):
    """Off: main's behaviour before this work, no rules and a relay that decodes every
    notification it publishes. On: the rules, and a relay that reuses what its own
    process has just recorded (the cost of decrypting there is then not paid)."""
    remembered = ServiceApplication.recorded_event
    for cls in APPS:
        cls.privacy_rules = RULES[cls] if on else None
    if not on:
        ServiceApplication.recorded_event = _decode_always
    try:
        yield
    finally:
        for cls in APPS:
            cls.privacy_rules = RULES[cls]
        ServiceApplication.recorded_event = remembered


def _decode_always(app, notification):
    return app.mapper.to_domain_event(notification)


def an_event(i: int) -> dict:
    return {"type": "identify", "userId": f"user-{i}", "messageId": str(uuid.uuid4()),
            "timestamp": "2026-11-29T10:00:00.000Z",
            "traits": {"email": f"person{i}@example.com", "phone": "+33612345678",
                       "first_name": "Ann", "last_name": "Example", "plan": "pro",
                       "address": {"street": "1 rue X", "city": "Paris"}},
            "context": {"ip": "10.0.0.1", "library": {"name": "bench"}}}


def mapper_events() -> list:
    request = IngestRequest(source="web", accepted=[an_event(i) for i in range(100)],
                            rejected=[], received_at="2026-11-29T10:00:00Z")
    batch = ChangeBatch(items=[{"profile_id": str(uuid.uuid4()), "traits": an_event(i)["traits"],
                                "event": {"type": "identify"}, "merged_from": [],
                                "cause": {"partition": "0", "position": i}}
                               for i in range(100)])
    profile = Profile(str(uuid.uuid4()))
    profile.record_events([{"type": "track", "event": "Order Completed",
                            "timestamp": "2026-11-29T10:00:00Z", "messageId": "m",
                            "properties": {"total": 42}}])
    return [*request.collect_events(), *batch.collect_events(), *profile.collect_events()]


def measure_mapper(on: bool, repeat: int = 200) -> float:
    """CPU µs per item (an event of a request, a change of a batch, a timeline entry)."""
    with tempfile.TemporaryDirectory() as tmp, privacy(on):
        apps = [GatewayApplication(Settings(data_dir=Path(tmp))),
                ContactsApplication(Settings(data_dir=Path(tmp)))]
        events = mapper_events()
        mappers = [apps[0].mapper] + [apps[1].mapper] * 3  # request; batch; profile x2
        items = 100 + 100 + 2
        for mapper, event in zip(mappers, events, strict=True):  # keys created, warm
            mapper.to_domain_event(mapper.to_stored_event(event))
        start = time.process_time()
        for _ in range(repeat):
            for mapper, event in zip(mappers, events, strict=True):
                mapper.to_domain_event(mapper.to_stored_event(event))
        spent = time.process_time() - start
        for app in apps:
            app.close()
    return spent / (repeat * items) * 1e6


def measure_pipeline(on: bool, events: int, people: int) -> float:
    """CPU µs per tracked event, gateway to segments' changes, all six services."""
    from test_pipeline_in_process import Broker, drain

    with tempfile.TemporaryDirectory() as tmp, privacy(on):
        settings = Settings(data_dir=Path(tmp), partitions=2, write_keys={"wk": "web"})
        apps = {"gateway": GatewayApplication(settings),
                "identity": IdentityApplication(settings),
                "contacts": ContactsApplication(settings),
                "segments": SegmentsApplication(settings),
                "consent": ConsentApplication(settings),
                "activation": ActivationApplication(settings, destinations=[])}
        apps["segments"].define_segment("gold", {"trait": "plan", "op": "eq", "value": "gold"})
        translators = {"gateway": gateway_translator, "identity": identity_translator,
                       "contacts": contacts_translator, "segments": segments_translator,
                       "activation": activation_translator}
        broker = Broker()
        relays = [OutboxRelay(apps[name], make(2), broker) for name, make in translators.items()]
        now = datetime.now(UTC)
        start = time.process_time()
        for first in range(0, events, 100):
            batch = []
            for i in range(first, min(first + 100, events)):
                event = an_event(i % people)
                if i % 4:
                    event = {"type": "track", "userId": event["userId"], "event": "Viewed",
                             "properties": {"sku": i}}
                batch.append(event)
            apps["gateway"].ingest("web", {"batch": batch}, received_at=now)
            drain(apps, relays, broker)
        spent = time.process_time() - start
        for app in apps.values():
            app.close()
    return spent / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for on in (False, True):
            figures.setdefault(("mapper", on), []).append(measure_mapper(on))
            figures.setdefault(("pipeline", on), []).append(
                measure_pipeline(on, args.events, args.people))
    for what in ("mapper", "pipeline"):
        off = statistics.median(figures[(what, False)])
        on = statistics.median(figures[(what, True)])
        unit = "per item, encode+decode" if what == "mapper" else "per event, all six services"
        print(f"privacy: {what}: {off:.1f} µs -> {on:.1f} µs CPU {unit} "
              f"(+{on - off:.1f} µs, {100 * (on - off) / off:+.0f}%), "
              f"median of {args.rounds} alternating rounds")


if __name__ == "__main__":
    main()
