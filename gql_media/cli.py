"""``gql-media``: run the service (embedded or split into api and workers) and manage it."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gql_media import client_cli
from gql_media.observability import logs as observability_logs
from gql_media.settings import Settings

log = logging.getLogger("gql_media")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    observability_logs.configure(settings.log_format)  # json: one object per line, job ids
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    # arq logs two lines per job; the runner logs each job's outcome once
    logging.getLogger("arq.worker").setLevel(logging.WARNING)


def _require_servers(settings: Settings, command: str) -> None:
    if settings.database_url is None or not settings.redis_configured:
        sys.exit(
            f"gql-media {command} needs GQL_MEDIA_DATABASE_URL and GQL_MEDIA_REDIS_URL (or "
            "GQL_MEDIA_REDIS_SENTINELS); "
            "run `gql-media serve` for the all-in-one embedded mode"
        )


def _require_writable_data_dir(settings: Settings) -> None:
    """Exit with one clear line unless this process can create and write the directories
    it keeps files in (the data directory, and the media or scratch directory in it), rather
    than fail later on the first upload or job (a volume mounted owned by another user)."""
    import os
    import tempfile

    dirs = [settings.data_dir, settings.scratch_dir]
    if settings.storage_backend == "local":
        dirs.append(settings.effective_storage_dir)
    for directory in dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            sys.exit(
                f"gql-media: the data directory is not writable: {directory} "
                f"({exc.strerror or exc}) for uid {os.getuid()}; set GQL_MEDIA_DATA_DIR "
                "(and GQL_MEDIA_STORAGE_DIR) to a directory this user may write, or make "
                "it theirs"
            )


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    from gql_media.db.migrate import upgrade

    if settings.embedded:
        _require_writable_data_dir(settings)
    upgrade(settings.effective_database_url, pgbouncer=settings.database_pgbouncer)
    print("database is at the latest revision")


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived process's ``main`` on uvloop where it is installed (not on
    Windows): its sockets and callbacks cost less CPU than asyncio's own loop. uvicorn
    picks it for the api by itself."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _tune_gc(threshold: int) -> None:
    """Collect the youngest generation every ``threshold`` allocations instead of Python's
    700, and keep what start-up made out of collections. With thousands of sockets a full
    collection walks millions of objects and stops every socket for a second or more; the
    default pace starts one every few seconds under load."""
    if threshold:
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(threshold, middle, oldest)
    gc.collect()
    gc.freeze()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    """API, GraphiQL and an in-process worker in one process."""
    from gql_media.api.app import create_app
    from gql_media.db.migrate import upgrade
    from gql_media.worker.main import running_worker

    _require_writable_data_dir(settings)
    upgrade(settings.effective_database_url, pgbouncer=settings.database_pgbouncer)
    if settings.embedded:
        log.info(
            "embedded mode: SQLite at %s, media in %s, in-process Redis stand-in",
            settings.effective_database_url,
            settings.effective_storage_dir,
        )
    app = create_app(settings, background=running_worker)
    url = browser_url(args.host, args.port)
    log.info("dashboard: %s/  GraphiQL: %s/graphql", url, url)
    _serve(app, settings, args)


def browser_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server listening on ``host``: a wildcard
    address (0.0.0.0, ::) is not one to open, so the loopback of its family stands in."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    """Create, list and revoke API keys, straight in the database."""
    if settings.embedded:
        from gql_media.db.migrate import upgrade

        _require_writable_data_dir(settings)
        upgrade(settings.effective_database_url)
    sys.exit(asyncio.run(_keys(settings, args)))


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from gql_media.errors import UserError
    from gql_media.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        try:
            return await _key_action(runtime.deps, args)
        except UserError as exc:
            print(f"error {exc.code.value}: {exc.message}", file=sys.stderr)
            return 2


async def _key_action(deps: Any, args: argparse.Namespace) -> int:
    from gql_media.services import auth

    if args.action == "create":
        if not args.name:
            print("error: keys create needs --name", file=sys.stderr)
            return 2
        info, key = await auth.create_key(
            deps,
            args.name,
            admin=args.admin,
            max_priority=getattr(args, "max_priority", None),
            max_running=getattr(args, "max_running", None),
        )
        kind = "admin key" if info.admin else "key"
        print(f"created {kind} {info.name!r} ({info.id}); it is shown only once:", file=sys.stderr)
        print(key)
        return 0
    if args.action == "list":
        for item in await auth.list_keys(deps):
            print(_key_line(item))
        return 0
    target = args.name or args.target
    if not target:
        print(f"error: keys {args.action} needs a key name or id", file=sys.stderr)
        return 2
    if args.action == "update":
        updated = await auth.update_key(
            deps,
            target,
            max_priority=getattr(args, "max_priority", auth.KEEP),
            max_running=getattr(args, "max_running", auth.KEEP),
        )
        if updated is None:
            print(f"error NOT_FOUND: no active key {target!r}", file=sys.stderr)
            return 1
        print(_key_line(updated))
        return 0
    if not await auth.revoke_key(deps, target):
        print(f"error NOT_FOUND: no active key {target!r}", file=sys.stderr)
        return 1
    print(f"revoked {target}", file=sys.stderr)
    return 0


def _key_line(item: Any) -> str:
    """A key as ``keys list`` shows it: id, prefix, role, state, created, limits, name."""
    state = "revoked" if item.revoked else "active"
    role = "admin" if item.admin else "user"
    limits = f"max-priority={_shown(item.max_priority)} max-running={_shown(item.max_running)}"
    created = item.created_at[:19]
    return f"{item.id}  {item.prefix}…  {role:5}  {state:7}  {created}  {limits}  {item.name}"


def _shown(limit: int | None) -> str:
    return "none" if limit is None else str(limit)


def _limit(text: str) -> int | None:
    """A key limit on the command line: a whole number, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or none") from None


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    from gql_media.api.app import create_app

    _require_servers(settings, "api")
    _require_writable_data_dir(settings)
    _serve(create_app(settings), settings, args)


