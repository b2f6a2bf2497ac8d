"""Configuration read from the environment, once, into one immutable object.

Every variable is documented in the README ("Configuration"); secrets (write keys,
the admin token, webhook secrets) only ever come from here, never from the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EMBEDDED_BROKER = "memory://"
ROLES = ("admin", "marketer", "compliance")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file NAME_FILE names (a mounted Kubernetes or
    Docker secret); trailing newlines of the file are not part of the secret."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        if os.environ.get(name):
            raise ValueError(f"{name} and {name}_FILE: set one of them, not both")
        return Path(path).read_text().rstrip("\r\n")
    return _env(name, default)


def _parse_tokens(raw: str, *, variable: str) -> dict[str, tuple[str, str]]:
    """'ana=marketer:tok_1,carl=compliance:tok_2' -> {'tok_1': ('ana', 'marketer'), ...}."""
    tokens: dict[str, tuple[str, str]] = {}
    for chunk in filter(None, (part.strip() for part in raw.replace("\n", ",").split(","))):
        name, sep, rest = chunk.partition("=")
        role, colon, token = rest.partition(":")
        if not sep or not colon or not name or not token:
            raise ValueError(f"{variable}: an entry is not of the form name=role:token")
        if role.strip() not in ROLES:
            raise ValueError(f"{variable}: role of {name.strip()!r} must be one of "
                             f"{', '.join(ROLES)}")
        tokens[token.strip()] = (name.strip(), role.strip())
    return tokens


def _parse_pairs(raw: str, *, variable: str, form: str = "source=writekey") -> dict[str, str]:
    """'web=wk_1,app=wk_2' -> {'wk_1': 'web', 'wk_2': 'app'} (key -> source)."""
    pairs: dict[str, str] = {}
    for chunk in filter(None, (part.strip() for part in raw.replace("\n", ",").split(","))):
        source, sep, key = chunk.partition("=")
        if not sep or not source or not key:
            raise ValueError(f"{variable}: '{chunk}' is not of the form {form}")
        pairs[key.strip()] = source.strip()
    return pairs


@dataclass(frozen=True)
class Settings:
    broker_url: str = EMBEDDED_BROKER
    database: str = "sqlite"  # "sqlite" (embedded) or "postgres" (real)
    data_dir: Path = Path("data")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: str = ""
    postgres_dbname: str = "tessera"
    partitions: int = 4
    linger_ms: int = 50
    batch_max: int = 500
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    write_keys: dict[str, str] = field(default_factory=dict)  # write key -> source name
    admin_token: str = ""
    api_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (name, role)
    rate_limit: float = 200.0  # requests/s per write key (token bucket), 0: no limit
    rate_burst: int = 400
    credentials_refresh_s: float = 1.0  # how often a gateway reads revocations of others
    destinations_file: Path | None = None
    rpc_timeout: float = 10.0
    delivery_attempts: int = 5
    circuit_failures: int = 5  # failed attempts in a row that open a destination's circuit
    default_jurisdiction: str = "GDPR"
    # Consent (docs/consent.md): the purpose catalogue, our IAB TCF vendor id (0: none, so
    # TC strings can deny but never grant), the oldest TCF policy version accepted, and
    # each source's jurisdiction (source -> GDPR/CCPA).
    purposes_file: Path | None = None
    tcf_vendor_id: int = 0
    tcf_min_policy_version: int = 4
    source_jurisdictions: dict[str, str] = field(default_factory=dict)
    ops_host: str = "127.0.0.1"
    ops_port: int = 0  # 0: any free port (printed at start); Kubernetes sets a fixed one
    log_format: str = "text"  # "text" or "json"
    log_level: str = "WARNING"

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("memory://")

    @classmethod
    def from_env(cls) -> Settings:
        database = _env("TESSERA_DATABASE", "sqlite")
        if database not in ("sqlite", "postgres"):
            raise ValueError("TESSERA_DATABASE: must be 'sqlite' or 'postgres'")
        destinations = os.environ.get("TESSERA_DESTINATIONS_FILE")
        purposes = os.environ.get("TESSERA_PURPOSES_FILE")
        return cls(
            broker_url=_env("TESSERA_BROKER_URL", EMBEDDED_BROKER),
            database=database,
            data_dir=Path(_env("TESSERA_DATA_DIR", "data")),
            postgres_host=_env("TESSERA_POSTGRES_HOST", "127.0.0.1"),
            postgres_port=int(_env("TESSERA_POSTGRES_PORT", "5432")),
            postgres_user=_env("TESSERA_POSTGRES_USER", "postgres"),
            postgres_password=_secret("TESSERA_POSTGRES_PASSWORD"),
            postgres_dbname=_env("TESSERA_POSTGRES_DBNAME", "tessera"),
            partitions=int(_env("TESSERA_PARTITIONS", "4")),
            linger_ms=int(_env("TESSERA_LINGER_MS", "50")),
            batch_max=int(_env("TESSERA_BATCH_MAX", "500")),
            http_host=_env("TESSERA_HTTP_HOST", "127.0.0.1"),
            http_port=int(_env("TESSERA_HTTP_PORT", "8000")),
            write_keys=_parse_pairs(_secret("TESSERA_WRITE_KEYS"),
                                    variable="TESSERA_WRITE_KEYS"),
            admin_token=_secret("TESSERA_ADMIN_TOKEN"),
            api_tokens=_parse_tokens(_secret("TESSERA_API_TOKENS"),
                                     variable="TESSERA_API_TOKENS"),
            rate_limit=float(_env("TESSERA_RATE_LIMIT", "200")),
            rate_burst=int(_env("TESSERA_RATE_BURST", "400")),
            credentials_refresh_s=float(_env("TESSERA_CREDENTIALS_REFRESH_S", "1")),
            destinations_file=Path(destinations) if destinations else None,
            rpc_timeout=float(_env("TESSERA_RPC_TIMEOUT", "10")),
            delivery_attempts=int(_env("TESSERA_DELIVERY_ATTEMPTS", "5")),
            circuit_failures=int(_env("TESSERA_CIRCUIT_FAILURES", "5")),
            default_jurisdiction=_env("TESSERA_DEFAULT_JURISDICTION", "GDPR"),
            purposes_file=Path(purposes) if purposes else None,
            tcf_vendor_id=int(_env("TESSERA_TCF_VENDOR_ID", "0")),
            tcf_min_policy_version=int(_env("TESSERA_TCF_MIN_POLICY_VERSION", "4")),
            source_jurisdictions={source: jurisdiction for jurisdiction, source in _parse_pairs(
                _env("TESSERA_SOURCE_JURISDICTIONS", ""),
                variable="TESSERA_SOURCE_JURISDICTIONS", form="source=GDPR").items()},
            ops_host=_env("TESSERA_OPS_HOST", "127.0.0.1"),
            ops_port=int(_env("TESSERA_OPS_PORT", "0")),
            log_format=_env("TESSERA_LOG_FORMAT", "text"),
            log_level=_env("TESSERA_LOG_LEVEL", "WARNING"),
        )
