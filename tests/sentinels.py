"""A private Redis Sentinel deployment for failover tests: a primary, a replica that
replicates through a ``Link`` (so a test can hold back the last writes and drop them, as a
lagging replica would lose them), and three sentinels (quorum 2), each a child process on
a free port with its files in a test's directory. The machine's own Redis is never touched;
only these processes are stopped, by their pids."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.support import free_port

MASTER = "gqlmedia"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
BINARIES = ("redis-server", "redis-sentinel")


def missing_binaries() -> list[str]:
    """The Redis binaries this deployment needs that are not on PATH (Debian:
    ``apt-get install redis-server redis-sentinel``)."""
    return [name for name in BINARIES if shutil.which(name) is None]


class Link:
    """Forwards a local port to ``target_port`` until ``hold``; from then on what it reads is
    thrown away (the replica never gets it), and ``drop`` closes every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._flowing = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def hold(self) -> None:
        self._flowing = False

    async def drop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._forward(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the primary is gone
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._flowing:
                writer.write(data)
                await writer.drain()
        writer.close()


class Node:
    """One child process (redis-server or redis-sentinel) listening on ``port``."""

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.port = port
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:  # until it accepts connections
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{command[0]} did not start; see {log}")
            time.sleep(0.02)

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL, by pid, and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _redis_server(directory: Path, *extra: str) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(shutil.which("redis-server")),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        *extra,
    ]
    return Node(command, port, directory / "redis.log")


def _sentinel(directory: Path, primary_port: int) -> Node:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "sentinel.conf"  # the sentinel rewrites it as it learns
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    command = [str(shutil.which("redis-sentinel")), str(config)]
    return Node(command, port, directory / "sentinel.log")


class SentinelDeployment:
    """``primary``, ``replica`` (through ``link``) and ``sentinels``; ``start`` returns once
    every sentinel knows the replica and the other two sentinels."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[Node] = []
        self.link: Link | None = None

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{node.port}" for node in self.sentinels]

    async def start(self) -> None:
        self.primary = self._track(_redis_server(self.workdir / "primary"))
        self.link = Link(self.primary.port)
        await self.link.start()
        self.replica = self._track(
            _redis_server(self.workdir / "replica", "--replicaof", "127.0.0.1", str(self.link.port))
        )
        self.sentinels = [
            self._track(_sentinel(self.workdir / f"sentinel{i}", self.primary.port))
            for i in range(3)
        ]
        await self._until_ready()

    def _track(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    async def _until_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not await self._ready():
                await asyncio.sleep(0.1)

    async def _ready(self) -> bool:
        replica = self.replica.client()
        try:
            info = await replica.info("replication")
        finally:
            await replica.aclose()
        if info.get("master_link_status") != "up":
            return False
        for node in self.sentinels:
            sentinel = node.client()
            try:
                state = await sentinel.sentinel_master(MASTER)
            finally:
                await sentinel.aclose()
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return True

    async def until_master_is(self, node: Node, timeout: float = 30.0) -> None:
        """Wait until every sentinel names ``node`` the master."""
        wanted = ("127.0.0.1", node.port)
        async with asyncio.timeout(timeout):
            while True:
                answers = []
                for sentinel in self.sentinels:
                    client = sentinel.client()
                    try:
                        reply = await client.execute_command(
                            "SENTINEL", "get-master-addr-by-name", MASTER
                        )
                    finally:
                        await client.aclose()
                    answers.append((reply[0].decode(), int(reply[1])))
                if all(answer == wanted for answer in answers):
                    return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        if self.link is not None:
            await self.link.drop()
