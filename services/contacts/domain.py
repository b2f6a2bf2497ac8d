"""The profile as contacts keeps it: traits, groups, and a bounded recent timeline.

The full timeline lives in the profile's own event stream (`EventsRecorded`), so loading
a profile never replays more than its snapshot and the events since.

Every trait value keeps its source and time (`trait_values`); `traits` holds the values
that survived under the contacts policy (services/contacts/policy.py). Lifecycle stage
changes, deals, tickets, account links and notes are events of the profile, each with
its cause.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from services.contacts.policy import ContactsPolicy, StageRule
from services.contacts.sales import sales_traits

RECENT_EVENTS = 20
TIMELINE_TYPES = frozenset({"track", "page", "screen"})


def summarise(event_: dict[str, Any]) -> dict[str, Any]:
    """What a timeline entry keeps of an event."""
    kind = event_.get("type")
    name = event_.get("event") if kind == "track" else event_.get("name")
    return {
        "type": kind,
        "event": name,
        "timestamp": event_.get("timestamp"),
        "messageId": event_.get("messageId"),
        "properties": event_.get("properties") or {},
    }


class Profile(Aggregate):
    @event("Created")
    def __init__(self, profile_id: str):
        self.profile_id = profile_id
        self.traits: dict[str, Any] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.events_total = 0
        self.last_seen: str | None = None
        self.recent: list[dict[str, Any]] = []
        self.merged_into: str | None = None
        self.absorbed: list[str] = []
        # trait -> source -> {"value", "at"}: every source's latest say, winners or not.
        self.trait_values: dict[str, dict[str, dict[str, Any]]] = {}
        self.stage: str | None = None
        self.stage_history: list[dict[str, Any]] = []
        self.accounts: dict[str, str] = {}  # account (group) id -> role
        self.deals: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.notes_total = 0

    @staticmethod
    def create_id(profile_id: str) -> uuid.UUID:
        return uuid.UUID(profile_id)

    def changed_traits(self, traits: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in traits.items() if self.traits.get(k, _MISSING) != v}

    @event("TraitsUpdated")
    def update_traits(self, traits: dict[str, Any]) -> None:
        self.traits.update(traits)

    # ---- survivorship -------------------------------------------------------------------
    def observe(self, traits: dict[str, Any], source: str, at: str | None,
                policy: ContactsPolicy) -> dict[str, Any]:
        """Record what `source` says at `at`; returns the traits whose winning value changed.

        A source repeating what it said before records nothing unless, being newer, it
        would now win.
        """
        observations, winners = [], {}
        for trait, value in traits.items():
            before = self.trait_values.get(trait, {})
            said = before.get(source)
            after = {**before, source: {"value": value, "at": at}}
            winner = policy.winner(trait, after)
            if said is not None and said["value"] == value and winner == policy.winner(
                    trait, before):
                continue
            observations.append({"trait": trait, "source": source, "value": value, "at": at})
            if self.traits.get(trait, _MISSING) != after[winner]["value"]:
                winners[trait] = after[winner]["value"]
        if observations:
            self.record_trait_values(observations, winners)
        return winners

    @event("TraitValuesRecorded")
    def record_trait_values(self, observations: list[dict[str, Any]],
                            winners: dict[str, Any]) -> None:
        for seen in observations:
            self.trait_values.setdefault(seen["trait"], {})[seen["source"]] = {
                "value": seen["value"], "at": seen["at"]}
        self.traits.update(winners)

    @event("TraitValuesAbsorbed")
    def absorb_trait_values(self, trait_values: dict[str, dict[str, dict[str, Any]]]) -> None:
        # Behind the survivor's own: a later observation may bring one of them forward.
        for trait, by_source in trait_values.items():
            mine = self.trait_values.setdefault(trait, {})
            for source, said in by_source.items():
                mine.setdefault(source, said)

    def trait_sources(self) -> dict[str, list[dict[str, Any]]]:
        """Per trait, every source's value, the winner (the value in `traits`) first."""
        shown = {}
        for trait, by_source in self.trait_values.items():
            entries = [{"source": source, **said} for source, said in by_source.items()]
            entries.sort(key=lambda e: e.get("at") or "", reverse=True)
            entries.sort(key=lambda e: e["value"] != self.traits.get(trait, _MISSING))
            shown[trait] = entries
        return shown

    # ---- lifecycle ---------------------------------------------------------------------
    def consider_stage(self, target: str, cause: dict[str, Any], policy: ContactsPolicy,
                       backwards: bool = False) -> bool:
        """Move to `target` if it is further on, or if the cause may move it back."""
        if not policy.is_stage(target) or target == self.stage:
            return False
        if not backwards and policy.stage_index(target) < policy.stage_index(self.stage):
            return False
        self.change_stage(target, self.stage, cause)
        return True

    def apply_stage_rules(self, rules: tuple[StageRule, ...], policy: ContactsPolicy,
                          event_name: str | None, properties: dict[str, Any],
                          changed_traits: dict[str, Any], at: str | None) -> None:
        for rule in rules:
            if event_name is not None:
                target = rule.target_for_event(event_name, properties)
            else:
                target = rule.target_for_traits(changed_traits)
            if target is not None:
                self.consider_stage(target, {"kind": "rule", "rule": rule.describe(),
                                             "at": at}, policy, backwards=rule.backwards)

    @event("StageChanged")
    def change_stage(self, stage: str, previous: str | None, cause: dict[str, Any]) -> None:
        self.stage = stage
        self.stage_history.append({"stage": stage, "previous": previous, "cause": cause})

    # ---- accounts, deals, tickets, notes -------------------------------------------------
    @event("AccountLinked")
    def link_account(self, account_id: str, role: str) -> None:
        self.accounts[account_id] = role

    @event("DealRecorded")
    def record_deal(self, deal: dict[str, Any]) -> None:
        self.deals[deal["deal_id"]] = deal

    @event("TicketRecorded")
    def record_ticket(self, ticket: dict[str, Any]) -> None:
        self.tickets[ticket["ticket_id"]] = ticket

    @event("SalesContextAbsorbed")
    def absorb_sales_context(self, deals: dict[str, Any], tickets: dict[str, Any],
                             accounts: dict[str, str]) -> None:
        for deal_id, deal in deals.items():
            self.deals.setdefault(deal_id, deal)
        for ticket_id, ticket in tickets.items():
            self.tickets.setdefault(ticket_id, ticket)
        for account_id, role in accounts.items():
            self.accounts.setdefault(account_id, role)

    @event("NoteAdded")
    def add_note(self, text: str, author: str, at: str) -> None:
        self.notes_total += 1

    def announced_traits(self) -> dict[str, Any]:
        """What `contacts.profile_changed` carries: winning traits plus what contacts derives."""
        traits = dict(self.traits)
        traits.update(sales_traits(self.deals, self.tickets))
        if self.stage is not None:
            traits["lifecycle_stage"] = self.stage
        if self.accounts:
            traits["account_ids"] = sorted(self.accounts)
        return traits

    @event("EventsRecorded")
    def record_events(self, entries: list[dict[str, Any]]) -> None:
        self.events_total += len(entries)
        self.recent = (self.recent + entries)[-RECENT_EVENTS:]
        stamps = [e["timestamp"] for e in entries if e.get("timestamp")]
        if stamps:
            self.last_seen = max([*stamps, self.last_seen or ""])

    @event("GroupJoined")
    def join_group(self, group_id: str, traits: dict[str, Any]) -> None:
        self.groups.setdefault(group_id, {}).update(traits)

    @event("Absorbed")
    def absorb(self, profile_id: str, traits: dict[str, Any], events_total: int) -> None:
        # The survivor's own values win; the absorbed profile only fills gaps.
        for key, value in traits.items():
            self.traits.setdefault(key, value)
        self.events_total += events_total
        self.absorbed.append(profile_id)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id

    @event("PartReleased")
    def release(self, profile_id: str) -> None:
        """Identity split a part off: a profile merged in earlier is no longer ours; its
        timeline goes. (Its traits go too: see `without_part` and `separate`.)"""
        if profile_id in self.absorbed:
            self.absorbed.remove(profile_id)

    def without_part(self, part: Profile, policy: ContactsPolicy
                     ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
        """Trait values and winning traits once what `part` brought in the merge is out.

        The part's own record (frozen when it was merged) says what it brought: each
        (source, value, time) it held is taken out of ours, and each trait wins again
        among what is left. A trait only the part gave us goes. What its identifiers said
        after the merge landed here and cannot be told apart: it stays.
        """
        values = {trait: {source: dict(said) for source, said in by_source.items()}
                  for trait, by_source in self.trait_values.items()}
        for trait, by_source in part.trait_values.items():
            mine = values.get(trait, {})
            for source, said in by_source.items():
                if mine.get(source) == said:
                    del mine[source]
            if not mine:
                values.pop(trait, None)
        traits = {}
        for trait, value in self.traits.items():
            if trait in values:
                traits[trait] = values[trait][policy.winner(trait, values[trait])]["value"]
            elif trait in self.trait_values:
                continue  # every value of it was the part's
            elif part.traits.get(trait, _MISSING) != value:
                traits[trait] = value  # set without a source (a person's edit): ours
        return values, traits

    @event("PartSeparated")
    def separate(self, profile_id: str, trait_values: dict[str, dict[str, dict[str, Any]]],
                 traits: dict[str, Any], deal_ids: list[str], ticket_ids: list[str]) -> None:
        """A part split off, taking what it brought: traits, deals and tickets."""
        if profile_id in self.absorbed:
            self.absorbed.remove(profile_id)
        self.trait_values = trait_values
        self.traits = traits
        for deal_id in deal_ids:
            self.deals.pop(deal_id, None)
        for ticket_id in ticket_ids:
            self.tickets.pop(ticket_id, None)

    @event("Restored")
    def restore(self, split_from: str) -> None:
        self.merged_into = None

    def view(self) -> dict[str, Any]:
        return {
            "profile_id": self.profile_id,
            "traits": self.traits,
            "groups": self.groups,
            "events_total": self.events_total,
            "last_seen": self.last_seen,
            "recent_events": self.recent,
            "merged_into": self.merged_into,
            "absorbed": self.absorbed,
            "trait_sources": self.trait_sources(),
            "lifecycle_stage": self.stage,
            "stage_history": self.stage_history,
            "accounts": self.accounts,
            "deals": self.deals,
            "tickets": self.tickets,
            "sales": sales_traits(self.deals, self.tickets),
            "notes_total": self.notes_total,
        }


_MISSING = object()


class Account(Aggregate):
    """An account (company) as people change it through the API; group calls and CRM pulls
    reach the directory through the profiles that joined it."""

    @event("Created")
    def __init__(self, account_id: str):
        self.account_id = account_id
        self.traits: dict[str, Any] = {}

    @staticmethod
    def create_id(account_id: str) -> uuid.UUID:
        return uuid.uuid5(ACCOUNT_NAMESPACE, account_id)

    @event("Updated")
    def update(self, traits: dict[str, Any], author: str, at: str) -> None:
        self.traits.update(traits)


ACCOUNT_NAMESPACE = uuid.UUID("6d1f6a52-8c1e-4c55-9a43-3f1f0e0c7a10")


class ChangeBatch(Aggregate):
    """What one consumed batch changed: the outbox of `contacts.profile_changed`."""

    @event("ProfilesChanged")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
