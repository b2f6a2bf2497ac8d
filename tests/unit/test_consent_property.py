"""No request leaves for a destination unless the latest consent at that moment allowed it.

Hypothesis drives the real applications of every service, in one process (the relays feed
the next service as the broker would; tests/unit/consent_platform.py), through random
interleavings of consent grants and changes (API, tracked events, two sources),
withdrawals, objections, restrictions, erasures, deterministic merges (one email on two
anonymous ids), links taken back (identity splits the profile) and segment entries and
exits. After
each step every request the loopback webhook receiver got is checked against a model of
the consent history, over the identifiers the profile had when the request left:

- an add or a segment exit went only if, for every purpose of its destination, some
  linked record answered and none said no, and no linked identifier was restricted;
- a removal sent because consent went away went only to a destination that held the
  person (it had received their add, and no remove since).

An erasure takes the person's answers out of the model: whatever was said before, nothing
may leave for them afterwards (their records are shredded, their identifiers suppressed).
Time budget: 30 examples of 8 to 18 steps, no per-example deadline (about 30 s here).
Checked to fail when deny-wins, the restriction check or the holdings check is removed.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from consent_platform import ConsentPlatform
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.identity.application import IdentityError

# A small world, so that people meet often: three devices, two emails, three purposes.
ANONYMOUS = ["a0", "a1", "a2"]
EMAILS = ["e0@example.com", "e1@example.com"]
restricting = st.sampled_from([True, True, False])
PURPOSES = ["advertising", "email_marketing", "analytics"]
DESTINATIONS = {"ads": (("pro",), ("advertising",)),
                "mailer": (("pro",), ("email_marketing", "advertising"))}

anonymous = st.sampled_from(ANONYMOUS)
someone = st.one_of(st.tuples(st.just("anonymous_id"), anonymous),
                    st.tuples(st.just("email"), st.sampled_from(EMAILS)))
granting = st.sampled_from([True, True, True, False])  # grants more often: data flows
answers = st.dictionaries(st.sampled_from(PURPOSES), granting, min_size=1)
STEPS = {
    "enter": st.tuples(st.just("enter"), anonymous),
    "leave": st.tuples(st.just("leave"), anonymous),
    "link": st.tuples(st.just("link"), anonymous, st.sampled_from(EMAILS)),
    "unlink": st.tuples(st.just("unlink"), anonymous),
    "consent": st.tuples(st.just("consent"), someone, answers,
                         st.sampled_from(["cmp", "crm"])),
    "event_consent": st.tuples(st.just("event_consent"), anonymous, answers),
    "object": st.tuples(st.just("object"), someone,
                        st.one_of(st.none(), st.sampled_from(PURPOSES).map(lambda p: [p]))),
    "restrict": st.tuples(st.just("restrict"), st.one_of(
        st.tuples(st.just("anonymous_id"), anonymous), someone), restricting),
    "erase": st.tuples(st.just("erase"), someone),
}
# Denials that last (objections, restrictions) come less often, or little would flow.
WEIGHTS = {"enter": 3, "leave": 1, "link": 2, "unlink": 2, "consent": 4, "event_consent": 2,
           "object": 1, "restrict": 2, "erase": 1}
steps = st.sampled_from([k for k, n in WEIGHTS.items() for _ in range(n)]).flatmap(
    STEPS.__getitem__)


class ConsentHistory:
    """What was said, by whom, about what: the model the deliveries are checked against."""

    def __init__(self, direct_marketing: list[str]):
        self.answers: dict[tuple[tuple[str, str], str, str], bool] = {}
        self.restricted: set[tuple[str, str]] = set()
        self.links: dict[str, set[str]] = {}  # anonymous id -> emails it was seen with
        self.direct_marketing = direct_marketing

    def say(self, who: tuple[str, str], purpose: str, granted: bool, source: str) -> None:
        self.answers[(who, purpose, source)] = granted

    def forget(self, identifiers: set[tuple[str, str]]) -> None:
        """An erasure: everything the person said is gone with them."""
        self.answers = {key: granted for key, granted in self.answers.items()
                        if key[0] not in identifiers}

    def allows(self, identifiers: set[tuple[str, str]], purposes: tuple[str, ...]) -> bool:
        if identifiers & self.restricted:
            return False
        for purpose in purposes:
            said = [granted for (who, p, _), granted in self.answers.items()
                    if p == purpose and who in identifiers]
            if not said or not all(said):
                return False
        return True


def apply(platform: ConsentPlatform, history: ConsentHistory, step: tuple) -> None:
    consent = platform.apps["consent"]
    kind = step[0]
    if kind in ("enter", "leave"):
        platform.send({"type": "identify", "anonymousId": step[1],
                       "traits": {"plan": "pro" if kind == "enter" else "free"}})
    elif kind == "link":
        platform.send({"type": "identify", "anonymousId": step[1],
                       "traits": {"email": step[2]}})
        history.links.setdefault(step[1], set()).add(step[2])
    elif kind == "unlink":  # an admin takes a link back: identity splits the profile
        anonymous_id = step[1]
        profile_id = platform.profile_of("anonymous_id", anonymous_id)
        for email in sorted(history.links.get(anonymous_id, ())):
            with contextlib.suppress(IdentityError):  # that link is gone already
                platform.apps["identity"].retract_edge(
                    profile_id, f"anonymous_id:{anonymous_id}", f"email:{email}", "test")
                history.links[anonymous_id].discard(email)
                event("a link was taken back")
                break
    elif kind == "consent":
        _, who, said, source = step
        consent.record_consent([who], said, source=source)
        for purpose, granted in said.items():
            history.say(who, purpose, granted, source)
    elif kind == "event_consent":
        _, anonymous_id, said = step
        # Recorded when consent reads the event: before anything it causes is decided.
        for purpose, granted in said.items():
            history.say(("anonymous_id", anonymous_id), purpose, granted, "event:web")
        platform.send({"type": "track", "anonymousId": anonymous_id, "event": "Page Viewed",
                       "context": {"consent": {"categoryPreferences": said}}})
    elif kind == "object":
        _, who, purposes = step
        consent.record_objection([list(who)], purposes, "dsr")
        for purpose in purposes or history.direct_marketing:
            history.say(who, purpose, False, "dsr")
    elif kind == "restrict":
        _, who, restricted = step
        consent.set_restriction([list(who)], restricted, "property test")
        (history.restricted.add if restricted else history.restricted.discard)(who)
    elif kind == "erase":
        person = platform.apps["identity"].subject_of(*step[1])
        erased = platform.erase(step[1])
        assert erased["status"] == "erased", erased
        history.forget({tuple(i) for i in person["identifiers"]} | {step[1]})
        event("a person was erased")
    platform.drain()


def check_new_requests(platform: ConsentPlatform, history: ConsentHistory, seen: int,
                       held: set[tuple[str, str, str]]) -> int:
    received = platform.received()
    for item in received[seen:]:
        key = (item["destination"], item["profile_id"], item["segment"])
        if item["action"] == "erased":  # a request to delete: owed whatever consent says
            continue
        if item["decision_id"] == "consent_removal":
            assert key in held, f"removal sent to an audience that never got them: {item}"
            held.discard(key)
            continue
        identifiers = {(kind, value) for kind, values in platform.apps["identity"]
                       .identifiers_of_profile(item["profile_id"]).items() for value in values}
        purposes = DESTINATIONS[item["destination"]][1]
        assert history.allows(identifiers, purposes), (
            f"{item['action']} left for {item['destination']} without consent to "
            f"{purposes} over {sorted(identifiers)}: {history.answers}, "
            f"restricted {history.restricted}")
        if item["action"] == "entered":
            held.add(key)
        else:
            held.discard(key)
    return len(received)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=8, max_size=18))
def test_no_request_leaves_unless_the_latest_consent_at_that_moment_allowed_it(plan):
    with tempfile.TemporaryDirectory() as data_dir:
        platform = ConsentPlatform(Path(data_dir), DESTINATIONS)
        try:
            platform.apps["segments"].define_segment(
                "pro", {"trait": "plan", "op": "eq", "value": "pro"})
            history = ConsentHistory(platform.apps["consent"].catalogue.direct_marketing())
            seen, held = 0, set()
            for step in plan:
                apply(platform, history, step)
                seen = check_new_requests(platform, history, seen, held)
            event(f"requests received: {min(seen, 5)}{'+' if seen >= 5 else ''}")
        finally:
            platform.close()
