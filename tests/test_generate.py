"""The core flow: submit a job over HTTP, follow it over a WebSocket, fetch the image."""

from __future__ import annotations

import io

from PIL import Image

from tests.support import JOB_FIELDS, LiveServer, graphql_ws

FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


async def test_job_runs_to_success_with_live_progress(server: LiveServer) -> None:
    payload = await server.generate(prompt="red fox in snow", width=256, height=192, seed=7)
    assert payload["userErrors"] == []
    job = payload["job"]
    assert job["status"] == "QUEUED"

    async with graphql_ws(server.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job["id"]})
        updates = [p["data"]["jobUpdated"] for p in await ws.collect(op)]

    statuses = [u["status"] for u in updates]
    assert statuses[-1] == "SUCCEEDED", statuses
    versions = [u["version"] for u in updates]
    assert versions == sorted(set(versions))
    final = updates[-1]
    assert final["progress"] == 1.0 and final["attempts"] == 1
    [output] = final["outputs"]
    assert (output["contentType"], output["width"], output["height"]) == ("image/png", 256, 192)

    media = await server.http.get(output["url"])
    assert media.status_code == 200
    assert media.headers["content-type"] == "image/png"
    assert "etag" in media.headers and "max-age" in media.headers["cache-control"]
    image = Image.open(io.BytesIO(media.content))
    assert image.size == (256, 192)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
    assert len(colours) > 100  # a picture, not a flat colour
