"""Consent's application: record consent and signals, follow identity's links, decide
fail-closed, and tell activation when a change of consent affects a person's audiences."""

from __future__ import annotations

import time
import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from services.consent import tcf
from services.consent.domain import (
    ConsentChanges,
    ConsentRecord,
    DecisionBatch,
    ProfileLinks,
    decide_for_people,
    record_id,
)
from services.consent.request_desk import SubjectRequestDesk
from services.consent.requests import SubjectRequest
from shared.envelope import utcnow_iso
from shared.privacy import subject_of_identifier, subject_of_profile, subject_of_stream
from shared.purposes import load_catalogue
from shared.readmodel import Writes
from shared.store import ServiceApplication

KNOWN_JURISDICTIONS = frozenset({"GDPR", "CCPA"})
RECORDS_REFRESH_SECONDS = 1.0
IDENTITY_RESOLVED_KEY = "identity/identity.resolved/{partition}"
DETERMINISTIC_RULES = frozenset({"seen_together"})
TCF_JURISDICTION = "GDPR"  # the TCF is the EU's framework (GDPR and ePrivacy)
GPC_JURISDICTION = "CCPA"  # 11 CCR §7025: GPC is a CCPA/CPRA opt-out of sale/sharing
GPC_SOURCE = "gpc"
TCF_SOURCE = "tcf"


class NotCaughtUp(Exception):
    """Consent has not yet read identity's log as far as a decision needs: ask again soon."""


class ConsentError(ValueError):
    """A request consent refuses; the message names the field and the rule."""


