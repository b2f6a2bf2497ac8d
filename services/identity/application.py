"""Identity's application: resolve each event of a batch to a profile, merging when needed."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from services.identity.domain import (
    Identifier,
    IdentifierLink,
    IdentityProfile,
    ResolutionBatch,
    compatible,
    identifiers_of,
)
from shared.store import ServiceApplication


class _Unit:
    """The aggregates touched while resolving one batch, saved together at the end."""

    def __init__(self, app: IdentityApplication):
        self.app = app
        self.links: dict[uuid.UUID, IdentifierLink] = {}
        self.profiles: dict[str, IdentityProfile] = {}

    def link(self, identifier: Identifier) -> IdentifierLink | None:
        key = identifier.link_id
        if key in self.links:
            return self.links[key]
        found = self.app.find(key)
        if found is not None:
            self.links[key] = found
        return found

    def profile(self, profile_id: str) -> IdentityProfile:
        if profile_id not in self.profiles:
            self.profiles[profile_id] = self.app.repository.get(uuid.UUID(profile_id))
        return self.profiles[profile_id]

    def root(self, profile_id: str) -> IdentityProfile:
        profile = self.profile(profile_id)
        while profile.merged_into is not None:
            profile = self.profile(profile.merged_into)
        return profile

    def new_profile(self, first_seen: str) -> IdentityProfile:
        profile = IdentityProfile(first_seen=first_seen)
        self.profiles[str(profile.id)] = profile
        return profile

    def new_link(self, identifier: Identifier, profile: IdentityProfile) -> None:
        link = IdentifierLink(identifier.type, identifier.value, str(profile.id))
        self.links[link.id] = link
        profile.add_identifier(identifier.type, identifier.value)

    def aggregates(self) -> list[Any]:
        return [*self.links.values(), *self.profiles.values()]


class IdentityApplication(ServiceApplication):
    service_name = "identity"
    name = "identity"

    def resolve_batch(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        """Resolve every fresh item; returns how many were resolved (0 for a redelivery)."""
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        unit = _Unit(self)
        resolved = []
        for item in fresh:
            event = item["event"]
            identifiers = identifiers_of(event)
            profile, merged_from = self._resolve(unit, identifiers, event.get("timestamp", ""))
            resolved.append({
                "profile_id": str(profile.id),
                "source": item["source"],
                "event": event,
                "identifiers": [[i.type, i.value] for i in identifiers],
                "merged_from": merged_from,
            })
        batch = ResolutionBatch(items=resolved)
        self.save_processed(
            *unit.aggregates(), batch, tracking_key=tracking_key, position=fresh[-1]["position"]
        )
        return len(fresh)

    def _resolve(
        self, unit: _Unit, identifiers: list[Identifier], seen_at: str
    ) -> tuple[IdentityProfile, list[str]]:
        roots: list[IdentityProfile] = []
        unlinked: list[Identifier] = []
        for identifier in identifiers:
            link = unit.link(identifier)
            if link is None:
                unlinked.append(identifier)
                continue
            root = unit.root(link.profile_id)
            if all(root.id != known.id for known in roots):
                roots.append(root)
        if not roots:
            profile = unit.new_profile(seen_at)
            for identifier in unlinked:
                unit.new_link(identifier, profile)
            return profile, []
        group, user_ids = self._mergeable(roots)
        new_user_ids = {i.value for i in unlinked if i.type == "user_id"}
        if new_user_ids and user_ids and new_user_ids != user_ids:
            # The event's user id belongs to nobody yet but its other identifiers belong to
            # someone with another user id: the user id wins, in a profile of its own.
            profile = unit.new_profile(seen_at)
            for identifier in unlinked:
                unit.new_link(identifier, profile)
            return profile, []
        survivor = min(group, key=lambda p: (p.first_seen or "~", str(p.id)))
        merged_from = []
        for other in group:
            if other.id != survivor.id:
                survivor.absorb(str(other.id), other.identifiers)
                other.merge_into(str(survivor.id))
                merged_from.append(str(other.id))
        for identifier in unlinked:
            unit.new_link(identifier, survivor)
        return survivor, merged_from

    @staticmethod
    def _mergeable(roots: list[IdentityProfile]) -> tuple[list[IdentityProfile], set[str]]:
        """The anchor (profile of the strongest identifier) and those it may merge with."""
        group = [roots[0]]
        user_ids = set(roots[0].user_ids)
        for other in roots[1:]:
            if compatible(user_ids, other):
                group.append(other)
                user_ids |= other.user_ids
        return group, user_ids

    # ---- queries ----------------------------------------------------------------------
    def profile_count(self) -> int:
        """Profiles that exist now: created minus absorbed by a merge."""
        count = 0
        for stored in self.scan(IdentityProfile.Created, IdentityProfile.MergedInto):
            count += 1 if isinstance(stored, IdentityProfile.Created) else -1
        return count

    def profile_id_for(self, identifier_type: str, value: str) -> str | None:
        unit = _Unit(self)
        link = unit.link(Identifier(identifier_type, value))
        return None if link is None else str(unit.root(link.profile_id).id)

    def identifiers_of_profile(self, profile_id: str) -> dict[str, list[str]]:
        unit = _Unit(self)
        try:
            return dict(unit.root(profile_id).identifiers)
        except (AggregateNotFoundError, ValueError):
            return {}
