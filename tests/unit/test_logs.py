"""Service logs: JSON lines carrying the correlation id, with no e-mail or phone in them."""

from __future__ import annotations

import json
import logging

import pytest

from shared.logs import CORRELATION_ID, JsonFormatter, configure_logging, redact


def formatted(message: str, *args) -> dict:
    record = logging.LogRecord("tessera.test", logging.WARNING, __file__, 1, message, args, None)
    return json.loads(JsonFormatter("run contacts").format(record))


def test_a_json_log_line_carries_the_correlation_id_of_the_current_work():
    token = CORRELATION_ID.set("envelope-42")
    try:
        line = formatted("retrying batch %s", "b-1")
    finally:
        CORRELATION_ID.reset(token)

    assert line["correlation_id"] == "envelope-42"
    assert line["message"] == "retrying batch b-1"
    assert line["level"] == "warning"
    assert line["process"] == "run contacts"


def test_an_email_or_phone_number_in_a_message_never_reaches_the_log():
    line = formatted("could not deliver to %s (%s)", "Ada.Lovelace@example.com", "+44 20 7946 0958")

    assert "example.com" not in line["message"]
    assert "7946" not in line["message"]
    assert line["message"] == "could not deliver to [email] ([phone])"


def test_redaction_leaves_ids_and_positions_alone():
    text = "batch 3f2a-11 of partition 2 at position 120000"

    assert redact(text) == text


def test_an_unknown_log_format_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="TESSERA_LOG_FORMAT: must be one of text, json"):
        configure_logging("xml", "INFO", "tessera")
