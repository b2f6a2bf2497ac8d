"""Contacts' application: fold resolved events into profiles, keep the contact directory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from services.contacts.directory import Directory, DirectoryChanges, RecentlyWritten
from services.contacts.domain import TIMELINE_TYPES, Account, ChangeBatch, Profile, summarise
from services.contacts.policy import RECTIFICATION_SOURCE, ContactsPolicy
from services.contacts.sales import deal_of, ticket_of
from shared.partitions import partition_of
from shared.privacy import subject_of_profile
from shared.store import ServiceApplication

DEFAULT_ROLE = "member"
API_SOURCE = "api"
EXPORT_TIMELINE_LIMIT = 1_000_000


class ContactError(ValueError):
    """A command that cannot be carried out; names the field and the rule."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, f"{field}: {message}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class _NotFound(Exception):
    pass


class ContactsApplication(ServiceApplication):
    service_name = "contacts"
    written_once = (ChangeBatch,)
    privacy_rules = "services.contacts.privacy:RULES"
    name = "contacts"

    def __init__(self, settings, env: dict[str, str] | None = None, *,
                 policy: ContactsPolicy | None = None):
        # A merge across partitions has two partitions' workers write the same profiles
        # (the survivor's marks the absorbed one merged; the absorbed one's in-flight
        # events land on the survivor). Each worker must change a copy of its own, so that
        # the loser of such a race fails on the version check and retries on fresh state,
        # instead of both mutating one shared cached object (which stored version gaps).
        super().__init__(settings, {"DEEPCOPY_FROM_AGGREGATE_CACHE": "y"} | (env or {}))
        self.policy = policy if policy is not None else ContactsPolicy.from_env()
        self.directory = Directory(self.read_model())
        self.directory.create()
        self.recently_written = RecentlyWritten()
        # A batch and a person's command on the same profile must not interleave (each saves
        # the pending changes of the profiles it holds). Profiles are partitioned, so one lock
        # per partition: batches of different partitions still overlap their database waits.
        self._partition_locks: dict[str, threading.RLock] = {}
        self._accounts_lock = threading.RLock()

    def _lock_of(self, partition: str) -> threading.RLock:
        return self._partition_locks.setdefault(partition, threading.RLock())

    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """Erasure (services/consent/erasure.py): the profiles' keys go, and so do their
        directory rows (searchable, hence readable: they are purged, not shredded)."""
        rm = self.directory.rm
        for profile_id in profile_ids:
            for table in ("contacts", "contact_identifiers", "contact_accounts",
                          "account_activity"):
                rm.execute(f"DELETE FROM {rm.table(table)} WHERE profile_id = %s",
                           (profile_id,))
        self.recently_written.forget()
        hashes = {*(self.privacy.hashed(subject_of_profile(p)) for p in profile_ids),
                  *subject_hashes}
        shredded = self.shred_subjects_by_hash(hashes)
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    def apply_batch(self, tracking_key: str, partition: str, items: list[dict[str, Any]]) -> int:
        with self._lock_of(partition):
            return self._apply_batch(tracking_key, partition, items)

    def _apply_batch(self, tracking_key: str, partition: str,
                     items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        unit = _Unit(self)
        directory = DirectoryChanges(self.directory.rm, self.recently_written)
        pending_timeline: dict[str, list[dict[str, Any]]] = {}
        changes = []
        for item in fresh:
            survivor = unit.current(item["profile_id"])
            # What each record looked like before the merge: a CRM finds its records by it.
            merged_profiles = [{"profile_id": survivor.profile_id,
                                "traits": dict(survivor.traits)}]
            for absorbed_id in item.get("merged_from", ()):
                folded = self._fold(unit, absorbed_id, survivor, pending_timeline, directory)
                if folded is not None:
                    merged_profiles.append({"profile_id": absorbed_id, "traits": folded})
            change = self._apply(survivor, item, pending_timeline, directory)
            changes.append({
                "profile_id": survivor.profile_id,
                "traits": survivor.announced_traits(),
                "event": change,
                "merged_from": list(item.get("merged_from", ())),
                "merged_profiles": merged_profiles if len(merged_profiles) > 1 else [],
                "cause": {"partition": partition, "position": item["position"]},
                "received_at": item["event"].get("receivedAt"),
            })
        for profile_id, entries in pending_timeline.items():
            unit.profiles[profile_id].record_events(entries)
        try:
            self.save_processed(
                *unit.profiles.values(), ChangeBatch(items=changes),
                tracking_key=tracking_key, position=fresh[-1]["position"],
                writes=directory.writes(unit.profiles.values()),
            )
        except Exception:
            self.recently_written.forget()
            raise
        directory.saved()
        return len(fresh)

    def _apply(self, profile: Profile, item: dict[str, Any], timeline: dict[str, list],
               directory: DirectoryChanges) -> dict | None:
        event = item["event"]
        kind = event.get("type")
        at = event.get("timestamp") or event.get("receivedAt")
        directory.saw_identifiers(profile.profile_id, item.get("identifiers") or ())
        traits = event.get("traits") if kind == "identify" else None
        traits = traits or (event.get("context") or {}).get("traits")
        if isinstance(traits, dict) and traits:
            winners = profile.observe(traits, item.get("source") or "unknown", at, self.policy)
            if winners:
                profile.apply_stage_rules(self.policy.stage_rules, self.policy, None, {},
                                          winners, at)
        if kind == "group" and event.get("groupId"):
            self._join_account(profile, event, at or "", directory)
        if kind not in TIMELINE_TYPES:
            return None
        entry = summarise(event)
        timeline.setdefault(profile.profile_id, []).append(entry)
        if kind == "track":
            self._record_sales_context(profile, event, entry, directory)
            profile.apply_stage_rules(self.policy.stage_rules, self.policy, event.get("event"),
                                      event.get("properties") or {}, {}, at)
        return entry

    @staticmethod
    def _join_account(profile: Profile, event: dict[str, Any], at: str,
                      directory: DirectoryChanges) -> None:
        account_id = str(event["groupId"])
        group_traits = event.get("traits") or {}
        profile.join_group(account_id, group_traits)
        # Segment's group call has no role; a CRM source sends the contact's role in the
        # account (HubSpot association label, Salesforce AccountContactRelation.Roles) here.
        role = str((event.get("context") or {}).get("role") or
                   profile.accounts.get(account_id) or DEFAULT_ROLE)
        if profile.accounts.get(account_id) != role:
            profile.link_account(account_id, role)
        directory.saw_account(account_id, group_traits, at)

    @staticmethod
    def _record_sales_context(profile: Profile, event: dict[str, Any], entry: dict[str, Any],
                              directory: DirectoryChanges) -> None:
        deal, ticket = deal_of(event), ticket_of(event)
        if deal is not None and profile.deals.get(deal["deal_id"]) != deal:
            profile.record_deal(deal)
        if ticket is not None and profile.tickets.get(ticket["ticket_id"]) != ticket:
            profile.record_ticket(ticket)
        context = deal or ticket
        if context is None:
            return
        accounts = [context["account_id"]] if context["account_id"] else list(profile.accounts)
        for account_id in accounts:
            directory.account_event(account_id, profile.profile_id, entry)

    def _fold(self, unit: _Unit, absorbed_id: str, survivor: Profile, timeline: dict,
              directory: DirectoryChanges) -> dict[str, Any] | None:
        """Fold the absorbed profile into the survivor; its traits from before, or None
        when it was folded already."""
        # Created if unseen: its own events may still be in flight on another partition.
        absorbed = unit.get_or_create(absorbed_id)
        if absorbed.merged_into is not None or absorbed is survivor:
            return None
        traits_before = dict(absorbed.traits)
        # Entries of this very batch not yet recorded on the absorbed profile move over.
        timeline.setdefault(survivor.profile_id, []).extend(timeline.pop(absorbed_id, []))
        survivor.absorb(absorbed_id, dict(absorbed.traits), absorbed.events_total)
        absorbed.merge_into(survivor.profile_id)
        if absorbed.trait_values:
            survivor.absorb_trait_values(absorbed.trait_values)
        if absorbed.deals or absorbed.tickets or absorbed.accounts:
            survivor.absorb_sales_context(absorbed.deals, absorbed.tickets, absorbed.accounts)
        if absorbed.stage is not None:
            # A merge shows the person got that far: the further of the two stages stands.
            survivor.consider_stage(absorbed.stage, {"kind": "merge", "from": absorbed_id},
                                    self.policy)
        directory.merged(absorbed_id, survivor.profile_id)
        return traits_before

    # ---- commands from people (API, CLI) ----------------------------------------------
    def update_contact(self, profile_id: str, traits: dict[str, Any], author: str,
                       source: str = API_SOURCE) -> dict[str, Any] | None:
        """Traits set by a person: a source like any other, ranked by the same policy."""
        def change(profile: Profile) -> None:
            at = _now()
            winners = profile.observe(traits, source, at, self.policy)
            if winners:
                profile.apply_stage_rules(self.policy.stage_rules, self.policy, None, {},
                                          winners, at)
        return self._command(profile_id, change)

    def set_stage(self, profile_id: str, stage: str, author: str) -> dict[str, Any] | None:
        """A person may move a contact to any stage, backwards too; the cause says who."""
        if not self.policy.is_stage(stage):
            raise ContactError("stage", f"'{stage}' is not one of {list(self.policy.stages)}")
        return self._command(profile_id, lambda profile: profile.consider_stage(
            stage, {"kind": "person", "author": author, "at": _now()}, self.policy,
            backwards=True))

    def add_note(self, profile_id: str, text: str, author: str) -> dict[str, Any] | None:
        return self._command(profile_id, lambda profile: profile.add_note(text, author, _now()))

    def link_account(self, profile_id: str, account_id: str, role: str,
                     author: str) -> dict[str, Any] | None:
        def change(profile: Profile) -> None:
            if profile.accounts.get(account_id) != role:
                profile.link_account(account_id, role)
        return self._command(profile_id, change)

    def bulk_update(self, updates: list[dict[str, Any]], author: str) -> dict[str, Any]:
        """Each update: {profile_id, traits?, stage?}; one save per contact found."""
        for index, update in enumerate(updates):
            stage = update.get("stage")
            if stage is not None and not self.policy.is_stage(stage):
                raise ContactError(f"updates[{index}].stage",
                                   f"'{stage}' is not one of {list(self.policy.stages)}")
        updated, missing = 0, []
        for update in updates:
            found = None
            if update.get("traits"):
                found = self.update_contact(update["profile_id"], update["traits"], author)
            if update.get("stage"):
                found = self.set_stage(update["profile_id"], update["stage"], author)
            if found is None:
                missing.append(update["profile_id"])
            else:
                updated += 1
        return {"updated": updated, "missing": missing}

    def update_account(self, account_id: str, traits: dict[str, Any],
                       author: str) -> dict[str, Any]:
        def update_and_save() -> None:
            account = self.find(Account.create_id(account_id)) or Account(account_id=account_id)
            at = _now()
            account.update(traits, author, at)
            changes = DirectoryChanges(self.directory.rm)
            changes.saw_account(account_id, traits, at)
            self.save_and_wake(account, writes=changes.writes(()))

        with self._accounts_lock:
            self._save_retrying(update_and_save)
        return self.directory.account(account_id) or {}

    def _command(self, profile_id: str, change: Callable[[Profile], Any]) -> dict | None:
        try:
            # The survivor's partition owns a merged profile (DESIGN §3).
            owner = partition_of(self._current(profile_id).profile_id, self.settings.partitions)
            with self._lock_of(owner):
                return self._save_retrying(lambda: self._change_and_save(profile_id, change))
        except _NotFound:
            return None

    def _change_and_save(self, profile_id: str, change: Callable[[Profile], Any]) -> dict:
        profile = self._current(profile_id)
        change(profile)
        if profile.pending_events:
            announced = ChangeBatch(items=[{
                "profile_id": profile.profile_id, "traits": profile.announced_traits(),
                "event": None, "merged_from": [],
                "cause": {"partition": partition_of(profile.profile_id,
                                                    self.settings.partitions), "position": 0},
                "received_at": None}])
            changes = DirectoryChanges(self.directory.rm, self.recently_written)
            try:
                self.save_and_wake(profile, announced, writes=changes.writes([profile]))
            except Exception:
                self.recently_written.forget()
                raise
            changes.saved()
        return profile.view()

    def _current(self, profile_id: str) -> Profile:
        try:
            profile = self.repository.get(uuid.UUID(profile_id))
            while profile.merged_into is not None:
                profile = self.repository.get(uuid.UUID(profile.merged_into))
        except (AggregateNotFoundError, ValueError):
            raise _NotFound from None
        return profile

    def _save_retrying(self, attempt: Callable[[], Any]) -> Any:
        # Another replica (the partition's consumer) may have changed the profile since
        # this one cached it: the save fails on the version, the cache goes, try again.
        try:
            return attempt()
        except IntegrityError:
            return attempt()

    # ---- directory queries -------------------------------------------------------------
    def search(self, **criteria: Any) -> list[dict[str, Any]]:
        try:
            return self.directory.search(**criteria)
        except ValueError as error:
            raise ContactError("search", str(error).removeprefix("search: ")) from None

    def account(self, account_id: str) -> dict[str, Any] | None:
        return self.directory.account(account_id)

    def search_accounts(self, name: str) -> list[dict[str, Any]]:
        return self.directory.search_accounts(name)

    def account_timeline(self, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.directory.account_timeline(account_id, limit)

    def apply_splits(self, tracking_key: str, partition: str, items: list[dict[str, Any]]
                     ) -> int:
        """Follow identity's splits: a part that was a profile merged in earlier gets its
        own profile (and timeline) back; a new part starts as a profile of its own; each
        part's identifiers find it again in the directory. Every profile involved is
        announced as changed, so that segments look at it again."""
        with self._lock_of(partition):
            fresh = self.fresh_items(tracking_key, items)
            if not fresh:
                return 0
            unit = _Unit(self)
            directory = DirectoryChanges(self.directory.rm, self.recently_written)
            changes = []
            for item in fresh:
                split = unit.get_or_create(item["profile_id"])
                for part in item["parts"]:
                    separated = unit.get_or_create(part["profile_id"])
                    if part["profile_id"] in split.absorbed:
                        # A profile merged in earlier takes back what it brought.
                        trait_values, traits = split.without_part(separated, self.policy)
                        split.separate(part["profile_id"], trait_values, traits,
                                       sorted(separated.deals), sorted(separated.tickets))
                    else:
                        split.release(part["profile_id"])
                    if separated.merged_into is not None:
                        separated.restore(item["profile_id"])
                    directory.split(item["profile_id"], part["profile_id"],
                                    [tuple(node.split(":", 1)) for node in part["identifiers"]])
                for profile_id in (item["profile_id"], *(p["profile_id"] for p in item["parts"])):
                    changes.append({
                        "profile_id": profile_id,
                        "traits": unit.profiles[profile_id].announced_traits(),
                        "event": None, "merged_from": [], "split_from": item["profile_id"],
                        # Position 0: a split changes no consent link, nothing to wait for.
                        "cause": {"partition": partition, "position": 0}, "received_at": None})
            try:
                self.save_processed(*unit.profiles.values(), ChangeBatch(items=changes),
                                    tracking_key=tracking_key, position=fresh[-1]["position"],
                                    writes=directory.writes(unit.profiles.values()))
            except Exception:
                self.recently_written.forget()
                raise
            directory.saved()
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
                elif isinstance(stored, Profile.NoteAdded):
                    entries.append({"type": "note", "event": "Note", "text": stored.text,
                                    "author": stored.author, "timestamp": stored.at})
        entries.sort(key=lambda entry: entry.get("timestamp") or "", reverse=True)
        return entries[:limit]

    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """Each of the person's current profiles: traits with every source's value, stage
        history, accounts, deals, tickets, and the whole timeline (events and notes)."""
        profiles, seen = [], set()
        for profile_id in profile_ids:
            view = self.profile(profile_id)
            if view is None or view["profile_id"] in seen:
                continue
            seen.add(view["profile_id"])
            timeline = self.timeline(view["profile_id"], limit=EXPORT_TIMELINE_LIMIT) or []
            profiles.append({**view, "timeline": timeline})
        return {"service": "contacts", "profiles": profiles}

    def rectify(self, profile_id: str, traits: dict[str, Any], request_id: str
                ) -> dict[str, Any] | None:
        """A data subject's corrected traits, from the `dsr` source, which outranks every
        other source (contacts.policy): a later import or CRM pull does not undo them."""
        return self.update_contact(profile_id, traits, f"dsr:{request_id}",
                                   source=RECTIFICATION_SOURCE)

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        try:
            found = self.repository.get(uuid.UUID(profile_id))
        except (AggregateNotFoundError, ValueError):
            return None
        while found.merged_into is not None:
            found = self.repository.get(uuid.UUID(found.merged_into))
        return found.view()
