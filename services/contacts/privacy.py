"""Whose personal data contacts' stored events hold (shared.privacy).

A profile's stream belongs to its profile; when it absorbs another profile, the traits
that come with it are sealed under the absorbed profile's key. Accounts are companies.
"""

from __future__ import annotations

from services.contacts.domain import Account, ChangeBatch, Profile
from shared.privacy import PLAIN, Items, Own, profile_stream

_PROFILE = Own(subject=profile_stream)

RULES = {
    Profile.Created: Own(keep=("profile_id",), subject=profile_stream),
    Profile.TraitsUpdated: _PROFILE,
    Profile.TraitValuesRecorded: _PROFILE,
    Profile.TraitValuesAbsorbed: _PROFILE,
    Profile.StageChanged: Own(keep=("stage", "previous"), subject=profile_stream),
    Profile.AccountLinked: Own(keep=("account_id", "role"), subject=profile_stream),
    Profile.DealRecorded: _PROFILE,
    Profile.TicketRecorded: _PROFILE,
    Profile.SalesContextAbsorbed: _PROFILE,
    Profile.NoteAdded: Own(keep=("at",), subject=profile_stream),
    Profile.EventsRecorded: _PROFILE,
    Profile.GroupJoined: Own(keep=("group_id",), subject=profile_stream),
    Profile.Absorbed: Own(keep=("profile_id", "events_total"), subject=profile_stream,
                          others=(("traits", "profile_id"),)),
    Profile.MergedInto: Own(keep=("survivor_id",), subject=profile_stream),
    Profile.PartReleased: Own(keep=("profile_id",), subject=profile_stream),
    Profile.PartSeparated: Own(keep=("profile_id", "deal_ids", "ticket_ids"),
                               subject=profile_stream),
    Profile.Restored: Own(keep=("split_from",), subject=profile_stream),
    Account.Created: PLAIN,
    Account.Updated: PLAIN,
    ChangeBatch.ProfilesChanged: Items(),
}
