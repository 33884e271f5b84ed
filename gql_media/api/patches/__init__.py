"""Every use of a dependency's internals in the api, one module per patched thing.

Each module says what it buys, which internal names it relies on, and what takes its place
when it is off; ``tests/test_patches.py`` fails when those names change shape. The
dependencies are pinned to one minor version each (``pyproject.toml``).

Speed patches, switched by ``GQL_MEDIA_PATCHES`` (``all`` by default, ``none``, or a
comma-separated list of these names); off, the dependency's public path serves instead:

- ``uvicorn_ws``: a lighter WebSocket protocol per socket (memory), and writes of
  several messages at once (used by ``direct_events``).
- ``shared_results``: a subscription event's result rendered once for every subscriber
  asking the same (graphql-core's executor).
- ``direct_events``: subscription events written straight to the socket, past
  strawberry's and graphql-core's per-subscriber path (needs the two above).
- ``strawberry_results``: error-free subscription events skip strawberry's per-result
  extension round.
- ``strawberry_validation``: validation results cached per document.
- ``strawberry_inputs``: input objects built by a plan made once per type.
- ``strawberry_ws``: the graphql-transport-ws handler lets go of its finished
  connection_init timeout task.
- ``arq_wakeups`` and ``arq_scripts`` are arq's (``gql_media/adapters/arq_patch/``): a job
  enqueued while a worker idles starts at once, not at its next poll; arq's enqueue, start
  and end of a job take one round trip each.

Protections, always on (they are security features with no public path to them):

- ``uvicorn_http``: time and size limits on requests, and the connection cap.
- ``uvicorn_ws``'s ``GuardedWebSocketProtocol``: the bounded send buffer (4413) and the
  close of a socket whose client does not read.
- ``strawberry_ws``'s handlers: the caps on sockets and operations per key and socket.

Nothing to switch, as they are how the api reads strawberry, not speed:
``strawberry_operations`` (strawberry's own way of refusing an operation type on a
transport, which the api raises and recognises) and ``strawberry_http`` (malformed requests
answered 400 through the view's reading hooks).
"""

from __future__ import annotations

from gql_media.settings import PATCHES, Settings

__all__ = ["PATCHES", "enabled"]


def enabled(settings: Settings, name: str) -> bool:
    """Whether the speed patch ``name`` is on."""
    assert name in PATCHES, name
    return name in settings.patches_on
