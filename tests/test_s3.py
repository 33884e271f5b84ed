"""The S3 storage backend against a real S3-compatible server (moto's server mode, started
as a process on 127.0.0.1): the storage contract, and the service end to end on it."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from gql_media.adapters.s3 import S3Storage
from gql_media.errors import StorageUnavailable, UserError
from gql_media.runtime import open_runtime
from gql_media.services import retention
from tests.media import jpeg
from tests.support import LiveServer, free_port, start_server
from tests.test_media_api import PROCESS_IMAGE, follow, upload_stream

CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process, answering before the tests start."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: the server answers HTTP
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"media-{uuid.uuid4().hex[:12]}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def storage(s3_endpoint: str, bucket: str, tmp_path: Path) -> Iterator[S3Storage]:
    store = S3Storage(
        bucket,
        tmp_path / "scratch",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        prefix="gql/",
    )
    yield store
    store.close()


async def test_storage_contract(storage: S3Storage, s3_endpoint: str, bucket: str) -> None:
    await storage.check()
    await storage.put("jobs/abc/0.png", b"png bytes")
    scratch = storage.scratch_path()
    scratch.write_bytes(b"x" * 300_000)
    await storage.put_file("uploads/def/original.mp4", scratch)
    assert not scratch.exists()  # consumed

    raw = client(s3_endpoint)
    stored = raw.get_object(Bucket=bucket, Key="gql/jobs/abc/0.png")
    assert (stored["Body"].read(), stored["ContentType"]) == (b"png bytes", "image/png")
    assert await storage.exists("uploads/def/original.mp4")
    assert not await storage.exists("jobs/abc/1.png")

    async with storage.local_copy("uploads/def/original.mp4") as path:
        assert path.read_bytes() == b"x" * 300_000
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        async with storage.local_copy("nothing/here.png"):
            pass

    assert set(await storage.list_older_than(time.time() + 60)) == {
        "jobs/abc/0.png",
        "uploads/def/original.mp4",
    }
    assert await storage.list_older_than(time.time() - 3600) == []
    await storage.delete("jobs/abc/0.png")
    assert not await storage.exists("jobs/abc/0.png")
    for bad in ("../escape.png", "/abs.png", "a\\b.png", ""):
        with pytest.raises(UserError):
            await storage.put(bad, b"")


async def test_check_creates_a_missing_bucket_only_when_asked(
    s3_endpoint: str, tmp_path: Path
) -> None:
    name = f"new-{uuid.uuid4().hex[:12]}"
    keys = {"access_key_id": "testing", "secret_access_key": "testing"}
    strict = S3Storage(name, tmp_path, endpoint_url=s3_endpoint, region="us-east-1", **keys)
    with pytest.raises(Exception, match="404|Not Found|NoSuchBucket"):
        await strict.check()
    creating = S3Storage(
        name, tmp_path, endpoint_url=s3_endpoint, region="us-east-1", create_bucket=True, **keys
    )
    await creating.check()
    assert name in [b["Name"] for b in client(s3_endpoint).list_buckets()["Buckets"]]


async def test_a_bucket_that_refuses_writes_is_storage_unavailable(
    storage: S3Storage, s3_endpoint: str, bucket: str
) -> None:
    """The readiness probe writes and deletes an object (leaving none); a write the bucket
    refuses (here: the bucket is gone) is StorageUnavailable, for writes and the probe."""
    await storage.probe_write()
    assert "Contents" not in client(s3_endpoint).list_objects_v2(Bucket=bucket)
    client(s3_endpoint).delete_bucket(Bucket=bucket)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.probe_write()
    with pytest.raises(StorageUnavailable):
        await storage.put("jobs/abc/0.png", b"png bytes")
    scratch = storage.scratch_path()
    scratch.write_bytes(b"x" * 1000)
    with pytest.raises(StorageUnavailable, match=r"\(NoSuchBucket\)$") as refused:
        await storage.put_file("uploads/def/original.png", scratch)
    assert bucket not in refused.value.message and "scratch" not in refused.value.message
    assert not scratch.exists()


async def test_service_on_s3_uploads_processes_and_serves_ranges(
    settings_factory: Any, s3_endpoint: str, bucket: str
) -> None:
    from gql_media.adapters import redis as redis_adapter

    settings = settings_factory(
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        **CREDENTIALS,
    )
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=True) as live:
        await _upload_process_download(live, s3_endpoint, bucket)
    media_dir = settings.effective_storage_dir
    assert not media_dir.exists() or not [p for p in media_dir.rglob("*") if p.is_file()]
    assert not [p for p in settings.scratch_dir.rglob("*") if p.is_file()]


async def _upload_process_download(live: LiveServer, endpoint: str, bucket: str) -> None:
    original = jpeg(800, 600, orientation=6)
    uploaded = await upload_stream(live, original, "photo.jpg")
    assert uploaded.status_code == 201, uploaded.text
    source = uploaded.json()["media"]
    assert (source["width"], source["height"]) == (600, 800)
    keys = {o["Key"] for o in client(endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert any(k.startswith("uploads/") for k in keys)
    assert (await live.http.get(source["url"])).content == original

    body = await live.graphql(
        PROCESS_IMAGE,
        {
            "input": {
                "mediaId": source["id"],
                "variants": [{"name": "thumb", "operations": [{"thumbnail": {"size": 200}}]}],
            }
        },
    )
    job = body["data"]["processImage"]["job"]
    final = (await follow(live, job["id"]))[-1]
    assert final["status"] == "SUCCEEDED", final
    url = final["outputs"][0]["url"]
    full = await live.http.get(url)
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(full.content)) as image:
        assert image.size == (150, 200)
    ranged = await live.http.get(url, headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == full.content[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(full.content)}"
    etag = full.headers["etag"]
    assert (await live.http.get(url, headers={"If-None-Match": etag})).status_code == 304
    assert (await live.http.get(url.rsplit("/", 1)[0] + "/9.png")).status_code == 404
    assert (await live.http.get(f"{live.url}/media/.scratch/x")).status_code == 404


async def test_retention_on_a_missing_bucket_logs_one_line(
    settings_factory: Any, s3_endpoint: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's retention pass on a bucket that is not there (not yet created, or gone)
    logs one warning naming NoSuchBucket, with no traceback, and does not raise."""
    settings = settings_factory(
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        retention_seconds=3600,
        **CREDENTIALS,
    )
    async with open_runtime(settings) as runtime:
        client(s3_endpoint).delete_bucket(Bucket=bucket)
        with caplog.at_level(logging.WARNING, logger="gql_media"):
            await retention.retain_once(runtime.deps)
    records = [r for r in caplog.records if r.name.startswith("gql_media")]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.WARNING, None)]
    assert "NoSuchBucket" in records[0].getMessage()
