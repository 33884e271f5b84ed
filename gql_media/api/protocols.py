"""How the api runs uvicorn, for ``gql-media serve``/``api`` and tests.

The protocol classes live in ``api.patches``: the HTTP one and the WebSocket send-buffer
bound are protections, always on; the lighter WebSocket protocol is the ``uvicorn_ws`` speed
patch (off: the guarded protocol with uvicorn's own queue and event).
"""

from __future__ import annotations

from typing import Any

from gql_media.api.patches import enabled
from gql_media.api.patches.uvicorn_http import GuardedHttpProtocol, HttpLimits
from gql_media.api.patches.uvicorn_ws import GuardedWebSocketProtocol, LightWebSocketProtocol
from gql_media.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the api (host, port and logging aside)."""
    limits = HttpLimits(
        header_timeout=settings.header_timeout,
        max_header_bytes=settings.max_header_bytes,
        body_timeout=settings.body_timeout,
        body_min_rate=settings.body_min_rate,
        body_idle_timeout=settings.body_idle_timeout,
        max_connections=settings.max_connections or default_max_connections(settings),
    )
    ws: type[GuardedWebSocketProtocol] = (
        LightWebSocketProtocol if enabled(settings, "uvicorn_ws") else GuardedWebSocketProtocol
    )
    return {
        "http": type("HttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "waiting": {}}),
        "ws": type(
            "WebSocketProtocol", (ws,), {"max_send_buffer": settings.ws_max_send_buffer_bytes}
        ),
        # job updates are small JSON: compressing costs ~40 KB per socket and CPU per
        # message for little gain
        "ws_per_message_deflate": False,
        "ws_max_size": settings.ws_max_message_bytes,  # uvicorn's default: 16 MiB
    }


def default_max_connections(settings: Settings) -> int:
    """The open-file limit, less what a process keeps open besides its clients: its
    database pool (twice: it may overflow), Redis, logs and files being processed."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 10_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, soft - 2 * settings.database_pool_size - 100)
