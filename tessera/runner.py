"""Run Tessera's services: all six in one process (embedded) or any of them alone (real).

Import this module only after `eventlet.monkey_patch()` (the `tessera` command does it).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from nameko.runners import ServiceRunner

from shared.config import EMBEDDED_BROKER, Settings
from shared.messaging.broker import apply_embedded_transport_fixes, broker_answers, queue_depths
from shared.messaging.nameko_ext import SETTINGS_CONFIG_KEY

log = logging.getLogger(__name__)


def service_classes() -> dict[str, type]:
    from services.activation.service import ActivationService
    from services.consent.service import ConsentService
    from services.contacts.service import ContactsService
    from services.gateway.service import GatewayService
    from services.identity.service import IdentityService
    from services.segments.service import SegmentsService

    return {cls.name: cls for cls in (GatewayService, IdentityService, ContactsService,
                                      SegmentsService, ConsentService, ActivationService)}


def embedded_settings(base: Settings, data_dir: Path | None = None) -> Settings:
    """Embedded defaults: in-process broker, one SQLite file per service."""
    return dataclasses.replace(base, broker_url=EMBEDDED_BROKER, database="sqlite",
                               data_dir=data_dir or base.data_dir)


def nameko_config(settings: Settings) -> dict:
    if settings.embedded:
        apply_embedded_transport_fixes()
    return {
        "AMQP_URI": settings.broker_url,
        "WEB_SERVER_ADDRESS": f"{settings.http_host}:{settings.http_port}",
        "max_workers": 32,
        "serializer": "json",
        SETTINGS_CONFIG_KEY: settings,
    }


def _known(classes: dict[str, type], names: list[str] | None) -> None:
    unknown = set(names or ()) - classes.keys()
    if unknown:
        raise SystemExit(f"unknown service(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(classes)}")


def start_services(settings: Settings, names: list[str] | None = None) -> ServiceRunner:
    classes = service_classes()
    _known(classes, names)
    runner = ServiceRunner(nameko_config(settings))
    for name in names or list(classes):
        runner.add_service(classes[name])
    runner.start()
    return runner


def start_ops_server(settings: Settings):
    """The process's operations port: /livez, /readyz, /metrics (shared/ops.py)."""
    from shared.ops import OpsServer, PipelineCollector

    return OpsServer(
        lambda: broker_answers(settings.broker_url),
        host=settings.ops_host,
        port=settings.ops_port,
        collector=PipelineCollector(settings.broker_url, queue_depths),
    ).start()


def migrate(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create each service's database schema and tables, then close: the init Job's work."""
    from shared.audit import open_audit_store

    classes = service_classes()
    _known(classes, names)
    migrated = []
    for name in names or list(classes):
        app = classes[name].app.factory(settings)
        app.close()
        open_audit_store(settings, name, create=True).close()  # its ledger and checkpoints
        migrated.append(name)
    return migrated
