"""The compose stack end to end, through the api only (run by deploy/compose-e2e.sh, which
builds and starts the stack and tears it down; standard library only).

1. A first API key (`gql-media keys create` in the api container); a request without it
   is refused.
2. One generateImage and one processImage job (on an upload of the generated picture), each
   followed to SUCCEEDED, its media downloaded through the api and found in the bucket.
3. Three workers; the one running a long job is stopped with `docker stop`: it exits by
   itself within compose's stop_grace_period (not killed), hands the job back, and another
   worker finishes it exactly once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

COMPOSE = ["docker", "compose"]  # with the stack's project and env file: argv[2:]
BUCKET = "gql-media"
JOB = "id status attempts error { code message } outputs { url contentType width height }"


def log(message: str) -> None:
    print(f"-- {message}", flush=True)


def run(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def compose(*args: str) -> str:
    return run(*COMPOSE, *args)


def poll(what: str, probe: Any, timeout: float = 120.0, every: float = 0.25) -> Any:
    """``probe()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class Api:
    def __init__(self, base: str, key: str | None) -> None:
        self.base = base
        self.key = key

    def request(self, path: str, body: bytes | None, content_type: str) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        status, data = self.request("/graphql", body, "application/json")
        payload = json.loads(data)
        if status != 200 or payload.get("errors"):
            raise SystemExit(f"GraphQL {status}: {payload}")
        return payload["data"]  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.graphql(f"query($id: ID!) {{ job(id: $id) {{ {JOB} }} }}", id=job_id)["job"]  # type: ignore[no-any-return]

    def finished(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        job = poll(
            f"job {job_id} to finish",
            lambda: (j := self.job(job_id))["status"] in ("SUCCEEDED", "FAILED", "CANCELED") and j,
            timeout,
        )
        if job["status"] != "SUCCEEDED":
            raise SystemExit(f"job {job_id} ended {job['status']}: {job['error']}")
        return job  # type: ignore[no-any-return]

    def download(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:  # signed: no key needed
            return response.read()  # type: ignore[no-any-return]


def generate(api: Api, outputs: int, seed: int) -> str:
    data = api.graphql(
        "mutation($input: GenerateImageInput!) { generateImage(input: $input) {"
        " job { id } userErrors { code message } } }",
        input={
            "prompt": "a lighthouse at dusk",
            "width": 256,
            "height": 256,
            "seed": seed,
            "numOutputs": outputs,
        },
    )["generateImage"]
    assert not data["userErrors"], data
    return data["job"]["id"]  # type: ignore[no-any-return]


def bucket_keys() -> set[str]:
    """Every key in the bucket, listed from inside the S3 stand-in's own container."""
    script = (
        "import boto3, json; c = boto3.client('s3', endpoint_url='http://127.0.0.1:5000',"
        " region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x');"
        f"p = c.get_paginator('list_objects_v2').paginate(Bucket={BUCKET!r});"
        "print(json.dumps([o['Key'] for page in p for o in page.get('Contents', [])]))"
    )
    return set(json.loads(compose("exec", "-T", "s3", "/opt/moto/bin/python", "-c", script)))


def key_of(url: str) -> str:
    """The storage key a media URL serves (``/media/<key>?<signature>``)."""
    path = urllib.parse.urlsplit(url).path
    assert path.startswith("/media/"), url
    return urllib.parse.unquote(path[len("/media/") :])


def first_key_and_auth(base: str) -> Api:
    status, _ = Api(base, None).request(
        "/graphql", b'{"query":"{ __typename }"}', "application/json"
    )
    assert status == 401, f"auth is not required: {status}"
    status, page = Api(base, None).request("/", None, "text/html")
    assert status == 200 and b"<html" in page.lower(), f"no dashboard: {status}"
    key = compose("exec", "-T", "api", "gql-media", "keys", "create", "--name", "e2e").strip()
    assert re.fullmatch(r"gqlm_\S+", key), key
    log("dashboard served; auth required: 401 without a key; first key created")
    return Api(base, key)


def generation_and_processing(api: Api) -> None:
    started = time.monotonic()
    job = api.finished(generate(api, outputs=1, seed=7))
    [output] = job["outputs"]
    picture = api.download(output["url"])
    assert picture.startswith(b"\x89PNG"), picture[:8]
    assert key_of(output["url"]) in bucket_keys()
    log(f"generateImage {job['id']}: SUCCEEDED in {time.monotonic() - started:.1f}s, in the bucket")

    status, body = api.request(
        "/uploads?filename=lighthouse.png", picture, "application/octet-stream"
    )
    assert status == 201, (status, body)
    media = json.loads(body)["media"]
    assert key_of(media["url"]) in bucket_keys()
    data = api.graphql(
        "mutation($input: ProcessImageInput!) { processImage(input: $input) {"
        " job { id } userErrors { code message } } }",
        input={
            "mediaId": media["id"],
            "variants": [
                {"name": "thumb", "format": "JPEG", "operations": [{"thumbnail": {"size": 64}}]}
            ],
        },
    )["processImage"]
    assert not data["userErrors"], data
    job = api.finished(data["job"]["id"])
    [thumb] = job["outputs"]
    assert (thumb["contentType"], max(thumb["width"], thumb["height"])) == ("image/jpeg", 64), thumb
    assert api.download(thumb["url"]).startswith(b"\xff\xd8"), "not a JPEG"
    assert key_of(thumb["url"]) in bucket_keys()
    log(f"processImage {job['id']}: SUCCEEDED, upload and thumbnail in the bucket")


def container_logs(container: str) -> str:
    done = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def workers() -> list[str]:
    return compose("ps", "-q", "worker").split()


def claims(container: str) -> float:
    """How many jobs this worker has claimed (its metrics, read inside its container)."""
    script = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:9464/metrics', timeout=4).read().decode())"
    )
    text = run("docker", "exec", container, "python", "-c", script)
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gql_media_job_queue_seconds_count")
    )


