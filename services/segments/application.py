"""Segments' application: keep every profile's memberships exact as changes and time pass."""

from __future__ import annotations

import contextlib
import heapq
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from services.segments.domain import (
    CATALOG_ID,
    MembershipBatch,
    ProfileActivity,
    SegmentCatalog,
)
from services.segments.rules import Rule, State, compile_rule, describe, parse_time
from shared.store import ServiceApplication


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class SegmentsApplication(ServiceApplication):
    service_name = "segments"
    name = "segments"

    def __init__(self, *args, clock=time.time, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self._compiled: dict[str, tuple[int, Rule, dict]] = {}
        # (when, profile_id): the next moment a window may change a profile's answer.
        self._expiries: list[tuple[float, str]] = []
        self._recheck_members_after_restart()

    def _recheck_members_after_restart(self) -> None:
        """The expiry schedule lives in memory: rebuild it by re-checking today's members."""
        members: set[str] = set()
        for change in self.scan(ProfileActivity.Entered, ProfileActivity.Exited):
            key = f"{change.originator_id}"
            if isinstance(change, ProfileActivity.Entered):
                members.add(key)
        for profile_id in members:
            heapq.heappush(self._expiries, (0.0, profile_id))

    # ---- definitions ------------------------------------------------------------------
    def _catalog(self) -> SegmentCatalog:
        return self.find(CATALOG_ID) or SegmentCatalog()

    def define_segment(self, name: str, rule: dict, description: str = "") -> dict:
        catalog = self._catalog()
        catalog.define(name, rule, description, _iso(self.clock()))
        self.save_and_wake(catalog)
        return catalog.segments[name]

    def remove_segment(self, name: str) -> bool:
        catalog = self._catalog()
        if name not in catalog.segments:
            return False
        catalog.remove(name)
        self.save_and_wake(catalog)
        return True

    def segments(self) -> dict[str, dict]:
        return dict(self._catalog().segments)

    def refresh_catalog(self) -> None:
        """Other replicas may have changed definitions: drop the cached catalog."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(CATALOG_ID, evict=True)

    def _rules(self) -> dict[str, tuple[Rule, dict]]:
        current = self._catalog().segments
        rules = {}
        for name, definition in current.items():
            cached = self._compiled.get(name)
            if cached is None or cached[0] != definition["version"]:
                cached = (definition["version"], compile_rule(definition["rule"]), definition)
                self._compiled[name] = cached
            rules[name] = (cached[1], definition)
        return rules

    # ---- changes ----------------------------------------------------------------------
    def apply_batch(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        now = self.clock()
        rules = self._rules()
        watched = set().union(*(rule.events for rule, _ in rules.values()))
        touched: dict[str, ProfileActivity] = {}
        changes: list[dict[str, Any]] = []
        for item in fresh:
            activity = self._activity(touched, item["profile_id"])
            changed_traits = {k: v for k, v in item["traits"].items()
                              if activity.traits.get(k) != v}
            # Behaviour no segment looks at is not kept (it is most of the traffic). A segment
            # defined later on a new event needs a backfill from contacts' timeline, which
            # the segments issue adds; until then it counts from its definition on.
            occurrences = [o for o in self._occurrences(item.get("event")) if o[0] in watched]
            merged = self._fold_merges(touched, activity, item.get("merged_from", ()), now)
            if changed_traits or occurrences:
                activity.observe(changed_traits, occurrences, now)
            affected = [
                name for name, (rule, _) in rules.items()
                if merged or rule.traits & changed_traits.keys()
                or rule.events & {o[0] for o in occurrences}
            ] + [name for name in activity.memberships if name not in rules]  # removed
            origin = {"cause": item["cause"], "received_at": item.get("received_at")}
            changes += self._evaluate(activity, rules, affected, now, item["traits"], origin)
            for absorbed in merged:
                changes += self._evaluate(absorbed, rules, list(absorbed.memberships), now,
                                          item["traits"], origin, gone=True)
        aggregates = list(touched.values())
        if changes:
            aggregates.append(MembershipBatch(items=changes))
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(fresh)

    def _activity(self, touched: dict[str, ProfileActivity], profile_id: str) -> ProfileActivity:
        if profile_id in touched:
            return touched[profile_id]
        activity = (self.find(uuid.UUID(profile_id))
                    or ProfileActivity(profile_id=profile_id))
        touched[profile_id] = activity
        if activity.merged_into is not None:
            return self._activity(touched, activity.merged_into)
        return activity

    def _fold_merges(self, touched, survivor: ProfileActivity, absorbed_ids, now) -> list:
        merged = []
        for absorbed_id in absorbed_ids:
            # Unseen yet: its own events may still be in flight on another partition.
            absorbed = (touched.get(absorbed_id) or self.find(uuid.UUID(absorbed_id))
                        or ProfileActivity(profile_id=absorbed_id))
            touched[absorbed_id] = absorbed
            if absorbed.merged_into is not None or absorbed is survivor:
                continue
            survivor.absorb(absorbed_id, absorbed.events, now)
            absorbed.merge_into(survivor.profile_id)
            merged.append(absorbed)
        return merged

    @staticmethod
    def _occurrences(summary: dict | None) -> list[list[Any]]:
        if not summary or summary.get("type") != "track" or not summary.get("event"):
            return []
        at = parse_time(summary.get("timestamp"))
        return [] if at is None else [[summary["event"], at, summary.get("properties") or {}]]

    def _evaluate(self, activity: ProfileActivity, rules, names, now, traits, origin,
                  gone: bool = False) -> list[dict[str, Any]]:
        state = State(traits=activity.traits, events=activity.events, now=now)
        changes = []
        next_expiry = None
        for name in names:
            rule, definition = rules.get(name, (None, None))
            inside = False if (gone or rule is None) else rule.test(state)
            was_inside = name in activity.memberships
            if rule is not None and not gone:
                expiry = rule.next_expiry(state)
                if expiry is not None:
                    next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
            if inside == was_inside:
                continue
            reason = ("profile merged into another" if gone else
                      describe(definition["rule"]) if definition else "segment removed")
            at = _iso(now)
            if inside:
                activity.enter(name, at, reason)
            else:
                activity.exit(name, at, reason)
            changes.append({
                "profile_id": activity.profile_id, "segment": name,
                "change": "entered" if inside else "exited", "at": at, "reason": reason,
                "traits": dict(traits), **origin,
            })
        if next_expiry is not None:
            heapq.heappush(self._expiries, (next_expiry, activity.profile_id))
        return changes

    # ---- time -------------------------------------------------------------------------
    def expire_due(self, partition_of) -> int:
        """Re-evaluate profiles whose window moved; returns the membership changes made."""
        now = self.clock()
        due: set[str] = set()
        while self._expiries and self._expiries[0][0] <= now:
            due.add(heapq.heappop(self._expiries)[1])
        if not due:
            return 0
        rules = self._rules()
        touched: dict[str, ProfileActivity] = {}
        changes = []
        for profile_id in due:
            activity = self._activity(touched, profile_id)
            changes += self._evaluate(activity, rules, [n for n, (r, _) in rules.items()
                                                        if r.events], now,
                                      activity.traits,
                                      {"cause": {"partition": partition_of(profile_id),
                                                 "position": 0}, "received_at": None})
        if changes:
            self.save_and_wake(*touched.values(), MembershipBatch(items=changes))
        return len(changes)

    # ---- queries ----------------------------------------------------------------------
    def segment_sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys(self._catalog().segments, 0)
        for change in self.scan(ProfileActivity.Entered, ProfileActivity.Exited):
            step = 1 if isinstance(change, ProfileActivity.Entered) else -1
            sizes[change.segment] = sizes.get(change.segment, 0) + step
        return sizes

    def memberships(self, profile_id: str) -> dict[str, Any]:
        try:
            activity = self.repository.get(uuid.UUID(profile_id))
        except (AggregateNotFoundError, ValueError):
            return {"profile_id": profile_id, "segments": {}, "history": []}
        history = [
            {"segment": e.segment, "change": type(e).__name__.lower(), "at": e.at,
             "reason": e.reason}
            for e in self.events.get(activity.id)
            if isinstance(e, ProfileActivity.Entered | ProfileActivity.Exited)
        ]
        return {"profile_id": profile_id, "segments": dict(activity.memberships),
                "history": history}
