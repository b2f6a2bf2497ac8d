"""The conformance kit: the checks every destination connector must pass.

In a connector package's tests, one line::

    from connectors.sdk.conformance import conformance_tests
    TestAcme = conformance_tests("acme")      # the entry-point name, or the class

or from the shell: ``tessera connector test acme``.

A connector opts in by declaring ``conformance_harness()``: a classmethod returning a
:class:`Harness` — a loopback fake of its vendor (``connectors.sdk.fakes.FakeVendor``)
and a config pointing at it. The checks then drive the connector through the platform's
own delivery path (batches, retries, Retry-After) against that fake, and judge by what
the fake received and holds:

- the config schema describes every field, marks secrets, and a config missing a
  required field is refused naming the field (and never echoing a secret);
- ``check()`` passes with a good config and fails with a bad one;
- batches never exceed ``batch_size``, and a full batch is accepted by the vendor;
- 429 with ``Retry-After`` and 5xx are retried (waiting at least ``Retry-After``);
  another 4xx is never retried;
- delivering the same items twice changes nothing at the vendor;
- remove and delete work when declared;
- merges leave one record and splits one per part, when ``merge_profiles`` is declared;
- identifiers are normalised and hashed as the worked examples say (when it hashes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.base import DeliveryError, DeliveryItem, load_connector
from connectors.sdk.delivery import Batch, DeliveryReport, deliver_batches
from connectors.sdk.destination import Capability
from connectors.sdk.hashing import WORKED_EXAMPLES
from connectors.sdk.registry import connector_class

__all__ = ["CHECKS", "Harness", "conformance_tests", "run_checks"]

RETRY_AFTER_SECONDS = 7.0
ATTEMPTS = 4


def sample_traits(n: int) -> dict[str, Any]:
    return {"email": f"person{n}@example.com", "phone": f"+1650555{n % 10000:04d}",
            "first_name": "Pat", "last_name": f"Tester{n}", "country": "US",
            "postal_code": "94045"}


@dataclass
class Harness:
    """How to test one connector: its fake vendor and configs that point at it."""

    fake: Callable[[], Any]  # a FakeVendor (or a context manager with the same methods)
    config: Callable[[Any], dict[str, Any]]  # a working config for this fake
    bad_config: Callable[[Any], dict[str, Any]]  # valid by the schema, refused by check()
    traits: Callable[[int], dict[str, Any]] = sample_traits
    retry_after: bool = True  # the vendor's throttling answer can carry Retry-After
    faults: bool = True  # the fake can be told to fail (HTTP-like status codes)
    extra: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):
    """This check does not apply to the connector (with the reason)."""


@dataclass
class Kit:
    """One connector under test, against one running fake."""

    cls: type
    harness: Harness
    fake: Any
    waits: list[float] = field(default_factory=list)

    def connector(self, **overrides: Any):
        config = dict(self.harness.config(self.fake), **overrides)
        return load_connector(self.cls.name, config) if _registered(self.cls) else \
            self.cls(**self.cls.config_schema().load(config))

    def items(self, count: int, action: str = "entered", start: int = 0,
              traits: dict | None = None) -> list[DeliveryItem]:
        return [DeliveryItem(idempotency_key=f"conformance:{n}:{action}", profile_id=f"p-{n}",
                             action=action, segment="conformance",
                             traits=traits or self.harness.traits(n), identifiers={},
                             occurred_at="2026-01-01T00:00:00Z", decision_id=f"d-{n}")
                for n in range(start, start + count)]

    def events(self, count: int) -> list[DeliveryItem]:
        """Tracked events as activation sends them (see docs/connectors.md, track_events)."""
        items = []
        for n in range(count):
            message_id = f"conformance-event-{n}"
            event = {"messageId": message_id, "type": "track", "event": "Order Completed",
                     "properties": {"order_id": f"o-{n}", "revenue": 10.0 + n},
                     "traits": {}, "context": {}, "timestamp": "2026-01-01T00:00:00.000Z",
                     "receivedAt": "2026-01-01T00:00:00.100Z"}
            items.append(DeliveryItem(
                idempotency_key=f"conformance:event:{message_id}", profile_id=f"p-{n}",
                action="event", segment=None, traits=self.harness.traits(n),
                identifiers={}, occurred_at=event["timestamp"], decision_id=f"d-{n}",
                event=event))
        return items

    def deliver(self, connector, operation: Capability, items: list[DeliveryItem],
                batch_size: int | None = None) -> DeliveryReport:
        size = batch_size or connector.batch_size
        batches = [Batch(operation, tuple(items[i:i + size]))
                   for i in range(0, len(items), size)]
        return deliver_batches(connector, "conformance", batches, attempts=ATTEMPTS,
                               sleep=self.waits.append)


def _registered(cls: type) -> bool:
    try:
        return connector_class(cls.name) is cls
    except ValueError:
        return False


def _first_operation(cls: type) -> Capability:
    for operation in (Capability.ADD_TO_AUDIENCE, Capability.UPSERT_PROFILE,
                      Capability.SEND_MESSAGE):
        if operation in cls.capabilities:
            return operation
    raise Skip("declares no add, upsert or send capability")


def _delivered_all(report: DeliveryReport, items: list[DeliveryItem]) -> None:
    failures = [repr(error) for _, error in report.failed]
    assert not failures, f"delivery failed: {failures}"
    assert sorted(report.delivered) == sorted(i.idempotency_key for i in items), \
        "not every item was reported delivered"


# ---- the checks ------------------------------------------------------------------------
def check_config_schema_describes_every_field(kit: Kit) -> None:
    fields_ = kit.cls.config_schema().fields
    undocumented = [name for name, f in fields_.items() if not f.metadata.get("description")]
    assert not undocumented, f"config fields without a description: {undocumented}"
    secret_like = [name for name in fields_ if any(
        word in name for word in ("secret", "token", "password", "key"))
        and not name.endswith(("_url", "_id", "_field", "_property"))
        and not fields_[name].metadata.get("secret")]
    assert not secret_like, f"fields that look secret but are not marked secret: {secret_like}"
    kit.connector().close()


def check_a_config_missing_a_required_field_is_refused_by_name(kit: Kit) -> None:
    config = kit.harness.config(kit.fake)
    required = [n for n, f in kit.cls.config_schema().fields.items() if f.required]
    if not required:
        raise Skip("no required config field")
    secrets = [str(config[n]) for n, f in kit.cls.config_schema().fields.items()
               if f.metadata.get("secret") and config.get(n)]
    for name in required:
        broken = {k: v for k, v in config.items() if k != name}
        try:
            kit.cls.config_schema().load(broken)
            load_connector(kit.cls.name, broken) if _registered(kit.cls) else None
        except Exception as error:  # ValidationError or ValueError, both name the field
            message = str(getattr(error, "messages", error))
            assert name in message, f"refusal of a config without {name!r} does not name it"
            assert not any(s in message for s in secrets), "a secret appears in the error"
        else:
            raise AssertionError(f"a config without the required {name!r} was accepted")


def check_a_good_config_passes_check_and_a_bad_one_fails(kit: Kit) -> None:
    with contextlib.closing(kit.connector()) as good:
        good.check()
    bad = kit.harness.bad_config(kit.fake)
    with contextlib.closing(kit.connector(**bad)) as connector:
        try:
            connector.check()
        except DeliveryError as error:
            assert not error.retryable, "a refused config must not look retryable"
        else:
            raise AssertionError("check() accepted a config the vendor refuses")


def check_batches_respect_the_batch_size(kit: Kit) -> None:
    operation = _first_operation(kit.cls)
    with contextlib.closing(kit.connector(batch_size=3)) as connector:
        items = kit.items(7)
        _delivered_all(kit.deliver(connector, operation, items), items)
    assert kit.fake.batch_sizes() == [3, 3, 1], \
        f"expected requests of 3, 3, 1 items, the vendor saw {kit.fake.batch_sizes()}"


def check_a_full_batch_is_accepted_by_the_vendor(kit: Kit) -> None:
    operation = _first_operation(kit.cls)
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(connector.batch_size)
        _delivered_all(kit.deliver(connector, operation, items), items)
    assert kit.fake.batch_sizes() == [kit.cls.batch_size]


def check_429_is_retried_after_retry_after(kit: Kit) -> None:
    if not kit.harness.faults or not kit.harness.retry_after:
        raise Skip("the vendor's throttling carries no Retry-After")
    operation = _first_operation(kit.cls)
    kit.fake.fail_next(1, status=429, retry_after=RETRY_AFTER_SECONDS)
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(2)
        _delivered_all(kit.deliver(connector, operation, items), items)
    assert len(kit.fake.data_requests()) == 2, "a 429 was not retried exactly once"
    assert kit.waits and kit.waits[0] >= RETRY_AFTER_SECONDS, \
        f"waited {kit.waits[:1]} s after a 429 asking for {RETRY_AFTER_SECONDS} s"


def check_5xx_is_retried(kit: Kit) -> None:
    if not kit.harness.faults:
        raise Skip("the fake cannot fail on demand")
    operation = _first_operation(kit.cls)
    kit.fake.fail_next(2, status=503)
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(2)
        _delivered_all(kit.deliver(connector, operation, items), items)
    assert len(kit.fake.data_requests()) == 3, "two 503s then success should be 3 requests"


def check_another_4xx_is_never_retried(kit: Kit) -> None:
    if not kit.harness.faults:
        raise Skip("the fake cannot fail on demand")
    operation = _first_operation(kit.cls)
    kit.fake.fail_next(1, status=400)
    with contextlib.closing(kit.connector()) as connector:
        report = kit.deliver(connector, operation, kit.items(2))
    assert len(kit.fake.data_requests()) == 1, \
        f"a 400 was sent {len(kit.fake.data_requests())} times; it must not be retried"
    assert report.failed and not report.failed[0][1].retryable, \
        "a 400 must fail the batch as permanent"


def check_delivering_twice_changes_nothing(kit: Kit) -> None:
    operation = _first_operation(kit.cls)
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(3)
        _delivered_all(kit.deliver(connector, operation, items), items)
        once = sorted(kit.fake.subjects())
        kit.deliver(connector, operation, items)
    assert once, "the vendor holds nobody after a delivery"
    assert sorted(kit.fake.subjects()) == once, "a repeated delivery was applied twice"


def check_remove_takes_people_out_when_declared(kit: Kit) -> None:
    if Capability.REMOVE_FROM_AUDIENCE not in kit.cls.capabilities:
        raise Skip("does not declare remove_from_audience")
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(3)
        _delivered_all(kit.deliver(connector, Capability.ADD_TO_AUDIENCE, items), items)
        before = len(kit.fake.subjects())
        exits = kit.items(2, action="exited")
        _delivered_all(kit.deliver(connector, Capability.REMOVE_FROM_AUDIENCE, exits), exits)
    assert len(kit.fake.subjects()) == before - 2, "removal left people in the audience"


def check_delete_erases_the_subject_when_declared(kit: Kit) -> None:
    if Capability.DELETE_SUBJECT not in kit.cls.capabilities:
        raise Skip("does not declare delete_subject")
    operation = _first_operation(kit.cls)
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(2)
        _delivered_all(kit.deliver(connector, operation, items), items)
        before = len(kit.fake.subjects())
        erased = kit.items(1, action="erased")
        _delivered_all(kit.deliver(connector, Capability.DELETE_SUBJECT, erased), erased)
    assert len(kit.fake.subjects()) == before - 1, "the deleted subject is still there"


def check_merges_and_splits_are_followed_when_declared(kit: Kit) -> None:
    """Two profiles merged leave one record at the vendor, and a merge sent again changes
    nothing; split again, each part has its own record."""
    if Capability.MERGE_PROFILES not in kit.cls.capabilities:
        raise Skip("does not declare merge_profiles")
    operation = _first_operation(kit.cls)
    survivor, absorbed = kit.items(2)
    merged_traits = dict(absorbed.traits, **survivor.traits)
    merge = DeliveryItem(
        idempotency_key="conformance:merge", profile_id=survivor.profile_id, action="merged",
        segment=None, traits=merged_traits, identifiers={}, occurred_at=survivor.occurred_at,
        decision_id="d-merge", merged_profiles=(
            {"profile_id": survivor.profile_id, "traits": survivor.traits},
            {"profile_id": absorbed.profile_id, "traits": absorbed.traits}))
    splits = [DeliveryItem(idempotency_key=f"conformance:split:{i.profile_id}",
                           profile_id=i.profile_id, action="split", segment=None,
                           traits=i.traits, identifiers={}, occurred_at=i.occurred_at,
                           decision_id="d-split", split_from=survivor.profile_id)
              for i in (survivor, absorbed)]
    stranger, other = kit.items(2, start=10)
    unknown_split = [DeliveryItem(idempotency_key=f"conformance:split:{i.profile_id}",
                                  profile_id=i.profile_id, action="split", segment=None,
                                  traits=i.traits, identifiers={}, occurred_at=i.occurred_at,
                                  decision_id="d-split", split_from=stranger.profile_id)
                     for i in (stranger, other)]
    with contextlib.closing(kit.connector()) as connector:
        _delivered_all(kit.deliver(connector, operation, [survivor, absorbed]),
                       [survivor, absorbed])
        before = len(kit.fake.subjects())
        _delivered_all(kit.deliver(connector, Capability.MERGE_PROFILES, [merge]), [merge])
        after_merge = len(kit.fake.subjects())
        _delivered_all(kit.deliver(connector, Capability.MERGE_PROFILES, [merge]), [merge])
        assert len(kit.fake.subjects()) == after_merge, "a repeated merge changed the vendor"
        _delivered_all(kit.deliver(connector, Capability.MERGE_PROFILES, splits), splits)
        after_split = len(kit.fake.subjects())
        kit.deliver(connector, Capability.MERGE_PROFILES, unknown_split)
    assert after_merge == before - 1, \
        f"a merge of two records left {after_merge - before + 2} at the vendor"
    assert after_split == before, "after the split, a part has no record"
    assert len(kit.fake.subjects()) == before, \
        "a split of someone the vendor never held created records there"


def check_events_arrive_once_per_message_id_when_declared(kit: Kit) -> None:
    """Tracked events reach the vendor, each under its messageId, and sending them again
    (a retry, a replay) keeps each once. The fake answers ``event_ids()``."""
    if Capability.TRACK_EVENTS not in kit.cls.capabilities:
        raise Skip("does not declare track_events")
    assert hasattr(kit.fake, "event_ids"), \
        "a fake for a connector that takes events must answer event_ids()"
    events = kit.events(3)
    with contextlib.closing(kit.connector()) as connector:
        _delivered_all(kit.deliver(connector, Capability.TRACK_EVENTS, events), events)
        kit.deliver(connector, Capability.TRACK_EVENTS, events)
    sent = sorted(i.event["messageId"] for i in events)
    kept = sorted(kit.fake.event_ids())
    assert set(kept) == set(sent), f"the vendor kept events {kept}, expected {sent}"
    assert kept == sent, f"an event sent twice was kept twice: {kept}"


def check_identifiers_are_hashed_as_the_worked_examples(kit: Kit) -> None:
    network = kit.cls.hashing
    if network is None:
        raise Skip("sends no hashed identifiers")
    operation = _first_operation(kit.cls)
    traits = dict(WORKED_EXAMPLES["traits"], country="US", postal_code="94045")
    with contextlib.closing(kit.connector()) as connector:
        items = kit.items(1, traits=traits)
        _delivered_all(kit.deliver(connector, operation, items), items)
    expected = {"email_sha256": WORKED_EXAMPLES["email_sha256"],
                "phone_sha256": WORKED_EXAMPLES["phone_sha256"][network],
                "first_name_sha256": WORKED_EXAMPLES["first_name_sha256"],
                "last_name_sha256": WORKED_EXAMPLES["last_name_sha256"]}
    received: dict[str, set[str]] = {}
    for identifiers in kit.fake.received_identifiers():
        for name, value in identifiers.items():
            received.setdefault(name, set()).add(value)
    for name, value in expected.items():
        if name in received:
            assert value in received[name], \
                f"{name}: expected {value}, the vendor received {sorted(received[name])}"
    assert "email_sha256" in received, "no hashed email reached the vendor"


CHECKS: list[Callable[[Kit], None]] = [
    check_config_schema_describes_every_field,
    check_a_config_missing_a_required_field_is_refused_by_name,
    check_a_good_config_passes_check_and_a_bad_one_fails,
    check_batches_respect_the_batch_size,
    check_a_full_batch_is_accepted_by_the_vendor,
    check_429_is_retried_after_retry_after,
    check_5xx_is_retried,
    check_another_4xx_is_never_retried,
    check_delivering_twice_changes_nothing,
    check_remove_takes_people_out_when_declared,
    check_delete_erases_the_subject_when_declared,
    check_merges_and_splits_are_followed_when_declared,
    check_events_arrive_once_per_message_id_when_declared,
    check_identifiers_are_hashed_as_the_worked_examples,
]


# ---- running ---------------------------------------------------------------------------
def _resolve(connector: str | type) -> type:
    cls = connector_class(connector) if isinstance(connector, str) else connector
    if not hasattr(cls, "conformance_harness"):
        raise ValueError(f"connector {cls.name!r} declares no conformance_harness()")
    return cls


@contextlib.contextmanager
def _kit(cls: type) -> Iterator[Kit]:
    harness = cls.conformance_harness()
    fake = harness.fake()
    with fake:
        yield Kit(cls, harness, fake)


def run_check(connector: str | type, check: Callable[[Kit], None]) -> None:
    """Run one check against a fresh fake; raises AssertionError or Skip."""
    cls = _resolve(connector)
    with _kit(cls) as kit:
        check(kit)


def outcomes(checks: list[Callable], run_one: Callable[[Callable], None],
             skip: type[Exception]) -> list[tuple[str, str, str]]:
    """Every check run: ``[(name, "pass"|"fail"|"skip", detail)]`` (destinations and
    sources alike)."""
    results = []
    for check in checks:
        name = check.__name__.removeprefix("check_")
        try:
            run_one(check)
        except skip as skipped:
            results.append((name, "skip", str(skipped)))
        except AssertionError as failed:
            results.append((name, "fail", str(failed)))
        except Exception as error:
            results.append((name, "fail", f"{type(error).__name__}: {error}"))
        else:
            results.append((name, "pass", ""))
    return results


def run_checks(connector: str | type) -> list[tuple[str, str, str]]:
    """Every check: ``[(name, "pass"|"fail"|"skip", detail)]``."""
    return outcomes(CHECKS, lambda check: run_check(connector, check), Skip)


def conformance_tests(connector: str | type) -> type:
    """A pytest test class with one test per check: ``TestX = conformance_tests("x")``."""

    def make(check: Callable[[Kit], None]):
        def test(self) -> None:
            import pytest

            try:
                run_check(connector, check)
            except Skip as skipped:
                pytest.skip(str(skipped))

        test.__name__ = "test_" + check.__name__.removeprefix("check_")
        test.__doc__ = check.__doc__
        return test

    label = connector if isinstance(connector, str) else connector.__name__
    namespace = {"test_" + c.__name__.removeprefix("check_"): make(c) for c in CHECKS}
    return type(f"Conformance[{label}]", (), namespace)
