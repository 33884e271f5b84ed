"""Fault injection helpers: a private redis-server to kill and restart, and a TCP proxy
that can cut every connection to PostgreSQL, or stop forwarding without closing anything
(a network partition). The machine's own servers are never touched."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import free_port


@contextlib.contextmanager
def gql_media_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``gql-media <args>`` as a child process with ``env``, its output appended to ``log``,
    killed at the end if alive."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gql_media", *args], env=env, stdout=out, stderr=out
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def worker_process(
    env: dict[str, str], log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``gql-media worker`` as a child process (``gql_media_process``)."""
    return gql_media_process(["worker"], env, log)


def worker_env(**settings: Any) -> dict[str, str]:
    """This process's environment with no GQL_MEDIA_* variable but those of ``settings``
    (lists comma-separated)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    for name, value in settings.items():
        text = ",".join(value) if isinstance(value, list) else str(value)
        env[f"GQL_MEDIA_{name.upper()}"] = text
    env["GQL_MEDIA_WORKER_METRICS_PORT"] = "0"
    return env


class PrivateRedis:
    """A redis-server child process on its own port, with no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # wait until it accepts connections
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TcpProxy:
    """Forwards a local port to ``target``. ``cut()`` drops every connection and refuses new
    ones until ``restore()``, like a database that went away and came back. ``blackhole()``
    stops forwarding in both directions but closes nothing and accepts new connections, like
    a partition that drops packets: peers see no reset, only silence, until ``heal()``
    (bytes held meanwhile are forwarded then, as TCP would retransmit them)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def blackhole(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()  # a partition: the connection is open, nothing answers
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers.difference_update({writer, up_writer})

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # read before the partition: held until it heals
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@contextlib.contextmanager
def small_filesystem(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the block (needs root, or the test
    is skipped): a disk that really fills up."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full; returns the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(b"\0" * 65536)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError):  # the last partial pages too
        with filler.open("ab", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 512)
    return filler
