"""Identity's application: resolve each event or record to a profile, merging when needed.

Deterministic first: identifiers seen together link, within the policy's guards.
A record with no known identifier but with attributes (name, birth date, address) is then
matched probabilistically against the few profiles its blocking keys find. Retracting an
edge, rejecting a merge or erasing an identifier recomputes the profile and splits it
when it falls apart.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from services.identity.domain import (
    GraphChange,
    Identifier,
    IdentifierLink,
    IdentityProfile,
    MatchModelState,
    ResolutionBatch,
    ReviewCase,
    identifiers_of,
)
from services.identity.graph import (
    RECORD,
    edge_key,
    new_edge,
    node,
    node_kind,
    node_value,
    path_between,
)
from services.identity.matching import (
    COMPARISONS,
    MatchIndex,
    MatchModel,
    attributes_of_event,
    combined_levels,
    estimate_model,
)
from services.identity.normalise import normalise_email, normalise_phone
from services.identity.policy import IdentityPolicy
from shared.privacy import is_erased, subject_of_profile, subject_of_stream
from shared.store import ServiceApplication

# A record this many bits short of the review threshold against its best single record may
# still reach it against all of a profile's records.
PROFILE_EVIDENCE_MARGIN = 16.0
# EM needs pairs of records of one person among its blocked pairs: too few records, and
# the weights it finds say more about chance than about people.
MIN_RECORDS_TO_ESTIMATE = 200


def _age(profile: IdentityProfile) -> tuple[str, str, str]:
    """The oldest profile sorts first: by when its person was first seen, then created."""
    return (profile.first_seen or "~", profile.created_on.isoformat(), str(profile.id))


def _absorb(survivor: IdentityProfile, other: IdentityProfile, edge: dict[str, Any]
            ) -> dict[str, Any]:
    """Merge `other` into `survivor` through `edge`; the merge as identity.resolved tells it."""
    reason = {"rule": edge["rule"], "score": edge["score"],
              "edge": edge_key(edge["a"], edge["b"]), "evidence": edge["evidence"]}
    survivor.absorb(str(other.id), reason=reason, **other.contents())
    survivor.add_edge(edge)
    other.merge_into(str(survivor.id), reason=reason)
    return {"survivor": str(survivor.id), "absorbed": str(other.id), "rule": edge["rule"],
            "score": edge["score"], "evidence": edge["evidence"], "at": edge["at"]}


class IdentityError(ValueError):
    """A request identity cannot carry out; the message says which field and why."""


class _Unit:
    """The aggregates touched while resolving one batch, saved together at the end."""

    def __init__(self, app: IdentityApplication):
        self.app = app
        self.links: dict[uuid.UUID, IdentifierLink] = {}
        self.profiles: dict[str, IdentityProfile] = {}
        self.others: list[Any] = []

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

    def new_profile(self, first_seen: str, split_from: str | None = None,
                    record: dict[str, Any] | None = None) -> IdentityProfile:
        profile = IdentityProfile(first_seen=first_seen, split_from=split_from, record=record)
        self.profiles[str(profile.id)] = profile
        if record is not None:
            self.app.match_index.add(record["id"], str(profile.id), record["attributes"])
        return profile

    def new_link(self, identifier: Identifier, profile: IdentityProfile,
                 edge: dict[str, Any] | None) -> None:
        link = IdentifierLink(identifier.type, identifier.value, str(profile.id))
        self.links[link.id] = link
        profile.add_identifier(identifier.type, identifier.value, edge)

    def aggregates(self) -> list[Any]:
        return [*self.links.values(), *self.profiles.values(), *self.others]


def _one_writer(method):
    """Partition workers, RPCs and the review queue of one process take turns to change
    identity's aggregates: the cache holds one copy of each, and two workers changing one
    profile at once (two partitions naming the same person) would store version gaps.
    Replicas are kept apart by the store's version check instead."""

    @functools.wraps(method)
    def turn(self, *args, **kwargs):
        with self._writing:
            return method(self, *args, **kwargs)

    return turn


