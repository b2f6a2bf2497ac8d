"""CSV files as a source: each row an ``identify`` call, read as a stream.

Rows become calls by a column → trait mapping; the row's ``userId`` comes from a column,
or, when there is none, a stable ``anonymousId`` is derived from the email. A row with
neither, with a malformed email, or with the wrong number of cells is rejected with the
reason, and the import goes on. Each call's ``messageId`` is derived from the source,
the file's name and the row number, so the gateway recognises a row sent twice (after a
crash, or a resumed import) and keeps it once. The cursor is the number of rows read.
"""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate

from connectors.sdk.source import Page, Source

__all__ = ["CsvSource", "parse_mapping"]

_NAMESPACE = uuid.UUID("5b0f6a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["Email=email", "First=first_name"]`` → ``{"Email": "email", …}``."""
    mapping = {}
    for pair in pairs:
        column, sep, trait = pair.partition("=")
        if not sep or not column.strip() or not trait.strip():
            raise ValueError(f"--map: {pair!r} is not of the form column=trait")
        mapping[column.strip()] = trait.strip()
    return mapping


class CsvConfig(Schema):
    path = fields.String(required=True, metadata={"description": "The CSV file."})
    source = fields.String(required=True, validate=validate.Length(min=1),
                           metadata={"description": "The tracking source (write key owner)."})
    mapping = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                          validate=validate.Length(min=1),
                          metadata={"description": "CSV column -> trait."})
    user_id_column = fields.String(load_default=None, allow_none=True,
                                   metadata={"description": "Column holding the userId."})
    page_size = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000),
                               metadata={"description": "Rows per gateway batch."})


class CsvSource(Source):
    name = "csv"
    config_schema = CsvConfig

    def check(self) -> None:
        path = Path(self.config["path"])
        if not path.is_file():
            raise ValueError(f"path: {path} is not a readable file")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        wanted = [*self.config["mapping"], *filter(None, [self.config.get("user_id_column")])]
        missing = [column for column in wanted if column not in header]
        if missing:
            raise ValueError(f"map: column(s) {', '.join(missing)} not in the header "
                             f"({', '.join(header)})")

    def pull(self, cursor: str | None) -> Iterator[Page]:
        skip = int(cursor or 0)
        size = self.config.get("page_size", 500)
        path = Path(self.config["path"])
        calls: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        row_number = 0
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, restkey="\0extra", restval=None)
            for row_number, row in enumerate(reader, start=1):
                if row_number <= skip:
                    continue
                call, reason = self.call_of(row_number, row)
                if call is None:
                    rejected.append({"row": row_number, "reason": reason, "record": row})
                else:
                    calls.append(call)
                if len(calls) + len(rejected) >= size:
                    yield Page(calls, str(row_number), rejected)
                    calls, rejected = [], []
        if calls or rejected:
            yield Page(calls, str(row_number), rejected)

    def call_of(self, row_number: int, row: dict[str, Any]) -> tuple[dict | None, str]:
        if "\0extra" in row or any(value is None for value in row.values()):
            return None, "row: the number of cells differs from the header's"
        traits = {trait: row[column].strip() for column, trait in self.config["mapping"].items()
                  if row.get(column, "").strip()}
        email = traits.get("email")
        if email is not None and not _EMAIL.match(email):
            return None, f"email: {email!r} is not an email address"
        call: dict[str, Any] = {
            "type": "identify", "traits": traits,
            "messageId": str(uuid.uuid5(_NAMESPACE, f"{self.config['source']}:"
                                                    f"{Path(self.config['path']).name}:{row_number}")),
            "context": {"library": {"name": "tessera-import", "version": "1"}}}
        user_column = self.config.get("user_id_column")
        if user_column and row.get(user_column, "").strip():
            call["userId"] = row[user_column].strip()
        elif email:
            call["anonymousId"] = str(uuid.uuid5(_NAMESPACE, f"email:{email.lower()}"))
        else:
            return None, f"userId: no value in column {user_column!r} and no email" \
                if user_column else "email: required when no --user-id-column is given"
        return call, ""


class _ScratchCsv:
    """A CSV file in a temporary directory, standing in for a vendor in the source kit."""

    def __enter__(self) -> _ScratchCsv:
        import tempfile

        self._directory = tempfile.TemporaryDirectory(prefix="tessera-csv-")
        self.path = Path(self._directory.name) / "people.csv"
        self.path.write_text("Id,Email,First\n")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._directory.cleanup()

    def append(self, *rows: tuple[str, str, str]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerows(rows)


def _harness():
    from connectors.sdk.source_conformance import SourceHarness

    config = {"source": "crm", "mapping": {"Email": "email", "First": "first_name"},
              "user_id_column": "Id", "page_size": 30}
    return SourceHarness(
        fake=_ScratchCsv,
        config=lambda scratch: dict(config, path=str(scratch.path)),
        bad_config=lambda scratch: {"mapping": {"Mail": "email"}},
        seed=lambda scratch, n: scratch.append(
            *[(f"u{i}", f"c{i}@example.com", f"C{i}") for i in range(n)]),
        # A file only grows: a change is a row appended after the cursor.
        change=lambda scratch, n: scratch.append((f"u{n}", f"c{n}@example.com", "Changed")))


CsvSource.conformance_harness = staticmethod(_harness)
