"""Media storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through boto3.

boto3 is synchronous: every call runs in a thread. Objects live under ``prefix`` + key.
Files made locally (uploads being received, transcodes) go through a local scratch
directory and are uploaded with ``upload_file``, which switches to multipart for large ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gql_media.adapters.storage import (
    PROBE_BYTES,
    check_key,
    content_type_of,
    new_scratch_path,
    probe_scratch,
    storage_errors,
)
from gql_media.errors import StorageUnavailable

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
PROBE_KEY = ".readyz/probe-"  # write probes' objects: this plus a random suffix


@contextmanager
def bucket_errors() -> Iterator[None]:
    """Raise a write the bucket (or the local scratch directory) refused as
    StorageUnavailable, naming the S3 error code only: boto3's messages carry local paths,
    the bucket and keys, which the error's message (shown to clients) must not."""
    with storage_errors():
        try:
            yield
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            log.warning("S3 write failed: %s", exc)
            raise StorageUnavailable(
                f"media storage cannot be written: the bucket refused it ({_reason(exc)})"
            ) from exc


def _reason(exc: BaseException) -> str:
    """The S3 error code behind ``exc`` (boto3 wraps it in its own errors), else its kind."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return _code(seen) or str(_status(seen))
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


@dataclass(frozen=True, slots=True)
class S3Object:
    """A stored object being read: status 200 or 206, its headers, and its bytes."""

    status: int
    headers: dict[str, str]
    body: Iterator[bytes]
    close: Any


class S3Storage:
    def __init__(
        self,
        bucket: str,
        scratch_dir: Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.scratch_dir = scratch_dir
        self.create_bucket = create_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"} if endpoint_url else {},
            ),
        )

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key).as_posix()

    async def put(self, key: str, data: bytes) -> None:
        object_key = self.object_key(key)
        with bucket_errors():
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=object_key,
                Body=data,
                ContentType=content_type_of(key),
            )

    async def put_file(self, key: str, source: Path) -> None:
        object_key = self.object_key(key)
        try:
            with bucket_errors():
                await asyncio.to_thread(
                    self.client.upload_file,
                    str(source),
                    self.bucket,
                    object_key,
                    ExtraArgs={"ContentType": content_type_of(key)},
                )
        finally:
            source.unlink(missing_ok=True)

    def scratch_path(self) -> Path:
        return new_scratch_path(self.scratch_dir)

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self.scratch_path()
        try:
            with storage_errors():  # the scratch directory may be full
                await asyncio.to_thread(
                    self.client.download_file, self.bucket, self.object_key(key), str(path)
                )
        except ClientError as exc:
            path.unlink(missing_ok=True)
            if _status(exc) == 404:
                raise FileNotFoundError(key) from exc
            raise
        except StorageUnavailable:
            path.unlink(missing_ok=True)
            raise
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key)
        )

    async def exists(self, key: str) -> bool:
        try:
            await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    async def list_older_than(self, cutoff: float) -> list[str]:
        return await asyncio.to_thread(self._list_older_than, cutoff)

    def _list_older_than(self, cutoff: float) -> list[str]:
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    if item["LastModified"].timestamp() < cutoff:
                        keys.append(item["Key"][len(self.prefix) :])
        except ClientError as exc:
            if _code(exc) != "NoSuchBucket":
                raise
            raise StorageUnavailable(
                f"media storage cannot be listed: bucket {self.bucket!r} does not exist"
                " (NoSuchBucket)"
            ) from exc
        return keys

    async def check(self) -> None:
        await asyncio.to_thread(self._check)

    def _check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) != 404 or not self.create_bucket:
                raise
            self.client.create_bucket(Bucket=self.bucket)

    async def probe_write(self) -> None:
        """Write and delete a small scratch file and a small object (under the prefix)."""
        await asyncio.to_thread(self._probe_write)

    def _probe_write(self) -> None:
        probe_scratch(self.scratch_dir)
        key = self.prefix + PROBE_KEY + uuid.uuid4().hex
        with bucket_errors():
            self.client.put_object(Bucket=self.bucket, Key=key, Body=PROBE_BYTES[:1])
            self.client.delete_object(Bucket=self.bucket, Key=key)

    async def open(
        self, key: str, range_header: str | None, if_none_match: str | None
    ) -> S3Object | None:
        """Read ``key`` for a download, passing Range and If-None-Match on to the server:
        None when there is no such object; status 304 or 416 objects have no body."""
        return await asyncio.to_thread(self._open, key, range_header, if_none_match)

    def _open(
        self, key: str, range_header: str | None, if_none_match: str | None
    ) -> S3Object | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if range_header:
            args["Range"] = range_header
        if if_none_match:
            args["IfNoneMatch"] = if_none_match
        try:
            response = self.client.get_object(**args)
        except ClientError as exc:
            status = _status(exc)
            if status in (404, 403) and _code(exc) in ("NoSuchKey", "404", "AccessDenied"):
                return None
            if status in (304, 416):
                return S3Object(status, {}, iter(()), lambda: None)
            raise
        headers = {
            "content-length": str(response["ContentLength"]),
            "accept-ranges": "bytes",
        }
        if response.get("ETag"):
            headers["etag"] = response["ETag"]
        if response.get("ContentRange"):
            headers["content-range"] = response["ContentRange"]
        if response.get("LastModified"):
            headers["last-modified"] = response["LastModified"].strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            )
        body = response["Body"]
        status = 206 if response.get("ContentRange") else 200
        return S3Object(status, headers, body.iter_chunks(CHUNK), body.close)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
