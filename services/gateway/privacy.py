"""Whose personal data the gateway's stored events hold (shared.privacy).

Before identity there is no profile yet: an accepted event belongs to its strongest
identifier, normalised as identity does (`userId`, else `anonymousId`). Rejections keep
only a redacted copy (services/gateway/domain.py) and stay readable.
"""

from __future__ import annotations

from typing import Any

from services.gateway.application import IngestRequest, StoredCredential
from services.gateway.subject_log import PersonViewed
from shared.privacy import PLAIN, Items, subject_of_identifier


def subject_of_event(event: dict[str, Any]) -> str:
    for kind, key in (("user_id", "userId"), ("anonymous_id", "anonymousId")):
        value = event.get(key)
        if value not in (None, ""):
            return subject_of_identifier(kind, str(value).strip())
    return f"message:{event.get('messageId')}"


RULES = {
    IngestRequest.Received: Items(field="accepted", subject=subject_of_event,
                                  keep=("messageId",)),
    # Who looked at which profile ids: pseudonymous ids and the viewer, no personal data.
    PersonViewed.Viewed: PLAIN,
    # Write keys and API tokens: digests, sources and operators, no data subject.
    StoredCredential.Issued: PLAIN,
    StoredCredential.Revoked: PLAIN,
}
