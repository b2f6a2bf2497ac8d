"""Fixtures shared by the unit tests."""

from segments_support import app, clock, feed  # noqa: F401
