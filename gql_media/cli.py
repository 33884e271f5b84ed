"""``gql-media``: run the service (embedded or split into api and workers) and manage it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from gql_media.settings import Settings

log = logging.getLogger("gql_media")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _require_servers(settings: Settings, command: str) -> None:
    if settings.database_url is None or settings.redis_url is None:
        sys.exit(
            f"gql-media {command} needs GQL_MEDIA_DATABASE_URL and GQL_MEDIA_REDIS_URL; "
            "run `gql-media serve` for the all-in-one embedded mode"
        )


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    from gql_media.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    print("database is at the latest revision")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    """API, GraphiQL and an in-process worker in one process."""
    import uvicorn

    from gql_media.api.app import create_app
    from gql_media.db.migrate import upgrade
    from gql_media.worker.main import running_worker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    if settings.embedded:
        log.info(
            "embedded mode: SQLite at %s, media in %s, in-process Redis stand-in",
            settings.effective_database_url,
            settings.effective_storage_dir,
        )
    app = create_app(settings, background=running_worker)
    log.info("GraphiQL: http://%s:%d/graphql", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=10, log_config=None)


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from gql_media.api.app import create_app

    _require_servers(settings, "api")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=10,
        log_config=None,
    )


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    _require_servers(settings, "worker")
    grace = settings.shutdown_grace if args.grace is None else args.grace
    asyncio.run(_run_worker(settings, grace))


async def _run_worker(settings: Settings, grace: float) -> None:
    from gql_media.runtime import open_runtime
    from gql_media.worker.main import running_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime, running_worker(runtime, grace=grace):
        log.info("worker started (concurrency %d)", settings.worker_concurrency)
        await stop.wait()
        log.info("worker stopping: finishing running jobs for up to %.0fs", grace)
    log.info("worker stopped")


def cmd_export_schema(settings: Settings, args: argparse.Namespace) -> None:
    from gql_media.api.schema import build_schema

    sdl = build_schema(settings).as_str() + "\n"
    if args.output:
        Path(args.output).write_text(sdl)
    else:
        sys.stdout.write(sdl)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gql-media", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text in (
        ("serve", cmd_serve, "run api, GraphiQL and a worker in one process"),
        ("api", cmd_api, "run the api (needs PostgreSQL and Redis)"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
        sub.set_defaults(func=func)

    worker = commands.add_parser("worker", help="run a worker (needs PostgreSQL and Redis)")
    worker.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds running jobs get to finish on SIGTERM before they are handed back "
        "to the queue (default: GQL_MEDIA_SHUTDOWN_GRACE, 10)",
    )
    worker.set_defaults(func=cmd_worker)

    commands.add_parser("migrate", help="upgrade the database schema").set_defaults(
        func=cmd_migrate
    )
    export = commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.add_argument("--output", "-o", help="write to this file instead of stdout")
    export.set_defaults(func=cmd_export_schema)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = Settings()
    _configure_logging(settings)
    args.func(settings, args)
