"""Who may call what: permissions, roles, credentials and rate limits (stdlib only).

Every route of the public API declares one permission (see ``services.gateway.guard``);
a caller's role grants a set of permissions. Two permissions are not granted by roles:

- ``TRACK``: the tracking API, authenticated by a source's write key (Basic auth user
  or ``writeKey`` in the body), rate limited per key;
- ``PUBLIC``: no credential at all (health, the OpenAPI description, a one-click
  unsubscribe link, whose token is its own credential).

Secrets are never kept as they are: a credential is known by the SHA-256 digest of its
secret (secrets are random, 128 bits or more, so a plain digest is not guessable), and
by an id that is safe to show, log and revoke by.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    PUBLIC = "public"
    TRACK = "track"
    PROFILES_READ = "profiles:read"
    HISTORY_READ = "history:read"  # a person's or an account's event timeline
    CONTACTS_WRITE = "contacts:write"
    IDENTITY_READ = "identity:read"
    IDENTITY_WRITE = "identity:write"
    SEGMENTS_READ = "segments:read"
    SEGMENTS_WRITE = "segments:write"
    DESTINATIONS_READ = "destinations:read"
    DESTINATIONS_WRITE = "destinations:write"  # replaying dead letters
    CONSENT_READ = "consent:read"  # consent records and decisions
    CONSENT_WRITE = "consent:write"  # recording consent on a person's behalf (admin API)
    PRIVACY_READ = "privacy:read"  # suppression lists, erasure ledgers, privacy settings
    PRIVACY_WRITE = "privacy:write"  # privacy configuration (retention, jurisdictions…)
    AUDIT_READ = "audit:read"
    DSR_READ = "dsr:read"  # data subject requests
    DSR_HANDLE = "dsr:handle"  # filing and handling them (access, erasure, objection)
    REJECTIONS_READ = "rejections:read"
    OPERATIONS_READ = "operations:read"  # pipeline status and figures
    CREDENTIALS_ADMIN = "credentials:admin"  # write keys and API tokens


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    COMPLIANCE = "compliance"


_GRANTED_BY_ROLES = frozenset(Permission) - {Permission.PUBLIC, Permission.TRACK}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _GRANTED_BY_ROLES,
    # Audiences and where they go: no compliance pages, no configuration of access.
    Role.MARKETER: frozenset({
        Permission.PROFILES_READ, Permission.HISTORY_READ, Permission.SEGMENTS_READ,
        Permission.SEGMENTS_WRITE, Permission.DESTINATIONS_READ,
        Permission.OPERATIONS_READ}),
    # Reads everything that happened, files and handles data subject requests, changes
    # no configuration.
    Role.COMPLIANCE: frozenset({
        Permission.PROFILES_READ, Permission.HISTORY_READ, Permission.IDENTITY_READ,
        Permission.SEGMENTS_READ, Permission.DESTINATIONS_READ, Permission.CONSENT_READ,
        Permission.PRIVACY_READ, Permission.AUDIT_READ, Permission.DSR_READ,
        Permission.DSR_HANDLE, Permission.REJECTIONS_READ, Permission.OPERATIONS_READ}),
}

CREDENTIAL_NAMESPACE = uuid.UUID("6f0c3a52-8d7e-4c1b-9a41-2b7f3e5d9c10")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def credential_id(secret_digest: str) -> str:
    """The id of a credential that came from the environment: stable across restarts and
    replicas, and revocable like an issued one."""
    return str(uuid.uuid5(CREDENTIAL_NAMESPACE, secret_digest))


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


@dataclass(frozen=True)
class Caller:
    credential_id: str
    name: str  # the source of a write key, the holder of a token
    role: Role | None  # None for a write key


@dataclass
class Credential:
    credential_id: str
    kind: str  # "write_key" | "token"
    name: str
    role: str | None
    secret_digest: str
    origin: str  # "env" | "api"
    issued_at: str = ""
    revoked_at: str | None = None

    def public(self) -> dict:
        shown = {"id": self.credential_id, "origin": self.origin,
                 "issued_at": self.issued_at, "revoked_at": self.revoked_at,
                 "revoked": self.revoked_at is not None}
        if self.kind == "write_key":
            return {**shown, "source": self.name}
        return {**shown, "name": self.name, "role": self.role}


class Keyring:
    """The credentials in force, looked up by digest: those of the environment plus those
    issued through the API, minus the revoked ones."""

    def __init__(self) -> None:
        self._by_id: dict[str, Credential] = {}
        self._by_digest: dict[str, Credential] = {}
        self._lock = threading.Lock()

    def put(self, credential: Credential) -> None:
        with self._lock:
            known = self._by_id.get(credential.credential_id)
            if known is not None and known.revoked_at is not None:
                credential.revoked_at = known.revoked_at  # revocation is final
            self._by_id[credential.credential_id] = credential
            self._by_digest[credential.secret_digest] = credential

    def revoke(self, credential_id: str, revoked_at: str) -> None:
        with self._lock:
            known = self._by_id.get(credential_id)
            if known is not None:
                known.revoked_at = known.revoked_at or revoked_at

    def get(self, credential_id: str) -> Credential | None:
        return self._by_id.get(credential_id)

    def listed(self, kind: str) -> list[Credential]:
        return sorted((c for c in self._by_id.values() if c.kind == kind),
                      key=lambda c: (c.name, c.credential_id))

    def write_key(self, secret: str) -> Caller | None:
        found = self._by_digest.get(digest(secret))
        if found is None or found.kind != "write_key" or found.revoked_at is not None:
            return None
        return Caller(found.credential_id, found.name, None)

    def token(self, secret: str) -> Caller | None:
        found = self._by_digest.get(digest(secret))
        if found is None or found.kind != "token" or found.revoked_at is not None:
            return None
        return Caller(found.credential_id, found.name, Role(found.role))


def allows(caller: Caller | None, permission: Permission) -> bool:
    if permission is Permission.PUBLIC:
        return True
    if caller is None or caller.role is None:
        return False
    return permission in ROLE_PERMISSIONS[caller.role]


class RateLimiter:
    """A token bucket per key: `rate` requests per second on average, bursts of `burst`.
    `rate` 0 turns limiting off. Per process: N gateway replicas admit up to N times the
    rate (behind a load balancer that spreads a key's requests, about the rate)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, max(1, burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def admit(self, key: str) -> float:
        """0 if the request may go on, else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """Retry-After takes whole seconds (RFC 9110 §10.2.3): round up, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
