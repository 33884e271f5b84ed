"""The deployment under test: one given by URL, or api and worker processes started here."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from gql_media.bench.http import Api, HttpError
from gql_media.bench.options import Options
from gql_media.bench.stats import Report


class TargetError(Exception):
    """The deployment could not be started or reached."""


@dataclass
class Target:
    """Where requests go, and what the bench may do to the processes behind it."""

    mode: str  # "url", "local" or "embedded"
    api: Api
    api_pid: int | None = None
    workers: int | None = None  # worker processes, when known
    _worker_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _paused: bool = False

    @property
    def url(self) -> str:
        return self.api.base_url

    @property
    def url_ws(self) -> str:
        return self.api.ws_url

    @property
    def can_pause(self) -> bool:
        """Workers can be stopped while jobs pile up (only worker processes started here)."""
        return bool(self._worker_procs)

    def pause_workers(self) -> None:
        for proc in self._worker_procs:
            proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume_workers(self) -> None:
        for proc in self._worker_procs:
            proc.send_signal(signal.SIGCONT)
        self._paused = False

    @contextmanager
    def workers_paused(self) -> Iterator[None]:
        self.pause_workers()
        try:
            yield
        finally:
            if self._paused:
                self.resume_workers()

    def worker_cpu_seconds(self) -> float | None:
        """CPU time (user and system) the worker processes started here have used."""
        return _cpu_seconds([proc.pid for proc in self._worker_procs])

    def api_cpu_seconds(self) -> float | None:
        """CPU time the api process has used, when it runs on this machine."""
        return _cpu_seconds([self.api_pid] if self.api_pid is not None else [])

    def api_rss_kib(self) -> int | None:
        """Resident memory of the api process (``VmRSS``), when it runs on this machine."""
        if self.api_pid is None:
            return None
        try:
            status = Path(f"/proc/{self.api_pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None


def _cpu_seconds(pids: list[int]) -> float | None:
    """User plus system time of ``pids`` from ``/proc`` (None when unknown): CPU per job
    varies far less from run to run than wall-clock rates on a shared machine."""
    if not pids:
        return None
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_env(options: Options, data_dir: Path, embedded: bool) -> dict[str, str]:
    """The environment of processes started here: the caller's GQL_MEDIA_* tuning, with
    storage in a scratch directory and a Redis namespace of the bench's own, so no worker
    of a running deployment takes its jobs (or the reverse)."""
    env = dict(os.environ)
    for name in ("GQL_MEDIA_STORAGE_DIR", "GQL_MEDIA_DATABASE_URL", "GQL_MEDIA_REDIS_URL"):
        env.pop(name, None)
    env["GQL_MEDIA_DATA_DIR"] = str(data_dir)
    env["GQL_MEDIA_STORAGE_BACKEND"] = "local"
    # the fan-out sockets all come from this machine, as one key or address
    env.setdefault("GQL_MEDIA_MAX_SOCKETS_PER_KEY", "0")
    env.setdefault("GQL_MEDIA_MAX_SUBSCRIPTIONS_PER_KEY", "0")
    env["GQL_MEDIA_REDIS_NAMESPACE"] = (
        options.namespace or f"gql_media_bench_{uuid.uuid4().hex[:8]}"
    )
    if options.tree is not None:  # another build's gql_media ahead of this one's
        env["PYTHONPATH"] = os.pathsep.join(
            [str(options.tree), *filter(None, [env.get("PYTHONPATH")])]
        )
    if not embedded:
        assert options.database_url and options.redis_url
        env["GQL_MEDIA_DATABASE_URL"] = options.database_url
        env["GQL_MEDIA_REDIS_URL"] = options.redis_url
    return env


class Processes:
    """Child processes of ``gql-media`` with their logs; all stopped on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                # -P: not the working directory's gql_media ahead of PYTHONPATH's (a tree's)
                [sys.executable, "-P", "-m", "gql_media", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc))
        return proc

    def run(self, name: str, *args: str) -> None:
        proc = self.start(name, *args)
        if proc.wait() != 0:
            raise TargetError(f"gql-media {' '.join(args)} failed:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:  # a process held by a tracer (a profiler) dies only once it lets go
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    print(f"bench: process {proc.pid} did not die; left behind", file=sys.stderr)


async def _until_ready(api: Api, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise TargetError("the api exited during start-up")
        with suppress(OSError, HttpError, asyncio.IncompleteReadError):
            status, _ = await api.request("GET", "/readyz")
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise TargetError(f"the api was not ready within {timeout:.0f}s")
        await asyncio.sleep(0.05)  # polling a process that is starting up


@asynccontextmanager
async def open_target(options: Options) -> AsyncIterator[Target]:
    """The target named by the options; processes started here are stopped on exit."""
    if options.url:
        api = Api(options.url, options.key)
        try:
            yield Target(mode="url", api=api, workers=options.workers_given)
        finally:
            api.close()
        return
    embedded = options.mode == "embedded"
    with tempfile.TemporaryDirectory(prefix="gql-media-bench-") as tmp:
        log_dir = options.log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        processes = Processes(_child_env(options, Path(tmp), embedded), log_dir)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = Api(url, options.key)
        api_log = "serve" if embedded else "api"
        try:
            if embedded:
                api_proc = processes.start("serve", "serve", "--port", str(port))
                target = Target(mode="embedded", api=api, api_pid=api_proc.pid, workers=1)
            else:
                processes.run("migrate", "migrate")
                api_proc = processes.start("api", "api", "--port", str(port))
                workers = [
                    processes.start(f"worker-{i}", "worker", "--grace", "2")
                    for i in range(options.workers)
                ]
                target = Target(
                    mode="local",
                    api=api,
                    api_pid=api_proc.pid,
                    workers=options.workers,
                    _worker_procs=workers,
                )
            try:
                await _until_ready(api, api_proc, timeout=60)
            except TargetError as exc:
                raise TargetError(f"{exc}:\n{processes.tail(api_log)}") from exc
            yield target
        finally:
            api.close()
            processes.stop()


# a scenario of the bench: runs against a target and adds its results to the report
Scenario = Callable[[Target, Options, Report], Awaitable[None]]
