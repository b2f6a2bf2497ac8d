"""Credentials that change at run time, kept encrypted in activation's own store.

A connector that declares ``runtime_credentials`` (Salesforce's rotated refresh token) gets
a :class:`DestinationCredentials`: the value from the destination's config (seeded from
the environment) until the vendor replaces it, then the replacement, read back after a
restart. Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under
``TESSERA_CREDENTIALS_KEY`` — comma-separated keys: the first encrypts, all decrypt, so a
key can be rotated. Embedded (SQLite), when the variable is unset, a key is generated
into the data directory (``credentials.key``, mode 0600); with PostgreSQL the variable is
required, since every replica must read what another wrote.

A new seed in the environment (the operator authorised the app again) wins over a value
derived from an older seed: each stored value remembers the digest of its seed.

Sources (``tessera pull``) keep theirs in the same table, under ``source:<kind>:<name>``:
the pull runs outside the services, so it opens activation's store for just this table
(:func:`credential_vault`), on the same database or file and with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.config import Settings
from shared.readmodel import ReadModel
from shared.store import ServiceApplication

KEY_ENV = "TESSERA_CREDENTIALS_KEY"
KEY_FILE = "credentials.key"


def load_cipher(settings: Settings) -> MultiFernet:
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        try:
            return MultiFernet([Fernet(key.strip()) for key in configured.split(",")
                                if key.strip()])
        except ValueError:
            raise ValueError(f"{KEY_ENV}: each key must be 32 url-safe base64-encoded bytes, "
                             "as Fernet.generate_key() makes them") from None
    if settings.database == "postgres":
        raise ValueError(f"{KEY_ENV} is not set: with a shared database every replica must "
                         "encrypt with the same key (make one with Fernet.generate_key())")
    return MultiFernet([Fernet(_generated_key(settings))])


def _generated_key(settings: Settings) -> bytes:
    path = settings.data_dir / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "wb") as file:
        file.write(Fernet.generate_key())
    return path.read_bytes().strip()


def runtime_seeds(connector: Any, config: Mapping[str, Any]) -> dict[str, str]:
    """The config's values of the fields the connector says may change at run time."""
    return {name: config[name] for name in getattr(connector, "runtime_credentials", ())
            if config.get(name)}


class _ActivationStore(ServiceApplication):
    """Activation's store opened by another process, for the credentials table only."""

    service_name = "activation"
    name = "activation"


@contextlib.contextmanager
def credential_vault(settings: Settings) -> Iterator[CredentialVault]:
    """Activation's vault outside the activation service (``tessera pull``)."""
    cipher = load_cipher(settings)  # fails fast, before touching the store
    store = _ActivationStore(settings)
    try:
        yield CredentialVault(store.read_model(), cipher)
    finally:
        store.close()


def _digest(seed: str | None) -> str:
    return hashlib.sha256((seed or "").encode()).hexdigest()


class CredentialVault:
    """Encrypted values per (destination, name) in a table of activation's store."""

    def __init__(self, read_model: ReadModel, cipher: MultiFernet) -> None:
        self.rm = read_model
        self.cipher = cipher
        self.table = read_model.table("credentials")
        read_model.create(
            f"CREATE TABLE IF NOT EXISTS {self.table} (destination text NOT NULL, "
            "name text NOT NULL, seed_digest text NOT NULL, ciphertext text NOT NULL, "
            "updated_at text NOT NULL, PRIMARY KEY (destination, name))")

    def for_destination(self, destination: str,
                        seeds: dict[str, str]) -> DestinationCredentials:
        return DestinationCredentials(self, destination, seeds)

    def read(self, destination: str, name: str) -> tuple[str, str] | None:
        """(seed digest, plaintext) of the stored value, if any."""
        rows = self.rm.query(f"SELECT seed_digest, ciphertext FROM {self.table} "
                             "WHERE destination = %s AND name = %s", (destination, name))
        if not rows:
            return None
        seed_digest, ciphertext = rows[0]["seed_digest"], rows[0]["ciphertext"]
        try:
            return seed_digest, self.cipher.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise ValueError(f"credential {name!r} of destination {destination!r} does not "
                             f"decrypt with {KEY_ENV}: wrong key, or the key was rotated "
                             "without keeping the old one after the new") from None

    def write(self, destination: str, name: str, seed: str | None, value: str) -> None:
        ciphertext = self.cipher.encrypt(value.encode()).decode()
        self.rm.execute(
            f"INSERT INTO {self.table} (destination, name, seed_digest, ciphertext, "
            "updated_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (destination, name) DO "
            "UPDATE SET seed_digest = excluded.seed_digest, ciphertext = excluded.ciphertext, "
            "updated_at = excluded.updated_at",
            (destination, name, _digest(seed), ciphertext, datetime.now(UTC).isoformat()))


class DestinationCredentials:
    """One destination's (or source's) runtime credentials, as its connector sees them."""

    def __init__(self, vault: CredentialVault, destination: str,
                 seeds: dict[str, str]) -> None:
        self.vault, self.destination, self.seeds = vault, destination, seeds

    def get(self, name: str) -> str | None:
        seed = self.seeds.get(name)
        stored = self.vault.read(self.destination, name)
        if stored is not None and stored[0] == _digest(seed):
            return stored[1]
        return seed  # nothing stored yet, or the environment brought a new seed

    def put(self, name: str, value: str) -> None:
        self.vault.write(self.destination, name, self.seeds.get(name), value)
