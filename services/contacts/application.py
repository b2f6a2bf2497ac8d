"""Contacts' application: fold resolved events into profiles."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from services.contacts.domain import TIMELINE_TYPES, ChangeBatch, Profile, summarise
from shared.store import ServiceApplication


class _Unit:
    def __init__(self, app: ContactsApplication):
        self.app = app
        self.profiles: dict[str, Profile] = {}

    def find(self, profile_id: str) -> Profile | None:
        if profile_id in self.profiles:
            return self.profiles[profile_id]
        profile = self.app.find(uuid.UUID(profile_id))
        if profile is not None:
            self.profiles[profile_id] = profile
        return profile

    def get_or_create(self, profile_id: str) -> Profile:
        profile = self.find(profile_id)
        if profile is None:
            profile = Profile(profile_id=profile_id)
            self.profiles[profile_id] = profile
        return profile

    def current(self, profile_id: str) -> Profile:
        """Follow merges: an event of an absorbed profile lands on its survivor."""
        profile = self.get_or_create(profile_id)
        while profile.merged_into is not None:
            profile = self.get_or_create(profile.merged_into)
        return profile


class ContactsApplication(ServiceApplication):
    service_name = "contacts"
    name = "contacts"

    def __init__(self, settings, env: dict[str, str] | None = None):
        # A merge across partitions has two partitions' workers write the same profiles
        # (the survivor's marks the absorbed one merged; the absorbed one's in-flight
        # events land on the survivor). Each worker must change a copy of its own, so that
        # the loser of such a race fails on the version check and retries on fresh state,
        # instead of both mutating one shared cached object (which stored version gaps).
        super().__init__(settings, {"DEEPCOPY_FROM_AGGREGATE_CACHE": "y"} | (env or {}))

    def apply_batch(self, tracking_key: str, partition: str, items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        unit = _Unit(self)
        pending_timeline: dict[str, list[dict[str, Any]]] = {}
        changes = []
        for item in fresh:
            survivor = unit.current(item["profile_id"])
            for absorbed_id in item.get("merged_from", ()):
                self._fold(unit, absorbed_id, survivor, pending_timeline)
            change = self._apply(survivor, item["event"], pending_timeline)
            changes.append({
                "profile_id": survivor.profile_id,
                "traits": dict(survivor.traits),
                "event": change,
                "merged_from": list(item.get("merged_from", ())),
                "cause": {"partition": partition, "position": item["position"]},
                "received_at": item["event"].get("receivedAt"),
            })
        for profile_id, entries in pending_timeline.items():
            unit.profiles[profile_id].record_events(entries)
        self.save_processed(
            *unit.profiles.values(), ChangeBatch(items=changes),
            tracking_key=tracking_key, position=fresh[-1]["position"],
        )
        return len(fresh)

    @staticmethod
    def _apply(profile: Profile, event: dict[str, Any], timeline: dict[str, list]) -> dict | None:
        kind = event.get("type")
        traits = event.get("traits") if kind == "identify" else None
        traits = traits or (event.get("context") or {}).get("traits")
        if isinstance(traits, dict) and traits:
            changed = profile.changed_traits(traits)
            if changed:
                profile.update_traits(changed)
        if kind == "group" and event.get("groupId"):
            profile.join_group(str(event["groupId"]), event.get("traits") or {})
        if kind in TIMELINE_TYPES:
            entry = summarise(event)
            timeline.setdefault(profile.profile_id, []).append(entry)
            return entry
        return None

    @staticmethod
    def _fold(unit: _Unit, absorbed_id: str, survivor: Profile, timeline: dict) -> None:
        # Created if unseen: its own events may still be in flight on another partition.
        absorbed = unit.get_or_create(absorbed_id)
        if absorbed.merged_into is not None or absorbed is survivor:
            return
        # Entries of this very batch not yet recorded on the absorbed profile move over.
        timeline.setdefault(survivor.profile_id, []).extend(timeline.pop(absorbed_id, []))
        survivor.absorb(absorbed_id, dict(absorbed.traits), absorbed.events_total)
        absorbed.merge_into(survivor.profile_id)

    def apply_splits(self, tracking_key: str, partition: str, items: list[dict[str, Any]]
                     ) -> int:
        """Follow identity's splits: a part that was a profile merged in earlier gets its
        own profile (and timeline) back; a new part starts as a profile of its own. Each
        profile involved is announced as changed, so that segments look at it again."""
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        unit = _Unit(self)
        changes = []
        for item in fresh:
            split = unit.get_or_create(item["profile_id"])
            for part in item["parts"]:
                separated = unit.get_or_create(part["profile_id"])
                split.release(part["profile_id"])
                if separated.merged_into is not None:
                    separated.restore(item["profile_id"])
            for profile_id in (item["profile_id"], *(p["profile_id"] for p in item["parts"])):
                changes.append({
                    "profile_id": profile_id, "traits": dict(unit.profiles[profile_id].traits),
                    "event": None, "merged_from": [], "split_from": item["profile_id"],
                    # Position 0: a split changes no consent link, nothing to wait for.
                    "cause": {"partition": partition, "position": 0}, "received_at": None})
        self.save_processed(*unit.profiles.values(), ChangeBatch(items=changes),
                            tracking_key=tracking_key, position=fresh[-1]["position"])
        return len(fresh)

    # ---- queries ----------------------------------------------------------------------
    def timeline(self, profile_id: str, limit: int = 100) -> list[dict[str, Any]] | None:
        """The profile's events, newest first, including those of profiles merged into it."""
        current = self.profile(profile_id)
        if current is None:
            return None
        entries: list[dict[str, Any]] = []
        for stream_id in (current["profile_id"], *current["absorbed"]):
            for stored in self.events.get(uuid.UUID(stream_id)):
                if isinstance(stored, Profile.EventsRecorded):
                    entries.extend(stored.entries)
        entries.sort(key=lambda entry: entry.get("timestamp") or "", reverse=True)
        return entries[:limit]

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        try:
            found = self.repository.get(uuid.UUID(profile_id))
        except (AggregateNotFoundError, ValueError):
            return None
        while found.merged_into is not None:
            found = self.repository.get(uuid.UUID(found.merged_into))
        return found.view()
