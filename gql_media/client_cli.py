"""``gql-media generate`` and ``gql-media jobs``: the commands that are a client of a running
api (GraphQL over HTTP, jobs followed over a WebSocket), unlike the ones in ``cli`` that run
or manage the service itself.

Exit status: 0 done, 1 the job failed or was canceled, 2 the request was refused, 3 the api
is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from gql_media.client import Client
    from gql_media.settings import Settings

    Command = Callable[[Client, argparse.Namespace], Awaitable[int]]

EXIT_OK, EXIT_JOB_FAILED, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 1, 2, 3


def add_generate(commands: Any) -> None:
    """``gql-media generate``, on the parsers of ``argparse``'s ``add_subparsers``."""
    generate = commands.add_parser(
        "generate",
        help="submit a generateImage job; with --wait, follow it live and save the images",
        epilog="exit status: 0 done, 1 job failed or canceled, 2 request refused, "
        "3 api unreachable",
    )
    generate.add_argument("prompt")
    generate.add_argument("--size", type=_size, default=(512, 512), help="WIDTHxHEIGHT")
    generate.add_argument("--provider")
    generate.add_argument("--model")
    generate.add_argument("--num", type=int, default=1, help="number of images (1-4)")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--format", default="png", choices=["png", "jpeg", "webp"])
    generate.add_argument("--wait", action="store_true", help="show live progress until done")
    generate.add_argument("--out", help="save the images here (implies --wait)")
    _client_options(generate)
    generate.set_defaults(func=cmd_generate)


def add_jobs(commands: Any) -> None:
    """``gql-media jobs``, on the parsers of ``argparse``'s ``add_subparsers``."""
    jobs = commands.add_parser(
        "jobs", help="list, show, cancel or retry jobs, or mint a watch token for one"
    )
    jobs.add_argument("action", choices=["list", "show", "cancel", "retry", "watch-token"])
    jobs.add_argument("id", nargs="?")
    jobs.add_argument("--status", action="append", help="list: only this status (repeatable)")
    jobs.add_argument("--first", type=int, default=20, help="list: how many")
    jobs.add_argument("--ttl", type=int, help="watch-token: seconds it lives")
    jobs.add_argument(
        "--allow-cancel", action="store_true", help="watch-token: it may cancel the job"
    )
    _client_options(jobs)
    jobs.set_defaults(func=cmd_jobs)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("GQL_MEDIA_URL", "http://127.0.0.1:8000"),
        help="the api (default: $GQL_MEDIA_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--key", default=os.environ.get("GQL_MEDIA_API_KEY"), help="API key ($GQL_MEDIA_API_KEY)"
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, not {text!r}") from None


def cmd_generate(settings: Settings, args: argparse.Namespace) -> None:
    sys.exit(asyncio.run(_with_client(_generate, args)))


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> None:
    sys.exit(asyncio.run(_with_client(_jobs, args)))