def _serve(app: Any, settings: Settings, args: argparse.Namespace) -> None:
    """Serve ``app`` with uvicorn until it is stopped."""
    import uvicorn

    from gql_media.api.protocols import server_options

    _tune_gc(settings.gc_threshold)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=10,
        log_config=None,
        access_log=settings.access_log,
        **server_options(settings),  # uvicorn's protocols with our limits, as tests run them
    )


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    _require_servers(settings, "worker")
    _require_writable_data_dir(settings)
    grace = settings.shutdown_grace if args.grace is None else args.grace
    _run_event_loop(_run_worker(settings, grace))


async def _run_worker(settings: Settings, grace: float) -> None:
    from gql_media.observability.metrics import serving
    from gql_media.runtime import open_runtime
    from gql_media.worker.main import running_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        open_runtime(settings) as runtime,
        serving(runtime.deps.metrics, settings.worker_metrics_host, settings.worker_metrics_port),
        running_worker(runtime, grace=grace),
    ):
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


def cmd_bench(settings: Settings, args: argparse.Namespace) -> None:
    from gql_media.bench.runner import main as bench

    sys.exit(bench(args))


def build_parser() -> argparse.ArgumentParser:
    """Every command; the ones that are a client of a running api come from ``client_cli``."""
    parser = argparse.ArgumentParser(prog="gql-media", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_service_commands(commands)
    client_cli.add_generate(commands)
    _add_keys(commands)
    client_cli.add_jobs(commands)
    _add_bench(commands)
    return parser


def _add_service_commands(commands: Any) -> None:
    """The commands that run the service: serve, api, worker, migrate, export-schema."""
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


def _add_keys(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list, update or revoke API keys (talks to the database)",
        epilog="exit status: 0 done, 1 no such key, 2 bad request. A change reaches api "
        "processes within GQL_MEDIA_API_KEY_CACHE_SECONDS.",
    )
    keys.add_argument("action", choices=["create", "list", "update", "revoke"])
    keys.add_argument("target", nargs="?", help="update, revoke: the key's name or id")
    keys.add_argument("--name", help="create: a name for the key (unique)")
    keys.add_argument("--admin", action="store_true", help="create: the key sees every owner")
    keys.add_argument(
        "--max-priority",
        type=_limit,
        default=argparse.SUPPRESS,  # not given: unchanged (update), none (create)
        metavar="N|none",
        help="create, update: the highest priority (0 to 10) the key's jobs may ask for; "
        "none: no limit (the default)",
    )
    keys.add_argument(
        "--max-running",
        type=_limit,
        default=argparse.SUPPRESS,  # not given: unchanged (update), none (create)
        metavar="N|none",
        help="create, update: how many of the key's jobs may run at once; none: no cap "
        "(the default)",
    )
    keys.set_defaults(func=cmd_keys)


def _add_bench(commands: Any) -> None:
    from gql_media.bench.options import add_arguments as bench_arguments

    bench = commands.add_parser(
        "bench",
        help="benchmark a deployment (throughput, latencies, fan-out, image paths)",
        description="Bounded benchmark: prints a table; --json writes the details.",
    )
    bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"gql-media: invalid settings: {problems}")
    _configure_logging(settings)
    args.func(settings, args)
