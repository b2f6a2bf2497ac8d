"""The conformance kit for sources: ``TestX = source_conformance_tests(XSource)``.

A source declares ``conformance_harness()`` returning a :class:`SourceHarness`: its
vendor's fake, configs, and how to create and change records there (and, for two-way
sync, how Tessera's own destination writes to it). The checks:

- the config schema describes every field; a bad config fails ``check()``;
- a first pull brings every record once, each an ``identify`` with a ``messageId`` and
  an id (``userId`` or ``anonymousId``), even past the vendor's paging cap;
- a pull from the last cursor brings nothing new; a change made after it comes;
- what Tessera itself wrote is not brought back (no two-way sync loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.sdk.conformance import outcomes

__all__ = ["SOURCE_CHECKS", "SourceHarness", "run_source_checks", "source_conformance_tests"]

SEEDED = 100


@dataclass
class SourceHarness:
    fake: Callable[[], Any]
    config: Callable[[Any], dict[str, Any]]
    bad_config: Callable[[Any], dict[str, Any]]
    seed: Callable[[Any, int], Any]  # create n records at the vendor
    change: Callable[[Any, int], Any]  # change record n
    echo: Callable[[Any, list[str]], Any] | None = None  # Tessera writes these emails


def _source(cls, harness, fake, **overrides):
    return cls(**cls.config_schema().load(dict(harness.config(fake), **overrides)))


def _pull(source, cursor=None) -> tuple[list[dict], str | None]:
    calls = []
    for page in source.pull(cursor):
        calls.extend(page.calls)
        cursor = page.cursor
    return calls, cursor


def check_config_schema_describes_every_field(cls, harness, fake) -> None:
    fields_ = cls.config_schema().fields
    undocumented = [n for n, f in fields_.items() if not f.metadata.get("description")]
    assert not undocumented, f"config fields without a description: {undocumented}"


def check_a_bad_config_fails_check(cls, harness, fake) -> None:
    with contextlib.closing(_source(cls, harness, fake)) as good:
        good.check()
    with contextlib.closing(_source(cls, harness, fake, **harness.bad_config(fake))) as bad:
        try:
            bad.check()
        except Exception:
            return
    raise AssertionError("check() accepted a config the vendor refuses")


def check_a_first_pull_brings_every_record_once(cls, harness, fake) -> None:
    harness.seed(fake, SEEDED)
    with contextlib.closing(_source(cls, harness, fake)) as source:
        calls, _ = _pull(source)
    ids = {c["messageId"] for c in calls}
    assert len(ids) == SEEDED, f"{len(ids)} distinct records of {SEEDED}"
    assert all(c["type"] == "identify" and (c.get("userId") or c.get("anonymousId"))
               for c in calls), "every call is an identify with a userId or anonymousId"


def check_a_pull_from_the_cursor_brings_only_what_changed(cls, harness, fake) -> None:
    harness.seed(fake, 10)
    with contextlib.closing(_source(cls, harness, fake)) as source:
        first, cursor = _pull(source)
        again, cursor = _pull(source, cursor)
        assert not {c["messageId"] for c in again} - {c["messageId"] for c in first}, \
            "a pull from the cursor brought records that did not change"
        harness.change(fake, 3)
        changed, _ = _pull(source, cursor)
    new = {c["messageId"] for c in changed} - {c["messageId"] for c in first}
    assert len(new) == 1, f"expected the one changed record, got {len(new)}"


class SkipCheck(Exception):
    """The check does not apply to this source."""


def check_our_own_writes_do_not_come_back(cls, harness, fake) -> None:
    if harness.echo is None:
        raise SkipCheck("the source's vendor is not also a destination")
    harness.seed(fake, 3)
    with contextlib.closing(_source(cls, harness, fake)) as source:
        _, cursor = _pull(source)
        harness.echo(fake, ["c1@example.com", "new@example.com"])
        echoed, _ = _pull(source, cursor)
    emails = [c["traits"].get("email") for c in echoed]
    assert "new@example.com" not in emails and "c1@example.com" not in emails, \
        f"Tessera's own writes came back: {emails}"


SOURCE_CHECKS = [check_config_schema_describes_every_field, check_a_bad_config_fails_check,
                 check_a_first_pull_brings_every_record_once,
                 check_a_pull_from_the_cursor_brings_only_what_changed,
                 check_our_own_writes_do_not_come_back]


def run_source_check(cls: type, check) -> None:
    harness = cls.conformance_harness()
    with harness.fake() as fake:
        check(cls, harness, fake)


def run_source_checks(cls: type) -> list[tuple[str, str, str]]:
    """Every check: ``[(name, "pass"|"fail"|"skip", detail)]``."""
    return outcomes(SOURCE_CHECKS, lambda check: run_source_check(cls, check), SkipCheck)


def source_conformance_tests(cls: type) -> type:
    def make(check):
        def test(self) -> None:
            import pytest

            try:
                run_source_check(cls, check)
            except SkipCheck as skipped:
                pytest.skip(str(skipped))

        test.__name__ = "test_" + check.__name__.removeprefix("check_")
        return test

    return type(f"SourceConformance[{cls.__name__}]", (),
                {"test_" + c.__name__.removeprefix("check_"): make(c) for c in SOURCE_CHECKS})
