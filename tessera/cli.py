"""The `tessera` command line.

    tessera up                 all six services in one process, embedded (no RabbitMQ, no PG)
    tessera run identity …     one or more services on RabbitMQ + PostgreSQL (environment)
    tessera demo               the embedded platform, a realistic data set, checked figures
    tessera segments …         segments: list, define (with backfill progress), preview, members
    tessera traits …           computed traits: list, define, delete
    tessera identity explain P why each identifier belongs to profile P (admin API)
    tessera migrate [svc …]    create the services' schemas and tables on PostgreSQL, exit
    tessera audit verify …     recompute every service's hash chain, check signed checkpoints
    tessera connector …        list, test (conformance kit), new, dry-run connectors
    tessera dlq …              list, show, replay dead letters (admin API)
    tessera import FILE …      a CSV file through the gateway (streaming, resumable)
    tessera pull hubspot …     what changed in a CRM since the last pull, through the gateway
    tessera contacts …         contacts: search, show, update, stage, note, bulk; accounts …
    tessera dsr …              data subject requests: file, verify, extend, complete, overdue
    tessera audit …            subject (one person's history), views, processing (Art. 30)
    tessera privacy erase T:V  erase a person everywhere; reapply-erasures after a restore
    tessera keys …             write keys: list, issue SOURCE, revoke KEY_ID (admin API)
    tessera tokens …           API tokens with roles: list, issue NAME --role R, revoke ID

Every service process has an operations port (TESSERA_OPS_PORT): /livez, /readyz, /metrics.
"""

from __future__ import annotations

import warnings

# eventlet announces its deprecation on import; nameko 2.14 needs it all the same.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# Services run on eventlet (nameko); the demo drives them from outside with plain threads.
if any(command in sys.argv[1:2] for command in ("up", "run")):
    import eventlet

    eventlet.monkey_patch()

from shared.config import Settings  # noqa: E402
from shared.logs import announce  # noqa: E402


