"""The `tessera` command line.

    tessera up                 all six services in one process, embedded (no RabbitMQ, no PG)
    tessera run identity …     one or more services on RabbitMQ + PostgreSQL (environment)
    tessera demo               the embedded platform, a realistic data set, checked figures
    tessera segments …         segments: list, define (with backfill progress), preview, members
    tessera traits …           computed traits: list, define, delete
    tessera contacts …         contacts: search, show, update, stage, note, bulk; accounts …
"""

from __future__ import annotations

import warnings

# eventlet announces its deprecation on import; nameko 2.14 needs it all the same.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# Services run on eventlet (nameko); the demo drives them from outside with plain threads.
if any(command in sys.argv[1:2] for command in ("up", "run")):
    import eventlet

    eventlet.monkey_patch()

from shared.config import Settings  # noqa: E402


def _tune_garbage_collector() -> None:
    """Services allocate many short-lived dicts per event and keep few cycles: collect
    the young generation less often, and leave what start-up built out of collections."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _serve_forever(runner) -> None:
    import eventlet.event

    _tune_garbage_collector()

    stopping = eventlet.event.Event()

    def stop(*_):
        if not stopping.ready():
            stopping.send(True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    runner.stop()


def _warn_if_closed(settings: Settings) -> None:
    if not settings.write_keys:
        print("note: TESSERA_WRITE_KEYS is empty, so the tracking API answers 401 to every "
              "call; set e.g. TESSERA_WRITE_KEYS=web=wk_web_123", flush=True)
    if not settings.admin_token:
        print("note: TESSERA_ADMIN_TOKEN is empty, so the read and admin API is closed",
              flush=True)


def cmd_up(args) -> int:
    from tessera.runner import embedded_settings, start_services

    data_dir = Path(args.data_dir) if args.data_dir else None
    settings = embedded_settings(Settings.from_env(), data_dir)
    runner = start_services(settings)
    _warn_if_closed(settings)
    print(f"tessera up: embedded, data in {settings.data_dir}, "
          f"API on http://{settings.http_host}:{settings.http_port}", flush=True)
    _serve_forever(runner)
    return 0


def cmd_run(args) -> int:
    from tessera.runner import start_services

    settings = Settings.from_env()
    runner = start_services(settings, args.services)
    print(f"tessera run: {', '.join(args.services)} on {settings.broker_url.split('@')[-1]} "
          f"with {settings.database}", flush=True)
    _serve_forever(runner)
    return 0


def cmd_demo(args) -> int:
    from tessera.demo.run import run_demo

    return run_demo(people=args.people, events=args.events, seed=args.seed,
                    data_dir=Path(args.data_dir) if args.data_dir else None)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
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
    demo.set_defaults(func=cmd_demo)

    from tessera import segments_cli
    segments_cli.add_commands(commands)
    from tessera import contacts_cli
    contacts_cli.add_commands(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