def stop_a_worker_mid_job(api: Api) -> None:
    compose("up", "-d", "--scale", "worker=3", "--wait", "--wait-timeout", "120")
    containers = workers()
    assert len(containers) == 3, containers
    log("scaled to 3 workers, all healthy")

    before = {c: claims(c) for c in containers}
    job_id = generate(api, outputs=4, seed=11)  # ~16 s of painting: longer than the grace
    poll(f"job {job_id} to run", lambda: api.job(job_id)["status"] == "RUNNING")
    [runner] = poll(
        "the worker that claimed it", lambda: [c for c in containers if claims(c) > before[c]]
    )
    started = time.monotonic()
    run("docker", "stop", runner)  # SIGTERM, SIGKILL after the container's stop timeout
    stopped_in = time.monotonic() - started
    state = json.loads(run("docker", "inspect", runner))[0]["State"]
    assert state["ExitCode"] == 0, f"killed (exit {state['ExitCode']}), not stopped by itself"
    assert f"job {job_id} handed back to the queue" in container_logs(runner), "not handed back"
    log(f"worker {runner[:12]} stopped by itself in {stopped_in:.1f}s (exit 0), job handed back")

    job = api.finished(job_id)
    assert len(job["outputs"]) == 4, job["outputs"]
    everything = "".join(container_logs(c) for c in containers)
    finishes = everything.count(f"job {job_id}: succeeded")
    assert finishes == 1, f"job {job_id} succeeded {finishes} times"
    stored = bucket_keys()
    assert all(key_of(o["url"]) in stored for o in job["outputs"])
    log(
        f"job {job_id}: SUCCEEDED once, on another worker (attempts {job['attempts']}),"
        " 4 outputs stored"
    )


def main() -> None:
    global COMPOSE
    base, COMPOSE = sys.argv[1], sys.argv[2:]
    api = first_key_and_auth(base)
    generation_and_processing(api)
    stop_a_worker_mid_job(api)


if __name__ == "__main__":
    main()
