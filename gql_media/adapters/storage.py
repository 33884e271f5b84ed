"""Media storage by key (``jobs/<id>/0.png``): a local directory, or an S3-compatible bucket.

Keys are checked before use, so none can name anything outside the root or the prefix.
Both backends receive finished files from ``scratch_path()`` (a local directory) and hand
out local copies of stored files for processing with ``local_copy()``.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Protocol

from gql_media.errors import ErrorCode, UserError

SCRATCH = ".scratch"
INLINE_WRITE_BYTES = 64 * 1024  # smaller files are written on the event loop


def check_key(key: str) -> PurePosixPath:
    """``key`` as a relative path; raises for keys that are absolute or climb out."""
    pure = PurePosixPath(key)
    if not key or pure.is_absolute() or ".." in pure.parts or "\\" in key or "\0" in key:
        raise UserError(ErrorCode.INVALID_ARGUMENT, f"invalid storage key {key!r}", "key")
    return pure


class Storage(Protocol):
    """What the services need of a storage backend."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def put_file(self, key: str, source: Path) -> None:
        """Store the file ``source`` (from ``scratch_path``) under ``key``; consumes it."""
        ...

    def scratch_path(self) -> Path:
        """A fresh local path for a file being received or made."""
        ...

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A local file with the content of ``key`` for the duration of the block."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def list_older_than(self, cutoff: float) -> list[str]:
        """Keys of files last modified before ``cutoff`` (a POSIX timestamp)."""
        ...

    async def check(self) -> None:
        """Raise unless the storage can be written."""
        ...


def content_type_of(key: str) -> str:
    """The media type a stored file is served with, from its key's extension."""
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def new_scratch_path(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / uuid.uuid4().hex


class LocalStorage:
    """Stores blobs under ``root`` by key (``jobs/<id>/0.png``); writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path_for(self, key: str) -> Path:
        """The file of ``key``; raises for keys that are absolute or climb out of the root."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise UserError(ErrorCode.INVALID_ARGUMENT, f"invalid storage key {key!r}", "key")
        return path

    async def put(self, key: str, data: bytes) -> None:
        if len(data) <= INLINE_WRITE_BYTES:  # a few syscalls: less than a thread hop
            self._put(self.path_for(key), data, self.scratch_path())
            return
        await asyncio.to_thread(self._put, self.path_for(key), data, self.scratch_path())

    async def put_file(self, key: str, source: Path) -> None:
        """Move ``source`` (a file from ``scratch_path``) to ``key``."""
        await asyncio.to_thread(self._put_file, self.path_for(key), source)

    def scratch_path(self) -> Path:
        """A fresh path for a file being received or made, on the same file system as the
        root so ``put_file`` is a rename. Abandoned ones are swept as orphans."""
        return new_scratch_path(self.root / SCRATCH)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        """The stored file itself: no copy is needed on local storage."""
        path = self.path_for(key)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(key)
        yield path

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_for(key).unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def list_older_than(self, cutoff: float) -> list[str]:
        """Keys of files last modified before ``cutoff`` (a POSIX timestamp)."""
        return await asyncio.to_thread(self._list_older_than, cutoff)

    def _list_older_than(self, cutoff: float) -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                keys.append(path.relative_to(self.root).as_posix())
        return keys

    async def check(self) -> None:
        """Raise unless the root is a writable directory."""
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage root {self.root} is not writable")

    @staticmethod
    def _put_file(path: Path, source: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)

    @staticmethod
    def _put(path: Path, data: bytes, tmp: Path) -> None:
        """Write ``tmp`` (a scratch path: a write cut short by a crash leaves nothing next
        to stored files, and scratch files are swept) and rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
