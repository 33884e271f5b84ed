"""Command-line options of ``gql-media bench``, and the typed ``Options`` built from them."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = (
    "submit",
    "pickup",
    "e2e",
    "drain",
    "fanout-updated",
    "fanout-events",
    "images",
    "scheduler",
)
# the letters of the issue that listed them, accepted as well
ALIASES = {
    "a": ("submit",),
    "b": ("pickup",),
    "c": ("e2e",),
    "d": ("drain",),
    "e": ("fanout-updated", "fanout-events"),
    "fanout": ("fanout-updated", "fanout-events"),
    "f": ("images",),
}


class OptionsError(Exception):
    """The options do not name a deployment the bench can use."""


@dataclass(frozen=True)
class Options:
    mode: str  # "url", "local" or "embedded"
    url: str | None
    database_url: str | None
    redis_url: str | None
    namespace: str | None
    workers: int
    workers_given: int | None
    key: str | None
    only: tuple[str, ...]
    json_path: Path | None
    log_dir: Path | None
    submit_concurrency: tuple[int, ...]
    submit_requests: int
    submit_seconds: float
    pickup_jobs: int
    e2e_jobs: int
    drain_jobs: int
    fanout_connections: int
    events_connections: int
    events_rate: float
    events_seconds: float
    fanout_job_ms: int
    fanout_timeout: float
    client_procs: int
    connect_concurrency: int
    compression: bool
    image_megapixels: float
    image_repeat: int
    schedule_jobs: int = 100_000
    schedule_owners: int = 1_000
    schedule_picks: int = 2_000
    tree: Path | None = None  # the source tree the processes start from (None: this build)
    baseline: Path | None = None  # another build's tree, compared with this one
    baseline_database_url: str | None = None
    baseline_redis_url: str | None = None
    rounds: int = 1


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,16,64, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    chosen: list[str] = []
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        expanded = ALIASES.get(name, (name,))
        for scenario in expanded:
            if scenario not in SCENARIOS:
                raise argparse.ArgumentTypeError(
                    f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}"
                )
            if scenario not in chosen:
                chosen.append(scenario)
    return tuple(s for s in SCENARIOS if s in chosen)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_deployment(parser)
    parser.add_argument(
        "--only",
        type=_scenarios,
        default=SCENARIOS,
        help=f"comma-separated scenarios: {', '.join(SCENARIOS)} (or a-f)",
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="write the results here")
    _add_baseline(parser)
    _add_sizes(parser)


def _add_baseline(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "comparing two builds (--local): both run side by side and take turns on every scenario"
    )
    group.add_argument(
        "--baseline",
        type=Path,
        help="the source tree of the build to compare with (e.g. `git worktree add /tmp/base "
        "<rev>`); its processes run with this interpreter and PYTHONPATH=<tree>",
    )
    group.add_argument(
        "--baseline-database-url", help="a scratch database of its own for the baseline"
    )
    group.add_argument("--baseline-redis-url", help="Redis for the baseline (default: --redis-url)")
    group.add_argument(
        "--rounds", type=int, default=5, help="times each scenario runs on each build"
    )


def _add_deployment(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("deployment (one of; default: --local when env is set)")
    exclusive = where.add_mutually_exclusive_group()
    exclusive.add_argument("--url", help="an api that is already running, with its workers")
    exclusive.add_argument(
        "--local",
        action="store_true",
        help="start an api and worker processes here on PostgreSQL and Redis (migrates the "
        "database first); use a scratch database: the bench adds jobs",
    )
    exclusive.add_argument(
        "--embedded",
        action="store_true",
        help="start `gql-media serve` (one process, SQLite, in-process Redis) in a temp dir",
    )
    where.add_argument("--database-url", help="for --local (default: $GQL_MEDIA_DATABASE_URL)")
    where.add_argument("--redis-url", help="for --local (default: $GQL_MEDIA_REDIS_URL)")
    where.add_argument("--namespace", help="Redis namespace for --local (default: a fresh one)")
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes: how many to start (--local, default 1), or how many the "
        "deployment runs (--url; needed for the per-worker drain rate)",
    )
    where.add_argument("--key", default=os.environ.get("GQL_MEDIA_API_KEY"), help="API key")
    where.add_argument("--log-dir", type=Path, help="keep the logs of started processes here")


def _add_sizes(parser: argparse.ArgumentParser) -> None:
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--submit-concurrency", type=_ints, default=(1, 16, 64))
    sizes.add_argument("--submit-requests", type=int, default=500, help="per concurrency level")
    sizes.add_argument("--submit-seconds", type=float, default=20, help="cap per level")
    sizes.add_argument("--pickup-jobs", type=int, default=100)
    sizes.add_argument("--e2e-jobs", type=int, default=100)
    sizes.add_argument("--drain-jobs", type=int, default=500)
    sizes.add_argument(
        "--fanout-connections",
        type=int,
        default=200,
        help="jobUpdated sockets, one job each (try 1000, 5000, 10000 with --client-procs)",
    )
    sizes.add_argument("--events-connections", type=int, default=200, help="jobEvents sockets")
    sizes.add_argument("--events-rate", type=float, default=20, help="jobs/s during fan-out")
    sizes.add_argument("--events-seconds", type=float, default=5)
    sizes.add_argument(
        "--fanout-job-ms",
        type=int,
        default=200,
        help="job duration when workers cannot be paused (--url, --embedded)",
    )
    sizes.add_argument("--fanout-timeout", type=float, default=60)
    sizes.add_argument(
        "--client-procs", type=int, default=1, help="processes holding the fan-out sockets"
    )
    sizes.add_argument("--connect-concurrency", type=int, default=100, help="handshakes at once")
    sizes.add_argument(
        "--no-compression",
        dest="compression",
        action="store_false",
        help="do not negotiate permessage-deflate (browsers do)",
    )
    sizes.add_argument("--image-megapixels", type=float, default=24)
    sizes.add_argument("--image-repeat", type=int, default=3)
    sizes.add_argument(
        "--schedule-jobs", type=int, default=100_000, help="jobs waiting in the scheduler"
    )
    sizes.add_argument("--schedule-owners", type=int, default=1_000, help="their owners")
    sizes.add_argument("--schedule-picks", type=int, default=2_000, help="starts measured")


def build_options(args: argparse.Namespace, env: dict[str, str] | None = None) -> Options:
    """Options from parsed arguments; OptionsError when no usable deployment is named."""
    env = dict(os.environ) if env is None else env
    database_url = args.database_url or env.get("GQL_MEDIA_DATABASE_URL")
    redis_url = args.redis_url or env.get("GQL_MEDIA_REDIS_URL")
    if args.url:
        mode = "url"
    elif args.embedded:
        mode = "embedded"
    else:
        mode = "local"
        if not (database_url and database_url.startswith("postgresql") and redis_url):
            raise OptionsError(
                "gql-media bench needs a deployment: --url URL of a running api, or --local "
                "with PostgreSQL and Redis (--database-url/--redis-url or "
                "GQL_MEDIA_DATABASE_URL/GQL_MEDIA_REDIS_URL), or --embedded for the "
                "single-process mode"
            )
    baseline = _baseline(args, mode, database_url)
    return Options(
        mode=mode,
        url=args.url,
        database_url=database_url,
        redis_url=redis_url,
        namespace=args.namespace,
        workers=args.workers or 1,
        workers_given=args.workers,
        key=args.key,
        only=args.only,
        json_path=args.json_path,
        log_dir=args.log_dir,
        submit_concurrency=args.submit_concurrency,
        submit_requests=args.submit_requests,
        submit_seconds=args.submit_seconds,
        pickup_jobs=args.pickup_jobs,
        e2e_jobs=args.e2e_jobs,
        drain_jobs=args.drain_jobs,
        fanout_connections=args.fanout_connections,
        events_connections=args.events_connections,
        events_rate=args.events_rate,
        events_seconds=args.events_seconds,
        fanout_job_ms=args.fanout_job_ms,
        fanout_timeout=args.fanout_timeout,
        client_procs=max(1, args.client_procs),
        connect_concurrency=max(1, args.connect_concurrency),
        compression=args.compression,
        image_megapixels=args.image_megapixels,
        image_repeat=max(1, args.image_repeat),
        schedule_jobs=max(1, args.schedule_jobs),
        schedule_owners=max(1, args.schedule_owners),
        schedule_picks=max(1, args.schedule_picks),
        baseline=baseline,
        baseline_database_url=args.baseline_database_url if baseline else None,
        baseline_redis_url=args.baseline_redis_url if baseline else None,
        rounds=max(1, args.rounds) if baseline else 1,
    )


IN_PROCESS = ("images", "scheduler")  # run by the bench itself, from this build alone


def _baseline(args: argparse.Namespace, mode: str, database_url: str | None) -> Path | None:
    """The baseline's tree when one is given; OptionsError when it cannot be compared."""
    if args.baseline is None:
        return None
    tree: Path = args.baseline.resolve()
    if mode != "local":
        raise OptionsError("--baseline compares two deployments started here: use --local")
    if not (tree / "gql_media" / "__main__.py").is_file():
        raise OptionsError(f"--baseline {tree}: not a source tree of gql-media (no gql_media/)")
    if not args.baseline_database_url or args.baseline_database_url == database_url:
        raise OptionsError(
            "--baseline needs --baseline-database-url, a scratch database of its own"
        )
    in_process = [name for name in args.only if name in IN_PROCESS]
    if in_process:
        raise OptionsError(
            f"--baseline compares deployments; {', '.join(in_process)} run in the bench itself: "
            "leave them out of --only"
        )
    return tree
