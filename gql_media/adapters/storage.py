"""Media storage by key (``jobs/<xx>/<id>-0.png``): a local directory, or an S3-compatible bucket.

Keys are checked before use, so none can name anything outside the root or the prefix.
Both backends receive finished files from ``scratch_path()`` (a local directory) and hand
out local copies of stored files for processing with ``local_copy()``. A write the storage
cannot take (a full disk, a read-only or refused one) raises ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Protocol

from gql_media.errors import ErrorCode, StorageUnavailable, UserError

SCRATCH = ".scratch"
INLINE_WRITE_BYTES = 64 * 1024  # smaller files are written on the event loop
MAX_KNOWN_DIRECTORIES = 4096
PROBE_BYTES = b"\0" * 4096  # what a write probe writes: one page


@contextmanager
def storage_errors() -> Iterator[None]:
    """Raise a file system's refusal to write (``STORAGE_ERRNOS``) as StorageUnavailable."""
    try:
        yield
    except OSError as exc:
        failure = StorageUnavailable.from_os_error(exc)
        if failure is None:
            raise
        raise failure from exc


def _move(source: Path, path: Path) -> None:
    """Rename ``source`` to ``path``, making ``path``'s directory if it is missing."""
    try:
        os.replace(source, path)
    except FileNotFoundError:
        if not source.exists():
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)


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
        """Raise unless the storage is there and may be written (at start-up)."""
        ...

    async def probe_write(self) -> None:
        """Write and delete a small file, raising StorageUnavailable when that fails (for
        readiness: a full disk passes ``check``)."""
        ...


def content_type_of(key: str) -> str:
    """The media type a stored file is served with, from its key's extension."""
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def new_scratch_path(directory: Path) -> Path:
    with storage_errors():
        directory.mkdir(parents=True, exist_ok=True)
    return directory / uuid.uuid4().hex


def probe_scratch(directory: Path) -> None:
    """Write and delete a small file in ``directory``; StorageUnavailable when it fails."""
    path = new_scratch_path(directory)
    try:
        with storage_errors():
            path.write_bytes(PROBE_BYTES)
    finally:
        path.unlink(missing_ok=True)


class LocalStorage:
    """Stores blobs under ``root`` by key (``jobs/<xx>/<id>-0.png``); writes are atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._scratch = self.root / SCRATCH
        # directories writes go to, resolved and checked once: resolving a key's path
        # costs a stat per part, more than the rest of writing a small file
        self._directories: dict[PurePosixPath, Path] = {}

    def path_for(self, key: str) -> Path:
        """The file of ``key``; raises for keys that are absolute or climb out of the root."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise UserError(ErrorCode.INVALID_ARGUMENT, f"invalid storage key {key!r}", "key")
        return path

    def _write_path(self, key: str) -> Path:
        """Where ``key`` is written: ``path_for`` with its directory's resolution kept."""
        pure = check_key(key)
        directory = self._directories.get(pure.parent)
        if directory is None:
            directory = self.path_for(pure.parent.as_posix())
            if len(self._directories) >= MAX_KNOWN_DIRECTORIES:
                self._directories.clear()
            self._directories[pure.parent] = directory
        return directory / pure.name

    async def put(self, key: str, data: bytes) -> None:
        path = self._write_path(key)
        with storage_errors():
            if len(data) <= INLINE_WRITE_BYTES:  # a few syscalls: less than a thread hop
                self._put(path, data)
                return
            await asyncio.to_thread(self._put, path, data)

    async def put_file(self, key: str, source: Path) -> None:
        """Move ``source`` (a file from ``scratch_path``) to ``key``."""
        with storage_errors():
            await asyncio.to_thread(_move, source, self._write_path(key))

    def scratch_path(self) -> Path:
        """A fresh path for a file being received or made, on the same file system as the
        root so ``put_file`` is a rename. Abandoned ones are swept as orphans."""
        return new_scratch_path(self._scratch)

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

    async def probe_write(self) -> None:
        """Write and delete a small file next to the stored ones (in the scratch directory)."""
        await asyncio.to_thread(probe_scratch, self._scratch)

    def _put(self, path: Path, data: bytes) -> None:
        """Write a scratch file (a write cut short by a crash leaves nothing next to stored
        files, and scratch files are swept) and rename it into place. Directories are made
        when a write finds them missing rather than checked before every write."""
        tmp = self._scratch / uuid.uuid4().hex
        try:
            try:
                tmp.write_bytes(data)
            except FileNotFoundError:
                self._scratch.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
            _move(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
