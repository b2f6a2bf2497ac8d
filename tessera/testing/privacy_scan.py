"""Looking for a person's data in every store: what the erasure tests use.

A person's *needles* are their plaintext values (as given and as normalised) and the
unsalted SHA-256 hashes of them that ad networks receive (docs: reference/destinations.md:
email trimmed and lowercased; phone in E.164 with `+` for Google, digits without `+` for
Meta; names lowercased). A scan reads every byte of every store it is pointed at and
reports where a needle was found.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Person:
    email: str
    phone: str  # as written
    phone_e164: str
    first_name: str
    last_name: str

    def needles(self) -> dict[str, bytes]:
        email = self.email.strip().lower()
        plain = {
            "email": self.email, "email (normalised)": email,
            "phone": self.phone, "phone (E.164)": self.phone_e164,
            "phone (digits)": self.phone_e164.lstrip("+"),
            "first name": self.first_name, "last name": self.last_name,
        }
        hashed = {
            "sha256(email)": _sha256(email),
            "sha256(phone, Google)": _sha256(self.phone_e164),
            "sha256(phone, Meta)": _sha256(self.phone_e164.lstrip("+")),
            "sha256(first name)": _sha256(self.first_name.strip().lower()),
            "sha256(last name)": _sha256(self.last_name.strip().lower()),
        }
        return {name: value.encode() for name, value in {**plain, **hashed}.items()}


def find_in(label: str, data: bytes, needles: dict[str, bytes]) -> list[str]:
    """Case-insensitive: a value may be stored lowercased (an email) or as given."""
    lowered = data.lower()
    return [f"{name} in {label}" for name, needle in needles.items()
            if needle.lower() in lowered]


def scan_files(root: Path, needles: dict[str, bytes]) -> list[str]:
    """Every file under `root`, byte by byte (SQLite files, their WAL, logs, anything)."""
    found = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        found += find_in(str(path), path.read_bytes(), needles)
    return found


def scan_postgres(dbname: str, needles: dict[str, bytes]) -> list[str]:
    """Every row of every table of every schema of the database, each value as bytes."""
    import psycopg
    from psycopg import sql

    found = []
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={dbname}") as db:
        tables = db.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE "
            "table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_type = 'BASE TABLE'").fetchall()
        for schema, table in tables:
            rows = db.cursor(binary=True).execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema),
                                                        sql.Identifier(table))).fetchall()
            data = b"\n".join(b"|".join(_as_bytes(value) for value in row) for row in rows)
            found += find_in(f"postgres {schema}.{table}", data, needles)
    return found


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def scan_rabbitmq(vhost: str, needles: dict[str, bytes]) -> list[str]:
    """Every message still in a queue of the virtual host (read, then put back)."""
    import amqp

    queues = list(queue_depths(vhost))
    found = []
    with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                         virtual_host=vhost) as connection:
        channel = connection.channel()
        for queue in queues:
            taken = []
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                taken.append(message)
                found += find_in(f"rabbitmq queue {queue}", bytes(message.body), needles)
            for message in taken:
                channel.basic_reject(message.delivery_tag, requeue=True)
    return found


def queue_depths(vhost: str) -> dict[str, int]:
    """Each queue of the virtual host and the messages in it (rabbitmqctl's header and
    any other line without a count are left out)."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name",
                             "messages"], check=True, capture_output=True, text=True,
                            timeout=60).stdout.splitlines()
    return {line.split("\t")[0]: int(line.split("\t")[1]) for line in listed
            if "\t" in line and line.split("\t")[1].isdigit()}


def scan_texts(label: str, texts: Iterable[str], needles: dict[str, bytes]) -> list[str]:
    return find_in(label, "\n".join(texts).encode(), needles)