def _tune_garbage_collector() -> None:
    """Services allocate many short-lived dicts per event and keep few cycles: collect
    the young generation less often, and leave what start-up built out of collections."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _serve_forever(runner, ops) -> int:
    """Until SIGTERM/SIGINT; then unready first, stop consuming, finish what is in flight
    (nameko waits for running workers), publish what they saved, and exit 0.

    A service container that dies on its own (nameko kills a container when one of its
    threads fails, e.g. an RPC reply published while the broker restarts) would leave a
    live process that consumes nothing: the process exits 1 instead, so that its
    supervisor (Kubernetes, systemd, the fault tests) starts it again."""
    import logging

    import eventlet
    import eventlet.event

    _tune_garbage_collector()

    stopping = eventlet.event.Event()
    died: list[str] = []

    def stop(*_):
        if not stopping.ready():
            stopping.send(True)

    def watch(container) -> None:
        try:
            container.wait()
            reason = "stopped"
        except Exception as error:
            reason = type(error).__name__
        if not stopping.ready():
            logging.getLogger("tessera").critical(
                "service %s died (%s): exiting so that it is restarted",
                container.service_name, reason)
            died.append(container.service_name)
            stop()

    for container in runner.containers:
        eventlet.spawn(watch, container)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    ops.begin_shutdown()
    runner.stop()
    ops.stop()
    return 1 if died else 0


def _warn_if_closed(settings: Settings) -> None:
    if not settings.write_keys:
        print("note: TESSERA_WRITE_KEYS is empty, so the tracking API answers 401 to every "
              "call; set e.g. TESSERA_WRITE_KEYS=web=wk_web_123", flush=True)
    if not settings.admin_token:
        print("note: TESSERA_ADMIN_TOKEN is empty, so the read and admin API is closed",
              flush=True)


def cmd_up(args) -> int:
    from tessera.runner import embedded_settings, start_ops_server, start_services

    data_dir = Path(args.data_dir) if args.data_dir else None
    settings = embedded_settings(Settings.from_env(), data_dir)
    runner = start_services(settings)
    ops = start_ops_server(settings)
    _warn_if_closed(settings)
    announce(f"tessera up: embedded, data in {settings.data_dir}, "
             f"API on http://{settings.http_host}:{settings.http_port}, "
             f"{_ops_line(settings, ops)}")
    return _serve_forever(runner, ops)


def cmd_run(args) -> int:
    from tessera.runner import start_ops_server, start_services

    settings = Settings.from_env()
    runner = start_services(settings, args.services)
    ops = start_ops_server(settings)
    announce(f"tessera run: {', '.join(args.services)} on "
             f"{settings.broker_url.split('@')[-1]} with {settings.database}, "
             f"{_ops_line(settings, ops)}")
    return _serve_forever(runner, ops)


def _ops_line(settings: Settings, ops) -> str:
    return f"operations on http://{settings.ops_host}:{ops.port}"


def cmd_migrate(args) -> int:
    from tessera.runner import migrate

    settings = Settings.from_env()
    if settings.database != "postgres":
        announce("tessera migrate: TESSERA_DATABASE is not 'postgres'; SQLite files are "
                 "created by the services themselves")
    migrated = migrate(settings, args.services or None)
    announce(f"tessera migrate: schemas and tables ready for {', '.join(migrated)} "
             f"in {settings.database}")
    return 0


def cmd_demo(args) -> int:
    from tessera.demo.run import run_demo

    return run_demo(people=args.people, events=args.events, seed=args.seed,
                    data_dir=Path(args.data_dir) if args.data_dir else None,
                    serve=args.serve)


def cmd_identity_explain(args) -> int:
    from tessera.identity_cli import explain

    return explain(args.profile, url=args.url, token=Settings.from_env().admin_token)


def main(argv: list[str] | None = None) -> int:
    from shared.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level,
                      process_name=" ".join((argv or sys.argv[1:])[:4]) or "tessera")
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run all services in one process, embedded")
    up.add_argument("--data-dir", help="where the SQLite files go (default: TESSERA_DATA_DIR)")
    up.set_defaults(func=cmd_up)
    run = commands.add_parser("run", help="run services on RabbitMQ + PostgreSQL")
    run.add_argument("services", nargs="+")
    run.set_defaults(func=cmd_run)
    demo = commands.add_parser("demo", help="run the embedded demo and check every figure")
    demo.add_argument("--people", type=int, default=1000)
    demo.add_argument("--events", type=int, default=20000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--data-dir")
    demo.add_argument("--serve", action="store_true",
                      help="keep the platform up afterwards for the web console (/console)")
    demo.set_defaults(func=cmd_demo)

    from tessera import segments_cli
    segments_cli.add_commands(commands)
    identity = commands.add_parser("identity", help="look into identity resolution")
    identity_commands = identity.add_subparsers(dest="identity_command", required=True)
    explain = identity_commands.add_parser(
        "explain", help="why each identifier belongs to a profile: edges, rules, scores")
    explain.add_argument("profile", help="a profile id (an absorbed one is followed)")
    explain.add_argument("--url", default=None,
                         help="the API (default: http://TESSERA_HTTP_HOST:TESSERA_HTTP_PORT)")
    explain.set_defaults(func=cmd_identity_explain)
    migrate = commands.add_parser("migrate", help="create schemas and tables, then exit")
    migrate.add_argument("services", nargs="*", help="default: all six")
    migrate.set_defaults(func=cmd_migrate)
    from tessera import connector_cli, import_cli

    connector_cli.add_commands(commands)
    import_cli.add_commands(commands)
    from tessera import access_cli, contacts_cli
    contacts_cli.add_commands(commands)
    from tessera import audit_cli, dsr_cli
    dsr_cli.add_commands(commands)
    audit_cli.add_commands(commands)
    from tessera import audit_chain_cli  # last: it joins a `tessera audit` made by others
    audit_chain_cli.add_commands(commands)
    from tessera import privacy_cli
    privacy_cli.add_commands(commands)
    access_cli.add_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
