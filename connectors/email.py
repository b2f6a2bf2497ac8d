"""Email over SMTP: one personalised, templated message per person entering a segment.

Each batch is one SMTP session (AUTH, optionally STARTTLS); each message carries From,
To, Subject, Date, MIME-Version and a Message-ID derived from the delivery's idempotency
key, so a receiver can recognise a resend. Marketing mail carries the RFC 8058 headers::

    List-Unsubscribe: <https://cdp.example.com/u/TOKEN>, <mailto:unsub+TOKEN@…>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

and the unsubscribe link in the body too (Gmail's bulk-sender rules). TOKEN is opaque and
unforgeable: the profile and destination, signed with HMAC-SHA256 under
``unsubscribe_secret`` (:func:`read_unsubscribe_token` checks it).

Templates use ``$trait`` placeholders (``string.Template``); ``$unsubscribe_url`` is the
person's link. SMTP 4xx answers are transient, 5xx permanent. Messages a session already
had accepted are not sent again when the batch is retried (this process remembers the
last keys it had accepted).

Not done: DKIM signing (the relay or MTA must sign, covering both List-Unsubscribe
headers in ``h=``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl
from collections import OrderedDict
from email.message import EmailMessage
from email.utils import formatdate
from string import Template
from typing import Any, ClassVar

from marshmallow import ValidationError, fields, validate, validates

from connectors.base import DeliveryItem, PermanentDeliveryError, SendResult, TransientDeliveryError
from connectors.sdk.destination import Capability, Destination, DestinationConfigSchema

__all__ = ["SmtpEmail", "read_unsubscribe_token", "unsubscribe_token"]

REMEMBERED_KEYS = 100_000


def unsubscribe_token(secret: str, profile_id: str, destination: str) -> str:
    subject = base64.urlsafe_b64encode(f"{profile_id}:{destination}".encode()).decode()
    mac = hmac.new(secret.encode(), subject.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{subject.rstrip('=')}.{mac}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str] | None:
    """``(profile_id, destination)`` if the token is one we made, else None."""
    subject, _, mac = token.partition(".")
    padded = subject + "=" * (-len(subject) % 4)
    expected = hmac.new(secret.encode(), padded.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(expected, mac):
        return None
    profile_id, _, destination = base64.urlsafe_b64decode(padded).decode().partition(":")
    return profile_id, destination


class SmtpConfig(DestinationConfigSchema):
    host = fields.String(required=True, metadata={"description": "SMTP relay host."})
    port = fields.Integer(load_default=587, validate=validate.Range(min=1, max=65535),
                          metadata={"description": "SMTP port (587: submission)."})
    starttls = fields.Boolean(load_default=True,
                              metadata={"description": "Upgrade the session with STARTTLS."})
    username = fields.String(load_default=None, allow_none=True,
                             metadata={"description": "SMTP AUTH user."})
    password = fields.String(load_default=None, allow_none=True,
                             metadata={"secret": True, "description": "SMTP AUTH password."})
    from_address = fields.Email(required=True, metadata={"description": "The From address."})
    subject = fields.String(required=True, metadata={"description": "Subject template."})
    text = fields.String(required=True, metadata={
        "description": "Plain-text body template ($first_name, $unsubscribe_url, …)."})
    marketing = fields.Boolean(load_default=True, metadata={
        "description": "Marketing mail: adds the one-click unsubscribe headers."})
    unsubscribe_url = fields.String(load_default=None, allow_none=True, metadata={
        "description": "https URL template of the one-click unsubscribe, with {token}."})
    unsubscribe_mailto = fields.String(load_default=None, allow_none=True, metadata={
        "description": "mailto address template, with {token} (optional)."})
    unsubscribe_secret = fields.String(load_default=None, allow_none=True, metadata={
        "secret": True, "description": "HMAC key of the unsubscribe tokens."})
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0, min_inclusive=False),
                           metadata={"description": "Seconds per SMTP command."})

    @validates("unsubscribe_url")
    def _https(self, value, **kwargs):
        if value is not None and (not value.startswith("https://") or "{token}" not in value):
            raise ValidationError("must be an https:// URL containing {token} (RFC 8058)")


class SmtpEmail(Destination):
    name: ClassVar[str] = "email"
    config_schema = SmtpConfig
    capabilities = frozenset({Capability.SEND_MESSAGE})
    batch_size = 50
    rate_limit = 5.0

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if config.get("marketing", True) and not (config.get("unsubscribe_url")
                                                  and config.get("unsubscribe_secret")):
            raise ValueError("invalid email connector config: unsubscribe_url and "
                             "unsubscribe_secret: required for marketing mail")
        self._accepted: OrderedDict[str, None] = OrderedDict()

    # ---- messages ------------------------------------------------------------------
    def message_of(self, item: DeliveryItem, destination: str) -> EmailMessage | None:
        traits = self.fields_of(item)
        if not traits.get("email"):
            return None
        values = {k: str(v) for k, v in traits.items()}
        message = EmailMessage()
        message["From"] = self.config["from_address"]
        message["To"] = str(traits["email"])
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = self.config["from_address"].rpartition("@")[2]
        digest = hashlib.sha256(item.idempotency_key.encode()).hexdigest()[:32]
        message["Message-ID"] = f"<{digest}@{domain}>"
        message["MIME-Version"] = "1.0"
        if self.config.get("marketing", True):
            token = unsubscribe_token(self.config["unsubscribe_secret"], item.profile_id,
                                      destination)
            url = self.config["unsubscribe_url"].replace("{token}", token)
            targets = [f"<{url}>"]
            if self.config.get("unsubscribe_mailto"):
                mailto = self.config["unsubscribe_mailto"].replace("{token}", token)
                targets.append(f"<mailto:{mailto}>")
            message["List-Unsubscribe"] = ", ".join(targets)
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            values["unsubscribe_url"] = url
        message["Subject"] = Template(self.config["subject"]).safe_substitute(values)
        message.set_content(Template(self.config["text"]).safe_substitute(values))
        return message

    # ---- SMTP ----------------------------------------------------------------------
    def _session(self) -> smtplib.SMTP:
        session = smtplib.SMTP(self.config["host"], self.config.get("port", 587),
                               timeout=self.config.get("timeout", 30.0))
        session.ehlo()
        if self.config.get("starttls", True):
            session.starttls(context=ssl.create_default_context())
            session.ehlo()
        if self.config.get("username"):
            session.login(self.config["username"], self.config.get("password") or "")
        return session

    def check(self) -> None:
        try:
            with self._session() as session:
                session.noop()
        except smtplib.SMTPException as error:
            raise PermanentDeliveryError(f"{self.name}: {error}") from error
        except OSError as error:
            raise PermanentDeliveryError(f"{self.name}: cannot connect: {error}") from error

    def deliver(self, operation, destination, items):
        sent = []
        try:
            with self._session() as session:
                for item in items:
                    if item.idempotency_key not in self._accepted:
                        message = self.message_of(item, destination)
                        if message is None:
                            continue  # no address: skipped, not sent
                        session.send_message(message)
                        self._remember(item.idempotency_key)
                    sent.append(item.idempotency_key)
        except smtplib.SMTPResponseException as error:
            raise _classified(error) from error
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            kind = TransientDeliveryError if all(400 <= c < 500 for c in codes) \
                else PermanentDeliveryError
            raise kind(f"{self.name}: recipients refused: {codes}", status=max(codes)) \
                from error
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            raise TransientDeliveryError(f"{self.name}: {error}") from error
        return SendResult(delivered=sent, status=250)

    def _remember(self, key: str) -> None:
        self._accepted[key] = None
        while len(self._accepted) > REMEMBERED_KEYS:
            self._accepted.popitem(last=False)

    def preview(self, operation, destination, items):
        messages = [self.message_of(item, destination) for item in items]
        return [{"headers": dict(m.items()), "text": m.get_content()}
                for m in messages if m is not None]

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.smtp import FakeSmtpServer
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=FakeSmtpServer,
            config=lambda fake: {
                "host": "127.0.0.1", "port": fake.port, "starttls": False,
                "username": fake.username, "password": fake.password,
                "from_address": "news@shop.example.com", "subject": "Hello $first_name",
                "text": "Dear $first_name,\n\nnews.\n\nUnsubscribe: $unsubscribe_url\n",
                "unsubscribe_url": "https://cdp.example.com/u/{token}",
                "unsubscribe_mailto": "unsub+{token}@cdp.example.com",
                "unsubscribe_secret": "unsub-secret"},
            bad_config=lambda fake: {"password": "wrong"},
            retry_after=False)


def _classified(error: smtplib.SMTPResponseException):
    detail = f"email: SMTP {error.smtp_code}: {error.smtp_error!r}"
    if 400 <= error.smtp_code < 500:
        return TransientDeliveryError(detail, status=error.smtp_code)
    return PermanentDeliveryError(detail, status=error.smtp_code)


class UnsubscribeLinks:
    """Reads one-click unsubscribe tokens for the email destinations of a destinations file.

    Only the email destinations are read (their ``unsubscribe_secret``, inline or from the
    variable ``secrets_env`` names), so a process that holds no other destination's
    secrets — the gateway — can still check the links.
    """

    def __init__(self, destinations_file) -> None:
        import json
        import os
        from pathlib import Path

        self.known: dict[str, tuple[str, list[str]]] = {}
        if destinations_file is None or not Path(destinations_file).exists():
            return
        for spec in json.loads(Path(destinations_file).read_text()).get("destinations", []):
            if spec.get("kind") != "email":
                continue
            variable = (spec.get("secrets_env") or {}).get("unsubscribe_secret")
            secret = os.environ.get(variable) if variable else \
                (spec.get("config") or {}).get("unsubscribe_secret")
            if secret:
                self.known[spec["name"]] = (secret, list(spec.get("purposes") or []))

    def read(self, token: str) -> tuple[str, str, list[str]] | None:
        """``(profile_id, destination, purposes)`` of a genuine token, else None."""
        for name, (secret, purposes) in self.known.items():
            try:
                found = read_unsubscribe_token(secret, token)
            except (ValueError, UnicodeDecodeError):
                return None
            if found is not None and found[1] == name:
                return found[0], name, purposes
        return None
