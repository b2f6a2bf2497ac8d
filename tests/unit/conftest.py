"""Fixtures shared by the unit tests."""

import uuid

import pytest
from segments_support import app, clock, feed  # noqa: F401

from shared.config import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store_settings(request, tmp_path):
    """A service's settings with one write key, embedded (SQLite) and on a fresh
    PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path, write_keys={"wk": "web"})
        return
    from tessera.testing.platform import drop_database

    name = f"unit_{uuid.uuid4().hex[:12]}"
    yield Settings(database="postgres", data_dir=tmp_path, postgres_dbname=name,
                   write_keys={"wk": "web"})
    drop_database(name)