async def _with_client(command: Command, args: argparse.Namespace) -> int:
    """Run ``command`` on a client of ``args.url``; a refused or failed request is its code
    on stderr and exit status 2, an api that cannot be reached exit status 3."""
    from gql_media.client import Client, ClientError

    async with Client(args.url, args.key) as client:
        try:
            return await command(client, args)
        except ClientError as exc:
            print(f"error {exc.code}: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE if exc.code == "CONNECTION_FAILED" else EXIT_REJECTED


def _print_user_errors(errors: list[dict[str, Any]]) -> int:
    for error in errors:
        field = f" ({error['field']})" if error.get("field") else ""
        print(f"error {error['code']}{field}: {error['message']}", file=sys.stderr)
    return EXIT_REJECTED


# -- generate ------------------------------------------------------------------------------


async def _generate(client: Client, args: argparse.Namespace) -> int:
    from gql_media.client import GENERATE

    width, height = args.size
    fields: dict[str, Any] = {
        "prompt": args.prompt,
        "width": width,
        "height": height,
        "numOutputs": args.num,
        "outputFormat": args.format.upper(),
    }
    for name, value in (("provider", args.provider), ("model", args.model), ("seed", args.seed)):
        if value is not None:
            fields[name] = value
    payload = (await client.execute(GENERATE, {"input": fields}))["generateImage"]
    if payload["userErrors"]:
        return _print_user_errors(payload["userErrors"])
    job = payload["job"]
    print(job["id"])
    if not (args.wait or args.out):
        return EXIT_OK
    return await _wait_and_save(client, job, args.out)


async def _wait_and_save(client: Client, job: dict[str, Any], out: str | None) -> int:
    """Follow ``job`` to its end with a progress bar, then save its outputs in ``out``."""
    bar = _ProgressBar()
    async for update in client.follow(job["id"]):
        job = update
        bar.show(job["status"], job["progress"])
    bar.close()
    if job["status"] != "SUCCEEDED":
        error = job.get("error") or {}
        print(
            f"job {job['status']}: {error.get('code', '')} {error.get('message', '')}".rstrip(),
            file=sys.stderr,
        )
        return EXIT_JOB_FAILED
    target = Path(out or ".")
    target.mkdir(parents=True, exist_ok=True)
    for index, output in enumerate(job["outputs"]):
        # the extension of the URL's path: signed URLs carry a query string
        suffix = PurePosixPath(urlsplit(output["url"]).path).suffix
        path = target / f"{job['id']}-{output.get('name') or index}{suffix}"
        await client.download(output["url"], path)
        print(path)
    return EXIT_OK


class _ProgressBar:
    """A progress line on stderr: redrawn in place on a terminal, one line per state if not."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: str | None = None

    def show(self, status: str, progress: float) -> None:
        filled = int(progress * 30)
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {progress * 100:5.1f}% {status}"
        if self.tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif status != self.last:
            print(line, file=sys.stderr, flush=True)
        self.last = status

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


# -- jobs ----------------------------------------------------------------------------------


async def _jobs(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        return await _list_jobs(client, args)
    if args.id is None:
        print(f"gql-media jobs {args.action} needs a job id", file=sys.stderr)
        return EXIT_REJECTED
    if args.action == "show":
        return await _show_job(client, args.id)
    if args.action == "watch-token":
        return await _watch_token(client, args)
    return await _change_job(client, args.action, args.id)


async def _list_jobs(client: Client, args: argparse.Namespace) -> int:
    from gql_media.client import LIST_JOBS

    variables: dict[str, Any] = {"first": args.first}
    if args.status:
        variables["filter"] = {"status": [s.upper() for s in args.status]}
    page = (await client.execute(LIST_JOBS, variables))["jobs"]
    for edge in page["edges"]:
        job = edge["node"]
        print(
            f"{job['id']}  {job['status']:<9} {job['progress'] * 100:5.1f}%  "
            f"{job['kind']:<14} {job['provider']:<8} {(job['prompt'] or '')[:40]}"
        )
    print(f"{len(page['edges'])} of {page['totalCount']}", file=sys.stderr)
    return EXIT_OK


async def _show_job(client: Client, job_id: str) -> int:
    from gql_media.client import GET_JOB

    job = (await client.execute(GET_JOB, {"id": job_id}))["job"]
    if job is None:
        print(f"error NOT_FOUND: no job {job_id}", file=sys.stderr)
        return EXIT_REJECTED
    print(json.dumps(job, indent=2))
    return EXIT_OK


async def _change_job(client: Client, action: str, job_id: str) -> int:
    """``cancel`` or ``retry`` the job; prints its id and new status."""
    from gql_media.client import CANCEL, RETRY

    query, field = (CANCEL, "cancelJob") if action == "cancel" else (RETRY, "retryJob")
    payload = (await client.execute(query, {"id": job_id}))[field]
    if payload["userErrors"]:
        return _print_user_errors(payload["userErrors"])
    print(f"{payload['job']['id']} {payload['job']['status']}")
    return EXIT_OK


async def _watch_token(client: Client, args: argparse.Namespace) -> int:
    """Mint a watch token for the job: the token on stdout, its expiry on stderr."""
    from gql_media.client import WATCH_TOKEN

    variables = {"id": args.id, "ttl": args.ttl, "cancel": args.allow_cancel}
    payload = (await client.execute(WATCH_TOKEN, variables))["createWatchToken"]
    if payload["userErrors"]:
        return _print_user_errors(payload["userErrors"])
    print(payload["token"])
    print(f"expires {payload['expiresAt']}", file=sys.stderr)
    return EXIT_OK
