"""Logging of service processes: one JSON object per line, with the correlation id, no PII.

The correlation id is that of the envelope or request the current worker handles (set by
the service's DependencyProvider in each worker's green thread). Messages pass through a
redaction filter: whatever a log call says, e-mail addresses and phone numbers never
reach the log collector.
"""

from __future__ import annotations

import contextvars
import logging
import re
from datetime import UTC, datetime

import orjson

CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# With its + only (as stored, E.164): bare digit runs are positions and ids, not phones.
_PHONE = re.compile(r"\+\d[\d ()-]{6,}\d")
LOG_FORMATS = ("text", "json")
PAYLOAD_LOGGERS = ("nameko", "kombu", "amqp", "eventlet", "httpx", "httpcore", "urllib3",
                   "eventsourcing", "psycopg", "werkzeug")


def redact(text: str) -> str:
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str):
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process_name,
            "message": redact(record.getMessage()),
            "correlation_id": CORRELATION_ID.get(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(log_format: str, level: str, process_name: str) -> None:
    """Replaces the root handler: called once, first thing, by the `tessera` command."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"TESSERA_LOG_FORMAT: must be one of {', '.join(LOG_FORMATS)}")
    if level.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"TESSERA_LOG_LEVEL: '{level}' is not a logging level")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(process_name) if log_format == "json"
                         else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    # At DEBUG these print whole messages, RPC arguments and replies: people's traits.
    # The redaction filter knows e-mails and phones, not names or addresses, so they
    # never log below INFO, whatever TESSERA_LOG_LEVEL says.
    for payload_logger in PAYLOAD_LOGGERS:
        logger = logging.getLogger(payload_logger)
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


def announce(message: str) -> None:
    """A line that is always shown (start-up, shutdown), in the configured format."""
    record = logging.LogRecord("tessera", logging.INFO, __file__, 0, message, None, None)
    handlers = logging.getLogger().handlers
    if not handlers:
        print(message, flush=True)
    for handler in handlers:
        handler.emit(record)
