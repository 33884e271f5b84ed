"""A TCP proxy that delays every byte by a fixed time in each direction: a network link with
latency, for kernels without tc's netem (deploy/multihost.sh uses it between hosts).

    python deploy/delay_proxy.py --listen 10.77.0.10:15432 --target 127.0.0.1:5432 --delay-ms 2

Each chunk read from one side is written to the other once ``--delay-ms`` has passed since
it was read, in order; bandwidth is not limited. Standard library only (uvloop when present).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            # drain only when the buffer is large: one chunk's wait must not delay the next
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, data))
    except OSError:
        pass
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(OSError):
            await sender


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pump(client_r, upstream_w, delay),
            pump(upstream_r, client_w, delay),
            return_exceptions=True,
        )
        for writer in (client_w, upstream_w):
            writer.close()

    server = await asyncio.start_server(handle, *listen, backlog=4096)
    async with server:
        await server.serve_forever()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--target", type=address, required=True)
    parser.add_argument("--delay-ms", type=float, required=True, help="one way")
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(args.listen, args.target, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