class IdentityApplication(ServiceApplication):
    service_name = "identity"
    written_once = (ResolutionBatch, GraphChange)
    privacy_rules = "services.identity.privacy:RULES"
    name = "identity"

    def __init__(self, settings, env=None, policy: IdentityPolicy | None = None):
        super().__init__(settings, env)
        self._writing = threading.RLock()
        self.policy = policy or IdentityPolicy.from_env()
        stored = self.find(MatchModelState.create_id())
        self.match_model = MatchModel.from_dict(stored.model) if stored else MatchModel.default()
        self.match_index = MatchIndex(self.match_model)
        self._index_position = 0  # the notification the match index has read up to
        self._catch_up_match_index()

    def _save(self, *aggregates: Any) -> None:
        self.save_collected(*aggregates)

    # ---- the pipeline: events of a consumed batch -----------------------------------------
    @_one_writer
    def resolve_batch(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        """Resolve every fresh item; returns how many were resolved (0 for a redelivery)."""
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        self._catch_up_match_index()
        unit = _Unit(self)
        resolved = []
        for item in fresh:
            event = item["event"]
            identifiers = identifiers_of(event, self.policy)
            record = self._record_of_event(item)
            # Consent follows the links of identity.resolved, and a probabilistic match must
            # never carry one person's consent to another (DESIGN §4): on this path a
            # match, however strong, goes to the review queue.
            outcome = self._resolve(unit, identifiers, record, event.get("timestamp", ""),
                                    evidence=event.get("messageId"), merge_on_match=False)
            resolved.append({
                "profile_id": outcome["profile_id"],
                "source": item["source"],
                "event": event,
                "identifiers": [[i.type, i.value] for i in identifiers],
                "merged_from": [m["absorbed"] for m in outcome["merges"]],
                "merges": outcome["merges"],
            })
        self.save_processed(*unit.aggregates(), ResolutionBatch(items=resolved),
                            tracking_key=tracking_key, position=fresh[-1]["position"])
        return len(fresh)

    def _record_of_event(self, item: dict[str, Any]) -> dict[str, Any] | None:
        attributes = attributes_of_event(item["event"], self.policy)
        message_id = item["event"].get("messageId")
        if not attributes or not message_id:
            return None
        return {"id": f"{item['source']}/{message_id}", "source": item["source"],
                "attributes": attributes}

    # ---- records: imports, CRM pulls and the benchmark ----------------------------------
    @_one_writer
    def resolve_records(self, records: list[dict[str, Any]]) -> list[str]:
        """Resolve records one after another (each sees those before it); one transaction.

        A record: {"source", "id", "attributes": {...}, "identifiers": [[type, value]],
        "seen_at"}. Returns the profile id of each.
        """
        self._catch_up_match_index()
        unit = _Unit(self)
        profile_ids, resolved = [], []
        for record in records:
            identifiers = self._identifiers_of_record(record)
            seen_at = record.get("seen_at", "")
            attached = {"id": f"{record['source']}/{record['id']}", "source": record["source"],
                        "attributes": self.match_index.clean(record.get("attributes") or {},
                                                             self.policy)}
            outcome = self._resolve(unit, identifiers, attached, seen_at,
                                    evidence=attached["id"])
            profile_ids.append(outcome["profile_id"])
            if outcome["merges"]:
                resolved.append({"profile_id": outcome["profile_id"], "source": record["source"],
                                 "event": {"type": "record", "recordId": attached["id"]},
                                 "identifiers": [[i.type, i.value] for i in identifiers],
                                 "merged_from": [m["absorbed"] for m in outcome["merges"]],
                                 "merges": outcome["merges"]})
        extra = [ResolutionBatch(items=resolved)] if resolved else []
        self._save(*unit.aggregates(), *extra)
        return profile_ids

    def _identifiers_of_record(self, record: dict[str, Any]) -> list[Identifier]:
        known = set(self.policy.type_names)
        found = set()
        for kind, value in record.get("identifiers") or ():
            if kind not in known:
                raise IdentityError(f"identifiers: unknown identifier type {kind!r} "
                                    f"(known: {sorted(known)})")
            text = self._normalised(kind, value)
            if text and not self.policy.is_blocked(text):
                found.add(Identifier(kind, text))
        return sorted(found, key=lambda i: (self.policy.priority(i.type), i.value))

    def _normalised(self, kind: str, value: Any) -> str | None:
        """Emails and phones as events give them; an invalid one is no identifier."""
        if kind == "email":
            return normalise_email(value)
        if kind == "phone":
            return normalise_phone(value, self.policy.phone_region)
        return None if value is None else str(value).strip()

    # ---- resolving one event or record --------------------------------------------------
    def _resolve(self, unit: _Unit, identifiers: list[Identifier],
                 record: dict[str, Any] | None, seen_at: str, *, evidence: str | None,
                 merge_on_match: bool = True) -> dict[str, Any]:
        usable, roots, unlinked = self._known(unit, identifiers)
        if not roots and record is not None:
            return self._resolve_by_match(unit, unlinked, record, seen_at, evidence,
                                          merge_on_match)
        if not roots:
            profile = unit.new_profile(seen_at)
            self._link_new(unit, profile, unlinked, record, seen_at, evidence)
            return {"profile_id": str(profile.id), "merges": []}
        group, refused = self._mergeable(roots)
        new_user_ids = {i.value for i in unlinked if i.type == "user_id"}
        group_user_ids = set().union(*(p.user_ids for p in group))
        if new_user_ids and group_user_ids and new_user_ids != group_user_ids:
            # The event's user id belongs to nobody yet but its other identifiers belong to
            # someone with another user id: the user id wins, in a profile of its own.
            profile = unit.new_profile(seen_at)
            self._link_new(unit, profile, unlinked, record, seen_at, evidence)
            self._note_seen_with(unit, usable, profile)
            return {"profile_id": str(profile.id), "merges": []}
        survivor = min(group, key=_age)
        merges = self._merge(unit, survivor, group, usable, seen_at, evidence)
        for other in refused:
            self._note_seen_with(unit, [i for i in usable if other.holds(i)], survivor)
        anchor = self._anchor(survivor, usable)
        self._back_up(survivor, anchor, usable, seen_at, evidence)
        self._link_new(unit, survivor, unlinked, record, seen_at, evidence, anchor=anchor)
        return {"profile_id": str(survivor.id), "merges": merges}

    def _known(self, unit: _Unit, identifiers: list[Identifier]
               ) -> tuple[list[Identifier], list[IdentityProfile], list[Identifier]]:
        """Identifiers that may link, the profiles they already belong to, the new ones."""
        usable, roots, unlinked = [], [], []
        for identifier in identifiers:
            link = unit.link(identifier)
            if link is None:
                usable.append(identifier)
                unlinked.append(identifier)
                continue
            if link.generic or link.profile_id is None:
                continue  # generic values and erased identifiers link nothing
            usable.append(identifier)
            root = unit.root(link.profile_id)
            if all(root.id != known.id for known in roots):
                roots.append(root)
        return usable, roots, unlinked

    def _mergeable(self, roots: list[IdentityProfile]
                   ) -> tuple[list[IdentityProfile], list[IdentityProfile]]:
        """The anchor (profile of the strongest identifier) and those it may merge with."""
        group, refused = [roots[0]], []
        for other in roots[1:]:
            (group if self._may_merge(group, other) else refused).append(other)
        return group, refused

    def _may_merge(self, group: list[IdentityProfile], other: IdentityProfile) -> bool:
        together = [*group, other]
        total = 0
        for kind in self.policy.types:
            values = set().union(*(set(p.identifiers.get(kind.name, ())) for p in together))
            if kind.limit is not None and len(values) > kind.limit:
                return False
            total += len(values)
        if total > self.policy.max_identifiers:
            return False
        exclusive = self.policy.one_record_per_profile
        seen_sources: set[str] = set()
        for profile in together:
            mine = profile.sources() & exclusive
            if mine & seen_sources:
                return False
            seen_sources |= mine
        return True

    def _may_take(self, profile: IdentityProfile, identifier: Identifier) -> bool:
        limit = self.policy.limit(identifier.type)
        if limit is not None and profile.count(identifier.type) >= limit:
            return False
        held = sum(len(values) for values in profile.identifiers.values())
        return held < self.policy.max_identifiers

    def _anchor(self, profile: IdentityProfile, usable: list[Identifier]) -> str | None:
        for identifier in usable:
            if profile.holds(identifier):
                return identifier.node
        return None

    @staticmethod
    def _back_up(profile: IdentityProfile, anchor: str | None, usable: list[Identifier],
                 seen_at: str, evidence: str | None) -> None:
        """Known identifiers seen together again get an edge of their own, so that
        retracting another edge later does not cut them apart."""
        if anchor is None:
            return
        for identifier in usable:
            other = identifier.node
            if other != anchor and profile.holds(identifier) and \
                    edge_key(anchor, other) not in profile.edges:
                profile.add_edge(new_edge(anchor, other, "seen_together", seen_at,
                                          evidence=evidence))

    def _merge(self, unit: _Unit, survivor: IdentityProfile, group: list[IdentityProfile],
               usable: list[Identifier], seen_at: str, evidence: str | None
               ) -> list[dict[str, Any]]:
        merges = []
        survivor_node = self._anchor(survivor, usable)
        for other in group:
            if other.id == survivor.id:
                continue
            edge = new_edge(survivor_node, self._anchor(other, usable), "seen_together",
                            seen_at, evidence=evidence)
            merges.append(_absorb(survivor, other, edge))
        return merges

    def _link_new(self, unit: _Unit, profile: IdentityProfile, unlinked: list[Identifier],
                  record: dict[str, Any] | None, seen_at: str, evidence: str | None,
                  anchor: str | None = None, match: dict[str, Any] | None = None) -> None:
        for identifier in unlinked:
            if not self._may_take(profile, identifier):
                continue  # over a limit: the value stays unlinked rather than over-merge
            edge = None if anchor is None else new_edge(anchor, identifier.node,
                                                        "seen_together", seen_at,
                                                        evidence=evidence)
            unit.new_link(identifier, profile, edge)
            anchor = anchor or identifier.node
        if record is not None and record["id"] not in profile.records:
            self._attach(profile, record, anchor, seen_at, evidence, match)

    def _attach(self, profile: IdentityProfile, record: dict[str, Any], anchor: str | None,
                seen_at: str, evidence: str | None, match: dict[str, Any] | None) -> None:
        record_node = node(RECORD, record["id"])
        edge = None
        if match is not None:
            edge = new_edge(match["with"], record_node, "match", seen_at,
                            score=match["probability"], evidence=evidence)
        elif anchor is not None:
            edge = new_edge(anchor, record_node, "seen_together", seen_at, evidence=evidence)
        profile.attach_record(record["id"], record["source"], record["attributes"], edge)
        self.match_index.add(record["id"], str(profile.id), record["attributes"])

    def _note_seen_with(self, unit: _Unit, identifiers: list[Identifier],
                        profile: IdentityProfile) -> None:
        """A value turning up with ever more profiles it may not join is generic."""
        for identifier in identifiers:
            link = unit.link(identifier)
            if link is None or link.generic or str(profile.id) in link.seen_with:
                continue
            link.seen_with_profile(str(profile.id))
            if len(link.seen_with) >= self.policy.generic_after:
                self._retire_generic(unit, identifier, link)

    def _retire_generic(self, unit: _Unit, identifier: Identifier, link: IdentifierLink
                        ) -> None:
        """A generic value stops linking, from now on and backwards: it leaves its
        profile's graph, and the profile splits if the value was what held it together
        (a shared phone that had merged a family, a call centre's number)."""
        holder = unit.root(link.profile_id)
        link.mark_generic(profiles=len(link.seen_with) + 1, profile_id=str(holder.id))
        reason = {"rule": "generic", "node": identifier.node,
                  "profiles": len(link.seen_with) + 1}
        holder.remove_node(identifier.node, reason)
        link.unlink("generic")
        parts = self._split_if_apart(unit, holder, reason)
        if parts:
            unit.others.append(GraphChange(items=[{
                "profile_id": str(holder.id), "parts": parts, "reason": reason}]))

    # ---- probabilistic matching ---------------------------------------------------------
    def _resolve_by_match(self, unit: _Unit, unlinked: list[Identifier],
                          record: dict[str, Any], seen_at: str, evidence: str | None,
                          merge_on_match: bool) -> dict[str, Any]:
        candidates = self._candidates(unit, record)
        sure = [c for c in candidates if c["probability"] >= self.policy.merge_at]
        if merge_on_match and sure:
            best = sure[0]
            profile = best["profile"]
            self._link_new(unit, profile, unlinked, record, seen_at, evidence, match=best)
            merges = self._bridge(unit, profile, record, sure[1:], seen_at, evidence)
            return {"profile_id": str(unit.root(str(profile.id)).id), "merges": merges}
        # A record without identifiers starts its profile in one event.
        profile = unit.new_profile(seen_at, record=None if unlinked else record)
        self._link_new(unit, profile, unlinked, record, seen_at, evidence)
        if candidates and candidates[0]["probability"] >= self.policy.review_at:
            best = candidates[0]
            unit.others.append(ReviewCase(
                node(RECORD, record["id"]), str(profile.id), str(best["profile"].id),
                best["probability"], best["comparison"].materialise(), seen_at,
                candidate_node=best["with"]))
        return {"profile_id": str(profile.id), "merges": []}

    def _candidates(self, unit: _Unit, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Each candidate profile once, strongest first, scored against everything the
        profile knows: per comparison, the best level any of its records reaches (a
        person's birth date from one source, their SSN from another). A profile the
        record may not join (its source already there) is left out."""
        floor = self.match_model.weight_of(self.policy.review_at)
        best: dict[str, dict[str, Any]] = {}
        for record_id, profile_id, weight, comparison in self.match_index.scored_candidates(
                record["attributes"]):
            if weight < floor - PROFILE_EVIDENCE_MARGIN:
                continue
            profile = unit.root(profile_id)
            key = str(profile.id)
            if key in best and weight <= best[key]["weight"]:
                continue
            best[key] = {"weight": weight, "profile": profile, "with": node(RECORD, record_id),
                         "comparison": comparison}
        exclusive = record["source"] in self.policy.one_record_per_profile
        found = []
        for candidate in best.values():
            if exclusive and record["source"] in candidate["profile"].sources():
                continue
            if len(candidate["profile"].records) > 1:
                self._score_against_profile(record, candidate)
            if candidate["weight"] >= floor:
                candidate["probability"] = self.match_model.probability(candidate["weight"])
                found.append(candidate)
        return sorted(found, key=lambda c: -c["weight"])

    def _score_against_profile(self, record: dict[str, Any], candidate: dict[str, Any]
                               ) -> None:
        levels = combined_levels(record["attributes"],
                                 [r["attributes"] for r in candidate["profile"].records.values()])
        weight = self.match_model.weight(levels)
        if weight > candidate["weight"]:
            candidate["weight"] = weight
            candidate["comparison"] = self.match_model.lazy_explanation(levels)

    def _bridge(self, unit: _Unit, profile: IdentityProfile, record: dict[str, Any],
                others: list[dict[str, Any]], seen_at: str, evidence: str | None
                ) -> list[dict[str, Any]]:
        """A record that surely matches several profiles joins them: they were one person
        whose records had not met before. Each merge keeps the guards."""
        merges = []
        record_node = node(RECORD, record["id"])
        for candidate in others:
            survivor, other = unit.root(str(profile.id)), unit.root(str(candidate["profile"].id))
            if survivor.id == other.id or not self._may_merge([survivor], other):
                continue
            survivor, other = sorted((survivor, other), key=_age)
            edge = new_edge(record_node, candidate["with"], "match", seen_at,
                            score=candidate["probability"], evidence=evidence)
            merges.append(_absorb(survivor, other, edge))
        return merges

    # ---- the match index: a read model of every record, kept in memory ------------------
    def _catch_up_match_index(self) -> None:
        """Read the records other writers (replicas on other partitions) saved since we
        last looked; at start this builds the whole index. Our own saves move the
        position forward without a read (`_notify`)."""
        newest = self.process_recorder.max_notification_id() or 0
        if newest <= self._index_position:
            return
        topics = [get_topic(cls) for cls in (IdentityProfile.Created,
                                             IdentityProfile.RecordAttached,
                                             IdentityProfile.Received,
                                             IdentityProfile.NodeRemoved)]
        while True:
            notifications = self.process_recorder.select_notifications(
                start=self._index_position, limit=1000, topics=topics, stop=newest,
                inclusive_of_start=False)
            for notification in notifications:
                self._index(self.mapper.to_domain_event(notification))
            if len(notifications) < 1000:
                break
            self._index_position = notifications[-1].id
        self._index_position = newest

    def _index(self, stored: Any) -> None:
        if is_erased(stored):  # an erased person's records are not matched against
            return
        profile_id = str(stored.originator_id)
        if isinstance(stored, IdentityProfile.Created):
            record = getattr(stored, "record", None)
            if record is not None:
                self.match_index.add(record["id"], profile_id, record["attributes"])
        elif isinstance(stored, IdentityProfile.RecordAttached):
            self.match_index.add(stored.record_id, profile_id, stored.attributes)
        elif isinstance(stored, IdentityProfile.NodeRemoved):
            if node_kind(stored.name) == RECORD and node_value(stored.name) in \
                    self.match_index.records:
                self.match_index.remove(node_value(stored.name))
        else:
            for record_id, kept in stored.contents["records"].items():
                self.match_index.add(record_id, profile_id, kept["attributes"])

    def _notify(self, recordings) -> None:
        super()._notify(recordings)
        ids = [r.notification.id for r in recordings]
        if ids and min(ids) == self._index_position + 1:
            self._index_position = max(ids)  # nobody else wrote in between: nothing to read

    def forget_cached_state(self) -> None:
        """A failed save leaves the index holding records of profiles never saved."""
        super().forget_cached_state()
        self.match_index = MatchIndex(self.match_model)
        self._index_position = 0
        self._catch_up_match_index()

    def estimate_match_weights(self, seed: int = 0) -> dict[str, Any]:
        """Estimate the weights again from every record identity holds (no labels needed)
        and adopt them; what a deployment runs once it has records, then now and then."""
        records = [attributes for _, attributes in self.match_index.records.values()]
        if len(records) < MIN_RECORDS_TO_ESTIMATE:
            raise IdentityError(f"records: estimating weights needs at least "
                                f"{MIN_RECORDS_TO_ESTIMATE} records, identity holds "
                                f"{len(records)}")
        self.use_match_model(estimate_model(records, seed=seed))
        return self.match_weights()

    def match_weights(self) -> dict[str, Any]:
        model = self.match_model
        return {"prior": model.prior, "trained_on": model.trained_on,
                "weights": {name: dict(zip(levels, (round(w, 2) for w in model.weights[name]),
                                           strict=True))
                            for name, levels in ((c.name, c.levels) for c in COMPARISONS)}}

    @_one_writer
    def use_match_model(self, model: MatchModel) -> None:
        """Adopt new weights (estimated by EM or configured); stored so a restart keeps them."""
        stored = self.find(MatchModelState.create_id())
        if stored is None:
            stored = MatchModelState(model.to_dict())
        else:
            stored.replace(model.to_dict())
        self._save(stored)
        self.match_model = model
        self.match_index.model = model

    # ---- taking merges back: retraction, rejection, erasure ----------------------------
    @_one_writer
    def retract_edge(self, profile_id: str, a: str, b: str, by: str) -> dict[str, Any]:
        """Remove one edge of a profile's graph; the profile splits if it falls apart."""
        unit = _Unit(self)
        profile = self._existing_root(unit, profile_id)
        key = edge_key(a, b)
        if key not in profile.edges:
            raise IdentityError(f"edge: profile {profile.id} has no edge {a} -- {b}")
        reason = {"rule": "edge_retracted", "edge": key, "by": by}
        profile.retract_edge(key, reason)
        return self._save_split(unit, profile, reason)

    @_one_writer
    def reject_merge(self, absorbed_id: str, by: str) -> dict[str, Any]:
        """Undo a past merge: retract the edge that caused it, restoring the absorbed profile."""
        unit = _Unit(self)
        try:
            absorbed = unit.profile(absorbed_id)
        except (AggregateNotFoundError, ValueError) as missing:
            raise IdentityError(f"profile_id: no profile {absorbed_id}") from missing
        if absorbed.merged_into is None or not absorbed.merge_reason:
            raise IdentityError(f"profile_id: profile {absorbed_id} was not merged")
        key = absorbed.merge_reason["edge"]
        survivor = unit.root(absorbed_id)
        reason = {"rule": "merge_rejected", "edge": key, "absorbed": absorbed_id, "by": by}
        if key in survivor.edges:
            survivor.retract_edge(key, reason)
        return self._save_split(unit, survivor, reason)

    @_one_writer
    def erase_identifier(self, identifier_type: str, value: str, by: str) -> dict[str, Any]:
        """Erasure: the identifier leaves the graph and links nothing any more."""
        unit = _Unit(self)
        link = unit.link(Identifier(identifier_type, value))
        if link is None or link.profile_id is None:
            raise IdentityError(f"identifier: no profile holds {identifier_type} {value!r}")
        profile = unit.root(link.profile_id)
        reason = {"rule": "erased", "node": node(identifier_type, value), "by": by}
        profile.remove_node(node(identifier_type, value), reason)
        link.unlink("erased")
        return self._save_split(unit, profile, reason)

    @_one_writer
    def erase_record(self, record_id: str, by: str) -> dict[str, Any]:
        """Erasure of a record (a CRM row, an import line): it leaves the graph and the
        match index, and the profile splits if the record was what held it together."""
        unit = _Unit(self)
        found = self.match_index.records.get(record_id)
        if found is None:
            raise IdentityError(f"record_id: no record {record_id!r}")
        profile = unit.root(found[0])
        reason = {"rule": "erased", "node": node(RECORD, record_id), "by": by}
        profile.remove_node(node(RECORD, record_id), reason)
        self.match_index.remove(record_id)
        return self._save_split(unit, profile, reason)

    # ---- erasure of a person (services/consent/erasure.py drives it) ----------------------
    def subject_of(self, identifier_type: str, value: str) -> dict[str, Any]:
        """Everything that names the person behind an identifier: the profile it links
        to, the profiles merged into it, every identifier linked to them, and the
        profiles this identifier was seen on but could not join (another user id: a CRM
        row of the same person). Only the identifier asked about is followed that way: a
        shared phone or address must not reach a household member."""
        unit = _Unit(self)
        identifier = Identifier(identifier_type, self._normalised(identifier_type, value)
                                or str(value).strip())
        link = unit.link(identifier)
        found = {(identifier.type, identifier.value)}
        if link is None:
            return {"profile_ids": [], "identifiers": [list(identifier_) for identifier_ in found]}
        roots: dict[str, IdentityProfile] = {}
        for profile_id in [link.profile_id, *link.seen_with]:
            if profile_id is None:
                continue
            with contextlib.suppress(AggregateNotFoundError, ValueError):
                root = unit.root(profile_id)
                roots[str(root.id)] = root
        profiles: set[str] = set()
        for root in roots.values():
            profiles.update({str(root.id), *root.absorbed})
            found.update((kind, v) for kind, values in root.identifiers.items() for v in values)
        return {"profile_ids": sorted(profiles),
                "identifiers": [list(i) for i in sorted(found)]}

    @_one_writer
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """The person leaves the graph (every node, every link), the match index forgets
        their records, then their keys are shredded: profiles and identifier links."""
        unit = _Unit(self)
        roots: dict[str, IdentityProfile] = {}
        for profile_id in profile_ids:
            with contextlib.suppress(AggregateNotFoundError, ValueError):
                root = unit.root(profile_id)
                roots[str(root.id)] = root
        named = {Identifier(t, v) for t, v in identifiers}
        for identifier in named:
            link = unit.link(identifier)
            if link is not None and link.profile_id is not None:
                root = unit.root(link.profile_id)
                roots[str(root.id)] = root
        profiles = set(profile_ids)
        reason = {"rule": "erased"}
        for root in roots.values():
            profiles.add(str(root.id))
            profiles.update(root.absorbed)
            for name in list(root.nodes):
                root.remove_node(name, reason)
                if node_kind(name) == RECORD:
                    if node_value(name) in self.match_index.records:
                        self.match_index.remove(node_value(name))
                else:
                    named.add(Identifier(node_kind(name), node_value(name)))
        for identifier in named:
            link = unit.link(identifier)
            if link is not None and link.profile_id is not None:
                link.unlink("erased")
        self._save(*unit.aggregates())
        subjects = [subject_of_profile(p) for p in profiles]
        subjects += [subject_of_stream(i.link_id) for i in named]
        hashes = {*(self.privacy.hashed(s) for s in subjects), *subject_hashes}
        shredded = self.shred_subjects_by_hash(hashes)
        self.compact_store()
        return {"service": self.service_name, "profiles": len(profiles),
                "identifiers": len(named), "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    def _existing_root(self, unit: _Unit, profile_id: str) -> IdentityProfile:
        try:
            return unit.root(profile_id)
        except (AggregateNotFoundError, ValueError) as missing:
            raise IdentityError(f"profile_id: no profile {profile_id}") from missing

    def _save_split(self, unit: _Unit, profile: IdentityProfile, reason: dict[str, Any]
                    ) -> dict[str, Any]:
        parts = self._split_if_apart(unit, profile, reason)
        if parts:
            unit.others.append(GraphChange(items=[{
                "profile_id": str(profile.id), "parts": parts, "reason": reason}]))
        self._save(*unit.aggregates())
        return {"profile_id": str(profile.id), "split_into": parts}

    def _split_if_apart(self, unit: _Unit, profile: IdentityProfile, reason: dict[str, Any]
                        ) -> list[dict[str, Any]]:
        """Each part not holding the profile's origin leaves: to the profile that was
        merged in with it (restored, its id back) or to a new one; history stays."""
        parts = profile.parts()
        if len(parts) <= 1:
            return []
        moves = []
        for members in parts[1:]:
            restored = next((pid for pid, origin in profile.absorbed.items()
                             if origin in members), None)
            target = (unit.profile(restored) if restored
                      else unit.new_profile(profile.first_seen, split_from=str(profile.id)))
            moves.append((target, members, restored is not None))
        contents = [profile.part_contents(members, str(target.id))
                    for target, members, _ in moves]
        profile.split(parts=[{"profile_id": str(t.id), "nodes": m} for t, m, _ in moves],
                      reason=reason)
        for (target, _members, restored), part in zip(moves, contents, strict=True):
            target.receive(part, from_profile=str(profile.id), reason=reason,
                           restored=restored)
        self._relink(unit, profile, parts[0])
        for target, members, _ in moves:
            self._relink(unit, target, members)
        return [{"profile_id": str(t.id), "restored": r,
                 "identifiers": [m for m in members if node_kind(m) != RECORD]}
                for t, members, r in moves]

    def _relink(self, unit: _Unit, profile: IdentityProfile, members: list[str]) -> None:
        for name in members:
            if node_kind(name) == RECORD:
                self.match_index.move(node_value(name), str(profile.id))
                continue
            link = unit.link(Identifier(node_kind(name), node_value(name)))
            if link is not None and link.profile_id != str(profile.id):
                link.relink(str(profile.id), reason="split")

    # ---- the review queue -------------------------------------------------------------
    def review_cases(self, status: str = "open") -> list[dict[str, Any]]:
        if status not in ("open", "approved", "rejected", "all"):
            raise IdentityError("status: must be one of open, approved, rejected, all")
        cases = []
        for stored in self.scan(ReviewCase.Opened):
            case = self.repository.get(stored.originator_id)
            if status in ("all", case.status):
                cases.append(case.view())
        return cases

    @_one_writer
    def decide_case(self, case_id: str, approve: bool, by: str) -> dict[str, Any]:
        """Approve: the record's profile and the candidate merge (edge `match`, its score).
        Reject: they stay apart and the case is closed."""
        unit = _Unit(self)
        try:
            case = self.repository.get(uuid.UUID(case_id))
        except (AggregateNotFoundError, ValueError) as missing:
            raise IdentityError(f"case_id: no review case {case_id}") from missing
        if case.status != "open":
            raise IdentityError(f"case_id: case {case_id} is already {case.status}")
        merges: list[dict[str, Any]] = []
        if approve:
            merges = self._merge_by_review(unit, case, by)
            case.approve(by)
        else:
            case.reject(by)
        unit.others.append(case)
        if merges:
            unit.others.append(ResolutionBatch(items=[{
                "profile_id": merges[0]["survivor"], "source": "review",
                "event": {"type": "review", "caseId": case_id}, "identifiers": [],
                "merged_from": [m["absorbed"] for m in merges], "merges": merges}]))
        self._save(*unit.aggregates())
        return case.view() | {"merges": merges}

    def _merge_by_review(self, unit: _Unit, case: ReviewCase, by: str) -> list[dict[str, Any]]:
        mine, theirs = unit.root(case.profile_id), unit.root(case.candidate_id)
        if mine.id == theirs.id:
            return []
        if not self._may_merge([mine], theirs):
            raise IdentityError("case_id: merging would break the identity policy "
                                "(limits or one user id per profile)")
        survivor, other = sorted((mine, theirs), key=_age)
        edge = new_edge(case.record_node, case.candidate_node or theirs.origin, "match",
                        case.at, score=case.score, evidence=f"review by {by}")
        return [_absorb(survivor, other, edge)]

    # ---- explain ----------------------------------------------------------------------
    def explain(self, profile_id: str) -> dict[str, Any] | None:
        """Why each identifier and record belongs to the profile: the chain of edges from
        the profile's first identifier, each with its rule, score and evidence."""
        unit = _Unit(self)
        try:
            profile = unit.root(profile_id)
        except (AggregateNotFoundError, ValueError):
            return None
        edges = list(profile.edges.values())
        members = []
        for name in profile.nodes:
            path = path_between(profile.origin, name, edges) if profile.origin else []
            members.append({"node": name, "kind": node_kind(name),
                            "because": [self._edge_view(e) for e in path]})
        return {"profile_id": str(profile.id), "asked_for": profile_id,
                "origin": profile.origin, "members": members,
                "merged": sorted(profile.absorbed), "history": self._history(profile)}

    @staticmethod
    def _edge_view(edge: dict[str, Any]) -> dict[str, Any]:
        return {"from": edge["a"], "to": edge["b"], "rule": edge["rule"],
                "score": edge.get("score"), "evidence": edge.get("evidence"), "at": edge["at"]}

    def _history(self, profile: IdentityProfile) -> list[dict[str, Any]]:
        kinds = {"Absorbed": "merged", "EdgeRetracted": "edge retracted", "Split": "split",
                 "NodeRemoved": "removed", "Received": "received"}
        history = []
        for stored in self.events.get(profile.id):
            kind = type(stored).__name__
            if kind not in kinds:
                continue
            entry = {"what": kinds[kind], "at": stored.timestamp.isoformat(),
                     "reason": getattr(stored, "reason", None)}
            if kind == "Absorbed":
                entry["profile_id"] = stored.profile_id
            if kind == "Split":
                entry["parts"] = [p["profile_id"] for p in stored.parts]
            history.append(entry)
        return history

    # ---- queries ----------------------------------------------------------------------
    def profile_count(self) -> int:
        """Profiles that exist now: created minus absorbed by a merge."""
        count = 0
        for stored in self.scan(IdentityProfile.Created, IdentityProfile.MergedInto,
                                IdentityProfile.Received):
            if isinstance(stored, IdentityProfile.Created):
                count += 1
            elif isinstance(stored, IdentityProfile.MergedInto):
                count -= 1
            elif stored.restored:
                count += 1
        return count

    def current_profile_id(self, profile_id: str) -> str:
        """The profile that holds this one now (itself, or the survivor of its merges)."""
        return str(_Unit(self).root(profile_id).id)

    def profile_id_for(self, identifier_type: str, value: str) -> str | None:
        unit = _Unit(self)
        link = unit.link(Identifier(identifier_type, value))
        if link is None or link.profile_id is None:
            return None
        return str(unit.root(link.profile_id).id)

    def identifiers_of_profile(self, profile_id: str) -> dict[str, list[str]]:
        unit = _Unit(self)
        try:
            return dict(unit.root(profile_id).identifiers)
        except (AggregateNotFoundError, ValueError):
            return {}

    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """What identity holds on one person: the profiles the given ids and identifiers
        resolve to now, with their identifiers, records, edges and merge/split history.
        Also the person's profile ids (absorbed ones too) and identifiers, which the other
        services' exports are asked for."""
        unit = _Unit(self)
        roots: dict[str, IdentityProfile] = {}
        for identifier_type, value in identifiers:
            normalised = self._normalised(identifier_type, value) or value
            link = unit.link(Identifier(identifier_type, normalised))
            if link is not None and link.profile_id is not None:
                root = unit.root(link.profile_id)
                roots[str(root.id)] = root
        for profile_id in profile_ids:
            try:
                root = unit.root(profile_id)
            except (AggregateNotFoundError, ValueError):
                continue
            roots[str(root.id)] = root
        profiles = []
        for profile_id, root in sorted(roots.items()):
            explained = self.explain(profile_id) or {}
            profiles.append({"profile_id": profile_id, "first_seen": root.first_seen,
                             "identifiers": dict(root.identifiers),
                             "records": dict(root.records),
                             "absorbed": sorted(root.absorbed), "split_from": root.split_from,
                             "members": explained.get("members", []),
                             "history": explained.get("history", [])})
        return {"service": "identity", "profiles": profiles,
                "profile_ids": sorted({pid for p in profiles
                                       for pid in (p["profile_id"], *p["absorbed"])}),
                "identifiers": sorted([kind, value] for p in profiles
                                      for kind, values in p["identifiers"].items()
                                      for value in values)}

    def generic_identifiers(self) -> list[dict[str, Any]]:
        """Values that stopped linking because they turned up with too many profiles."""
        found = []
        for stored in self.scan(IdentifierLink.MarkedGeneric):
            link = self.repository.get(stored.originator_id)
            found.append({"type": link.identifier_type, "value": link.value,
                          "profile_id": stored.profile_id,
                          "profiles": stored.profiles, "seen_with": list(link.seen_with)})
        return found