class ConsentApplication(SubjectRequestDesk, ServiceApplication):
    service_name = "consent"
    written_once = (ConsentChanges, DecisionBatch)
    privacy_rules = "services.consent.privacy:RULES"
    name = "consent"

    def subject_terms(self):
        """The subject index (shared.subject_index): decisions by the profile decided on,
        requests by the identifiers they were filed with, what `export_subject` reads."""
        return {
            DecisionBatch.Decided: lambda state: [
                subject_of_profile(d["profile_id"]) for d in state.get("decisions") or ()
                if isinstance(d, dict) and d.get("profile_id")],
            SubjectRequest.Received: lambda state: [
                subject_of_identifier(*identifier) for identifier in
                state.get("identifiers") or () if len(identifier) == 2],
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.catalogue = load_catalogue(self.settings.purposes_file)
        self.rm = self.read_model()
        self.rm.create(f"CREATE TABLE IF NOT EXISTS {self.rm.table('identifier_owners')} "
                       "(identifier TEXT PRIMARY KEY, profile_id TEXT NOT NULL)")
        # Which identifiers have a consent record at all: most have none, and asking the
        # database for each of them at every decision is what decisions would cost.
        self._with_records: set[uuid.UUID] = set()
        self._records_seen_up_to = 0
        self._records_refreshed_at = float("-inf")
        self._refresh_records_index(force=True)

    def _refresh_records_index(self, force: bool = False) -> None:
        """Learn of records opened by other replicas (our own are added as we open them)."""
        if not force and time.monotonic() - self._records_refreshed_at < RECORDS_REFRESH_SECONDS:
            return
        self._records_refreshed_at = time.monotonic()
        newest = self.process_recorder.max_notification_id() or 0
        topic = [get_topic(ConsentRecord.Opened)]
        while self._records_seen_up_to < newest:
            notifications = self.process_recorder.select_notifications(
                start=self._records_seen_up_to, stop=newest, limit=1000, topics=topic,
                inclusive_of_start=False)
            for notification in notifications:
                self._with_records.add(uuid.UUID(str(notification.originator_id)))
            if len(notifications) < 1000:
                self._records_seen_up_to = newest
            else:
                self._records_seen_up_to = notifications[-1].id

    # ---- recording --------------------------------------------------------------------
    def _consent_record(self, touched: Unit, identifier: tuple[str, str]) -> ConsentRecord:
        key = record_id(*identifier)
        if key not in touched:
            record = self.find(key)
            if record is None:
                record = ConsentRecord(*identifier)
                self._with_records.add(key)
            touched[key] = record
        return touched[key]

    def record_consent(self, identifiers: list[tuple[str, str]], purposes: dict[str, bool],
                       *, source: str, jurisdiction: str | None = None,
                       collected_at: str | None = None, **receipt: str) -> list[str]:
        """The API's answers, on the identifier the person consented with (the first)."""
        touched = Unit()
        changes = Changes()
        anchor = tuple(identifiers[0])
        self._apply_preferences(
            touched, changes, anchor, purposes, source=source,
            jurisdiction=jurisdiction or self._jurisdiction_of_identifier(touched, anchor),
            collected_at=collected_at or utcnow_iso(), **receipt)
        self._save_with_changes(touched, changes)
        return [str(k) for k in touched if k == record_id(*anchor)]

    def record_objection(self, identifiers: list[list[str]], purposes: list[str] | None,
                         source: str, method: str = "objection") -> dict[str, Any]:
        """An objection (GDPR Art. 21) or opt-out: a denial of each purpose (None: every
        direct-marketing purpose), on every identifier given, under every regulation."""
        chosen = self.catalogue.direct_marketing() if purposes is None else \
            [str(p).strip().lower() for p in purposes]
        self._check(identifiers, chosen, source)
        touched = Unit()
        changes = Changes()
        at = utcnow_iso()
        for identifier in identifiers:
            for jurisdiction in sorted(KNOWN_JURISDICTIONS):
                self._apply_preferences(
                    touched, changes, tuple(identifier), dict.fromkeys(chosen, False),
                    source=source, jurisdiction=jurisdiction, collected_at=at,
                    lawful_basis="objection", method=method, kind="objection")
        self._save_with_changes(touched, changes)
        return {"records": _record_ids(touched), "purposes": chosen,
                "jurisdictions": sorted(KNOWN_JURISDICTIONS)}

    def set_restriction(self, identifiers: list[list[str]], restricted: bool,
                        reason: str) -> dict[str, Any]:
        """Restriction of processing (GDPR Art. 18): while set, no destination gets the
        person's data, which is kept; lifting it lets consent decide again."""
        self._check(identifiers, [], "restriction")
        if not isinstance(restricted, bool):
            raise ConsentError("restricted: must be true or false")
        touched = Unit()
        changes = Changes()
        at = utcnow_iso()
        for identifier in identifiers:
            record = self._consent_record(touched, tuple(identifier))
            if (record.restriction is not None) != restricted:
                record.set_restriction(restricted, reason, at)
                self._note_change(touched, changes, tuple(identifier),
                                  "restricted" if restricted else "restriction_lifted",
                                  self.catalogue.ids(), None)
        self._save_with_changes(touched, changes)
        return {"records": _record_ids(touched), "restricted": restricted}

    def record_tc_string(self, identifiers: list[list[str]], tc_string: str, source: str,
                         collected_at: str | None = None) -> dict[str, Any]:
        """A TC string from a CMP: the catalogue's TCF-mapped purposes granted or denied."""
        touched = Unit()
        changes = Changes()
        outcome = self._apply_tc_string(touched, changes, tuple(identifiers[0]), tc_string,
                                        source, collected_at or utcnow_iso())
        self._save_with_changes(touched, changes)
        return outcome | {"records": _record_ids(touched)}

    def record_gpc(self, identifiers: list[list[str]], source: str) -> dict[str, Any]:
        touched = Unit()
        changes = Changes()
        purposes = self._apply_gpc(touched, changes, tuple(identifiers[0]), source,
                                   utcnow_iso())
        self._save_with_changes(touched, changes)
        return {"records": _record_ids(touched), "opted_out": purposes}

    def _check(self, identifiers: Any, purposes: list[str], source: Any) -> None:
        if not isinstance(identifiers, list) or not identifiers or not all(
                isinstance(i, list | tuple) and len(i) == 2
                and all(isinstance(part, str) and part for part in i) for i in identifiers):
            raise ConsentError("identifiers: one at least, each [type, value]")
        unknown = self.catalogue.unknown(purposes)
        if unknown:
            raise ConsentError(f"purposes: {unknown[0]!r} is not in the purpose catalogue")
        if not isinstance(source, str) or not source:
            raise ConsentError("source: required")

    def _apply_preferences(self, touched, changes, anchor, purposes, **details) -> None:
        record = self._consent_record(touched, anchor)
        withdrawn, granted = [], []
        for purpose, answer in purposes.items():
            name = str(purpose).strip().lower()
            allowed = answer is True  # only an explicit true grants anything
            if record.says(name, details["source"], details["jurisdiction"]) is not allowed:
                record.record(name, allowed, **details)
                (granted if allowed else withdrawn).append(name)
        if withdrawn:
            self._note_change(touched, changes, anchor, "withdrawn", withdrawn,
                              details["jurisdiction"])
        if granted:
            self._note_change(touched, changes, anchor, "granted", granted,
                              details["jurisdiction"])

    def _apply_tc_string(self, touched, changes, anchor, tc_string, source, at
                         ) -> dict[str, Any]:
        mapped = self.catalogue.from_tcf()
        try:
            decoded = tcf.decode(tc_string)
            problems = tcf.problems(decoded,
                                    min_policy_version=self.settings.tcf_min_policy_version)
        except tcf.TCStringError as error:
            decoded, problems = None, [str(error)]
        vendor = self.settings.tcf_vendor_id
        answers = {p.id: not problems and decoded.grants(p.tcf_purposes, vendor)
                   for p in mapped}
        receipt = {"method": "IAB TCF v2 TC string"}
        if decoded is not None:
            receipt |= {"policy_version": f"tcf-policy-{decoded.policy_version}/gvl-"
                                          f"{decoded.vendor_list_version}",
                        "language": decoded.consent_language.lower()}
        if problems:  # fail closed: an invalid string is no consent, whatever it says
            receipt["method"] = f"IAB TCF v2 TC string, invalid: {problems[0]}"
        self._apply_preferences(touched, changes, anchor, answers,
                                source=f"{TCF_SOURCE}:{source}", jurisdiction=TCF_JURISDICTION,
                                collected_at=at, kind="tcf", **receipt)
        return {"valid": not problems, "problems": problems, "purposes": answers}

    def _apply_gpc(self, touched, changes, anchor, source, at) -> list[str]:
        """GPC opts out of sale/sharing and targeted advertising; being a source of its
        own, a later request without the signal leaves the opt-out standing (§7025(c)(5))."""
        purposes = self.catalogue.gpc_opt_outs()
        self._apply_preferences(touched, changes, anchor, dict.fromkeys(purposes, False),
                                source=GPC_SOURCE, jurisdiction=GPC_JURISDICTION,
                                collected_at=at, method=f"Global Privacy Control via {source}",
                                lawful_basis="opt-out", kind="gpc")
        return purposes

    # ---- changes for activation -------------------------------------------------------
    def _note_change(self, touched, changes: Changes, identifier: tuple[str, str], kind: str,
                     purposes, jurisdiction: str | None) -> None:
        links = self._profile_of_identifier(touched, identifier)
        if links is None:
            return  # nobody identity knows of yet: no audience to leave or to join
        if jurisdiction is not None and \
                jurisdiction != links.jurisdiction_or(self.settings.default_jurisdiction):
            return  # another regulation's records: they decide nothing for this person
        changes.add(links, kind, sorted(purposes), jurisdiction)

    def _save_with_changes(self, touched: Unit, changes: Changes, *,
                           tracking_key: str | None = None, position: int = 0) -> None:
        aggregates = list(touched.values())
        items = changes.items()
        if items:
            aggregates.append(ConsentChanges(items=items))
        if tracking_key is None:
            self.save_and_wake(*aggregates, writes=touched.writes)
        else:
            self.save_processed(*aggregates, tracking_key=tracking_key, position=position,
                                writes=touched.writes)

    # ---- following identity -----------------------------------------------------------
    def apply_resolved(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        touched = Unit()
        changes = Changes()
        for item in fresh:
            links = self._root(touched, item["profile_id"])
            for absorbed_id in item.get("merged_from", ()):
                self._fold(touched, absorbed_id, links, _probabilistic(item, absorbed_id))
            self._link(touched, links, item["identifiers"])
            self._learn_jurisdiction(links, item)
            if item["identifiers"]:
                self._apply_signals(touched, changes, links, item)
        self._save_with_changes(touched, changes, tracking_key=tracking_key,
                                position=fresh[-1]["position"])
        return len(fresh)

    def _apply_signals(self, touched, changes, links: ProfileLinks, item) -> None:
        """Consent carried by a tracked event, on its strongest identifier."""
        event = item["event"]
        context = event.get("context") if isinstance(event.get("context"), dict) else {}
        consent = context.get("consent") if isinstance(context.get("consent"), dict) else {}
        privacy = context.get("privacy") if isinstance(context.get("privacy"), dict) else {}
        anchor = tuple(item["identifiers"][0])
        at = event.get("timestamp") or utcnow_iso()
        preferences = consent.get("categoryPreferences")
        if isinstance(preferences, dict):
            self._apply_preferences(
                touched, changes, anchor, preferences, source=f"event:{item['source']}",
                jurisdiction=links.jurisdiction_or(self.settings.default_jurisdiction),
                collected_at=at, method="context.consent.categoryPreferences")
        tc_string = consent.get("tcString")
        if isinstance(tc_string, str):
            self._apply_tc_string(touched, changes, anchor, tc_string, item["source"], at)
        if privacy.get("gpc") is True:
            self._apply_gpc(touched, changes, anchor, f"event from {item['source']}", at)

    def apply_splits(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        """identity.profile_split: each part's identifiers (and the people matched in
        with them) leave the profile, so that its consent no longer speaks for them."""
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        touched = Unit()
        for item in fresh:
            split = self._links(touched, item["profile_id"])
            for part in item["parts"]:
                self._split_off(touched, split, part)
        self.save_processed(*touched.values(), tracking_key=tracking_key,
                            position=fresh[-1]["position"], writes=touched.writes)
        return len(fresh)

    def _split_off(self, touched: Unit, split: ProfileLinks, part: dict[str, Any]) -> None:
        nodes = {tuple(node.split(":", 1)) for node in part["identifiers"]}
        moved = [i for i in split.identifiers if tuple(i) in nodes]
        links = self._links(touched, part["profile_id"])
        if links is split:
            return
        if links.merged_into is not None:
            links.restore()
        split.separate(links.profile_id)
        if moved:
            split.unlink(moved)
            missing = links.missing(moved)
            if missing:
                links.link(missing)
        for matched_id in list(split.matched):  # a person matched in, leaving with the part
            matched = self._links(touched, matched_id)
            if any(tuple(i) in nodes for i in matched.identifiers):
                split.separate(matched_id)
                links.absorb(matched_id, True, [])
                matched.merge_into(links.profile_id)
        if moved:
            self._own(touched, moved, links.profile_id, move=True)

    def _root(self, touched: Unit, profile_id: str) -> ProfileLinks:
        links = self._links(touched, profile_id)
        while links.merged_into is not None:  # an absorbed id's event still in flight
            links = self._links(touched, links.merged_into)
        return links

    def _links(self, touched: Unit, profile_id: str) -> ProfileLinks:
        key = uuid.UUID(profile_id)
        if key not in touched:
            touched[key] = self.find(key) or ProfileLinks(profile_id)
        return touched[key]

    def _fold(self, touched: Unit, absorbed_id: str, survivor: ProfileLinks,
              probabilistic: bool) -> None:
        absorbed = self._links(touched, absorbed_id)
        if absorbed is survivor or absorbed.merged_into is not None:
            return  # folded already (a redelivery, or a chain seen before)
        if not probabilistic:
            missing = survivor.missing(absorbed.identifiers)
            if missing:
                survivor.link(missing)
        survivor.absorb(absorbed.profile_id, probabilistic, list(absorbed.matched))
        absorbed.merge_into(survivor.profile_id)

    def _link(self, touched: Unit, root: ProfileLinks, identifiers: list[list[str]]) -> None:
        """New identifiers join the person (of the profile's people) that one of the
        event's identifiers already belongs to; otherwise the profile's own."""
        people = self._people_links(touched, root)
        known = [i for i in identifiers if any(p.holds(i) for p in people)]
        owner = next((p for p in people for i in known if p.holds(i)), root)
        missing = [i for i in identifiers if i not in known]
        if not missing:
            return
        owner.link(missing)
        self._own(touched, missing, owner.profile_id)

    def _own(self, touched: Unit, identifiers: list[list[str]], profile_id: str,
             move: bool = False) -> None:
        """Record which profile each identifier belongs to (the first one, unless a split
        moves it): how a change of consent finds its person. A read-model row each, no
        read needed: the first writer wins."""
        table = self.rm.table("identifier_owners")
        rows = [(_node(i), profile_id) for i in identifiers]
        if move:
            touched.writes.add(f"UPDATE {table} SET profile_id = %s WHERE identifier = %s",
                               [(p, node) for node, p in rows])
        else:
            touched.writes.add(f"INSERT INTO {table} (identifier, profile_id) VALUES (%s, %s) "
                               "ON CONFLICT (identifier) DO NOTHING", rows)
        for node, _ in rows:
            if move or node not in touched.owners:
                touched.owners[node] = profile_id

    def _people_links(self, touched: Unit | None, root: ProfileLinks) -> list[ProfileLinks]:
        """The profile's own links, then those of each person matched into it."""
        people, queue, seen = [], [root], set()
        while queue:
            links = queue.pop(0)
            if links.profile_id in seen:
                continue
            seen.add(links.profile_id)
            people.append(links)
            for matched_id in links.matched:
                found = (self._links(touched, matched_id) if touched is not None
                         else self.find(uuid.UUID(matched_id)))
                if found is not None:
                    queue.append(found)
        return people

    def _learn_jurisdiction(self, links: ProfileLinks, item: dict[str, Any]) -> None:
        event = item["event"]
        traits = event.get("traits") if isinstance(event.get("traits"), dict) else None
        if traits is None:
            context = event.get("context") if isinstance(event.get("context"), dict) else {}
            traits = context.get("traits") if isinstance(context.get("traits"), dict) else {}
        explicit = traits.get("jurisdiction")
        if isinstance(explicit, str) and explicit.strip():
            # Unknown values are kept as given: deciding on them then denies.
            value = explicit.strip().upper()
            if links.jurisdiction != value:
                links.learn_jurisdiction(value, by="trait")
        configured = self.settings.source_jurisdictions.get(item["source"])
        if configured and links.source_jurisdiction is None:
            links.learn_jurisdiction(configured.strip().upper(), by="source")

    def _profile_of_identifier(self, touched: Unit, identifier: tuple[str, str]
                               ) -> ProfileLinks | None:
        node = _node(identifier)
        profile_id = touched.owners.get(node)
        if profile_id is None:
            rows = self.rm.query(f"SELECT profile_id FROM {self.rm.table('identifier_owners')} "
                                 "WHERE identifier = %s", (node,))
            if not rows:
                return None
            profile_id = rows[0]["profile_id"]
        return self._root(touched, profile_id)

    def _jurisdiction_of_identifier(self, touched: Unit, identifier: tuple[str, str]) -> str:
        links = self._profile_of_identifier(touched, identifier)
        default = self.settings.default_jurisdiction
        return default if links is None else links.jurisdiction_or(default)

    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """Erasure (services/consent/erasure.py): the keys of the person's links and of
        the consent records kept against each of their identifiers go. Decisions stay:
        they name profiles and purposes only."""
        named = {tuple(i) for i in identifiers}
        for profile_id in profile_ids:
            stream = _uuid_or_none(profile_id)
            links = self.find(stream) if stream is not None else None
            if isinstance(links, ProfileLinks):
                named.update(tuple(i) for i in links.identifiers)
        subjects = [subject_of_profile(p) for p in profile_ids]
        subjects += [subject_of_stream(record_id(t, v)) for t, v in named]
        subjects += [subject_of_identifier(t, v) for t, v in named]  # their requests
        hashes = {*(self.privacy.hashed(s) for s in subjects), *subject_hashes}
        shredded = self.shred_subjects_by_hash(hashes)
        owners = self.rm.table("identifier_owners")
        for node in sorted({_node(i) for i in named}):
            self.rm.execute(f"DELETE FROM {owners} WHERE identifier = %s", [node])
        for profile_id in profile_ids:
            self.rm.execute(f"DELETE FROM {owners} WHERE profile_id = %s", [profile_id])
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    # ---- deciding ---------------------------------------------------------------------
    def caught_up(self, after: dict[str, Any] | None) -> bool:
        if not after or not after.get("position"):
            return True
        key = IDENTITY_RESOLVED_KEY.format(partition=after["partition"])
        if self.tracked_position(key) >= after["position"]:
            return True
        # Another replica may own that partition: ask the database, not our memory, and
        # learn of the records that replica opened on the way.
        self._tracked[key] = self.process_recorder.max_tracking_id(key) or 0
        self._refresh_records_index(force=True)
        return self._tracked[key] >= after["position"]

    def decide_many(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide each (profile, destination, purposes); record every decision; deny by default."""
        for request in requests:
            if not self.caught_up(request.get("after")):
                raise NotCaughtUp(f"identity partition {request['after']['partition']}")
        batch_id = uuid.uuid4()
        decisions = []
        for index, request in enumerate(requests):
            verdict, jurisdiction = self._verdict(request)
            decisions.append({
                "decision_id": f"{batch_id}:{index}",
                "profile_id": request["profile_id"],
                "destination": request["destination"],
                "purposes": list(request["purposes"]),
                "jurisdiction": jurisdiction,
                "allowed": verdict.allowed,
                "reason": verdict.reason,
                "relied_on": verdict.relied_on,
                "decided_at": utcnow_iso(),
            })
        self.save_and_wake(DecisionBatch(batch_id=str(batch_id), decisions=decisions))
        return decisions

    def _verdict(self, request: dict[str, Any]):
        root = self._root_links(request["profile_id"])
        default = self.settings.default_jurisdiction
        jurisdiction = request.get("jurisdiction") or (
            root.jurisdiction_or(default) if root is not None else default)
        people = self._people_records(root)
        verdict = decide_for_people(list(request["purposes"]), people or [[]],
                                    self.catalogue.ids(), jurisdiction, KNOWN_JURISDICTIONS)
        return verdict, jurisdiction

    def _root_links(self, profile_id: str) -> ProfileLinks | None:
        try:
            links = self.repository.get(uuid.UUID(profile_id))
            while links.merged_into is not None:
                links = self.repository.get(uuid.UUID(links.merged_into))
        except (AggregateNotFoundError, ValueError):
            return None
        return links

    def _people_records(self, root: ProfileLinks | None) -> list[list[ConsentRecord]]:
        if root is None:
            return []
        self._refresh_records_index()
        people = []
        for links in self._people_links(None, root):
            records = []
            for identifier_type, value in links.identifiers:
                key = record_id(identifier_type, value)
                # In the index but not found: its save failed after the index heard of it.
                record = self.find(key) if key in self._with_records else None
                if record is not None:
                    records.append(record)
            people.append(records)
        return people

    # ---- queries ----------------------------------------------------------------------
    def consent_of(self, profile_id: str) -> dict[str, Any]:
        root = self._root_links(profile_id)
        records = [r for person in self._people_records(root) for r in person]
        return {"profile_id": profile_id,
                "jurisdiction": (root.jurisdiction_or(self.settings.default_jurisdiction)
                                 if root is not None else self.settings.default_jurisdiction),
                "records": [{"record": str(r.id), "identifier_type": r.identifier_type,
                             "regulations": r.regulations, "restriction": r.restriction}
                            for r in records]}

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        batch_id, _, index = decision_id.partition(":")
        try:
            batch = self.repository.get(uuid.UUID(batch_id))
            return batch.decisions[int(index)]
        except (AggregateNotFoundError, ValueError, IndexError):
            return None

    def purposes(self) -> list[dict[str, Any]]:
        return self.catalogue.public()


class Unit(dict):
    """The aggregates one save touches (by id), with its read-model writes and the owners
    of identifiers it linked (not in the table until it commits)."""

    def __init__(self):
        super().__init__()
        self.writes = Writes()
        self.owners: dict[str, str] = {}


def _node(identifier) -> str:
    return f"{identifier[0]}:{identifier[1]}"


class Changes:
    """Changes of one save, one item per (profile, kind, jurisdiction), purposes merged."""

    def __init__(self):
        self._items: dict[tuple[str, str, str | None], dict[str, Any]] = {}

    def add(self, links: ProfileLinks, kind: str, purposes: list[str],
            jurisdiction: str | None) -> None:
        key = (links.profile_id, kind, jurisdiction)
        item = self._items.setdefault(key, {
            "profile_id": links.profile_id,
            "profile_ids": [links.profile_id, *links.absorbed],
            "change": kind, "purposes": [], "jurisdiction": jurisdiction, "at": utcnow_iso()})
        item["purposes"] = sorted(set(item["purposes"]) | set(purposes))

    def items(self) -> list[dict[str, Any]]:
        return list(self._items.values())


def _record_ids(touched: Unit) -> list[str]:
    return sorted(str(k) for k, a in touched.items() if isinstance(a, ConsentRecord))


def _probabilistic(item: dict[str, Any], absorbed_id: str) -> bool:
    """Identity names each merge's rule; only `seen_together` (one event, one person) is
    deterministic. Items from before rules were named were all deterministic."""
    for merge in item.get("merges") or ():
        if merge.get("absorbed") == absorbed_id:
            return merge.get("rule") not in DETERMINISTIC_RULES
    return False

def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
