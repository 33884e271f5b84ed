"""Running the scheduler's Lua: as Redis functions where the server has them, else as
scripts.

A script defines every one of the scheduler's functions again each time it runs, and works
out the keys' names again: about a fifth of a short call's time in Redis. Redis 7's
functions are defined once, when their library is loaded (``FUNCTION LOAD``), and called
by name (``FCALL``). The library is loaded by the first call of each process (a process
that finds it loaded already leaves it), and again when Redis has lost it (a restart that
kept no data, ``FUNCTION FLUSH``); replicas get it with the rest of the data. Where the
server has no functions or the user may not load them, the same code runs as scripts
(``EVALSHA``, loaded on a NOSCRIPT).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gql_media.adapters.scheduling.lua import Code

log = logging.getLogger(__name__)


class Programs:
    """``await programs(call, args)`` runs the call ``call`` of ``code`` with ``args``
    (no keys: the names are worked out from the arguments). ``functions=False`` runs the
    scripts only."""

    def __init__(self, redis: Redis, code: Code, *, functions: bool = True) -> None:
        self._redis = redis
        self._code = code
        self._scripts = {call: redis.register_script(text) for call, text in code.scripts.items()}
        self._library = code.library.partition("\n")[0].removeprefix("#!lua name=")
        # None until the first call finds out whether the library can be used
        self._functions: bool | None = None if functions else False

    @property
    def functions(self) -> bool | None:
        """Whether calls run as functions (None: not known before the first call)."""
        return self._functions

    async def __call__(self, call: str, args: Sequence[str | int | bytes]) -> Any:
        if self._functions is None:
            self._functions = await self._load()
        if not self._functions:
            return await self._scripts[call](args=args)
        function = self._code.functions[call]
        try:
            return await self._redis.fcall(function, 0, *args)  # type: ignore[arg-type,misc]
        except ResponseError:
            if await self._loaded():
                raise  # the call itself failed
        # Redis lost the library (restarted without its data, or flushed): load it again
        if not await self._load():
            self._functions = False
            return await self._scripts[call](args=args)
        return await self._redis.fcall(function, 0, *args)  # type: ignore[arg-type,misc]

    async def _loaded(self) -> bool:
        """Whether the server holds the library."""
        try:
            found = await self._redis.function_list(library=self._library)  # type: ignore[misc]
        except ResponseError:
            return False
        return bool(found)

    async def _load(self) -> bool:
        """Load the library unless the server holds it; False when it cannot (no functions
        before Redis 7, or a user not allowed to load them)."""
        try:
            await self._redis.function_load(self._code.library)  # type: ignore[misc]
        except ResponseError as exc:
            if await self._loaded():
                return True  # another process loaded it meanwhile
            log.warning("the scheduler's Lua runs as scripts: Redis functions: %s", exc)
            return False
        return True
