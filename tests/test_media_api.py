"""Uploads and processing jobs through the running service: multipart and streaming uploads,
processImage and processVideo end to end, their errors, and downloads with ranges."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gql_media.settings import Settings
from tests.support import JOB_FIELDS, PARAMETERS, LiveServer, graphql_ws

UPLOAD = """
mutation($file: Upload!) {
  uploadMedia(file: $file) {
    media {
      id url contentType width height byteSize sha256 filename
      metadata {
        __typename
        ... on ImageMetadata { kind format frames }
        ... on AudioVideoMetadata { kind container duration width height }
      }
    }
    userErrors { field code message }
  }
}"""
PROCESS_IMAGE = f"""
mutation($input: ProcessImageInput!) {{
  processImage(input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}"""
PROCESS_VIDEO = f"""
mutation($input: ProcessVideoInput!) {{
  processVideo(input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}"""
FIELDS = JOB_FIELDS.replace("outputs { id", "outputs { name id")
RESULT = "result { kind container duration width height fps videoCodec audioCodec rotation }"
FOLLOW = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {FIELDS} {RESULT} }} }}"
PARAMETERS_OF = f"query($id: ID!) {{ job(id: $id) {{ {PARAMETERS} }} }}"


def entry(**operation: Any) -> dict[str, Any]:
    """An entry of typed parameters' operations: every operation null but the one given."""
    return {name: operation.get(name) for name in ENTRY_FIELDS}


async def parameters(server: LiveServer, job_id: str) -> dict[str, Any]:
    body = await server.graphql(PARAMETERS_OF, {"id": job_id})
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["job"]["parameters"]
    return found


ENTRY_FIELDS = (
    "resize",
    "thumbnail",
    "crop",
    "rotate",
    "autoOrient",
    "textWatermark",
    "imageWatermark",
)


def jpeg(width: int = 640, height: int = 480, orientation: int | None = None) -> bytes:
    """Four coloured quadrants (red, green / blue, white) so orientation shows in pixels."""
    image = Image.new("RGB", (width, height))
    w, h = width // 2, height // 2
    for box, colour in (
        ((0, 0, w, h), (255, 0, 0)),
        ((w, 0, width, h), (0, 255, 0)),
        ((0, h, w, height), (0, 0, 255)),
        ((w, h, width, height), (255, 255, 255)),
    ):
        image.paste(colour, box)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


async def upload_multipart(
    live: LiveServer, data: bytes, filename: str, content_type: str, preflight: bool = True
) -> Any:
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}})
    headers = {"GraphQL-Require-Preflight": "1"} if preflight else {}
    return await live.http.post(
        "/graphql",
        data={"operations": operations, "map": json.dumps({"0": ["variables.file"]})},
        files={"0": (filename, data, content_type)},
        headers=headers,
    )


async def upload_stream(live: LiveServer, data: bytes, filename: str = "f.bin") -> Any:
    return await live.http.post(
        f"/uploads?filename={filename}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


async def follow(live: LiveServer, job_id: str) -> list[dict[str, Any]]:
    async with graphql_ws(live.ws_url) as ws:
        op = await ws.subscribe(FOLLOW, {"id": job_id})
        return [p["data"]["jobUpdated"] for p in await ws.collect(op)]


async def test_multipart_upload_is_identified_by_content(server: LiveServer) -> None:
    response = await upload_multipart(server, jpeg(), "holiday.txt", "text/plain")
    assert response.status_code == 200, response.text
    payload = response.json()["data"]["uploadMedia"]
    assert payload["userErrors"] == []
    media = payload["media"]
    assert (media["contentType"], media["width"], media["height"]) == ("image/jpeg", 640, 480)
    assert media["metadata"] == {
        "__typename": "ImageMetadata",
        "kind": "IMAGE",
        "format": "JPEG",
        "frames": 1,
    }
    assert media["filename"] == "holiday.txt" and media["url"].endswith(".jpg")
    assert (await server.http.get(media["url"])).content == jpeg()

    found = await server.graphql("query($id: ID!) { media(id: $id) { id } }", {"id": media["id"]})
    assert found["data"]["media"]["id"] == media["id"]


async def test_multipart_upload_without_preflight_header_is_refused(server: LiveServer) -> None:
    response = await upload_multipart(server, jpeg(), "a.jpg", "image/jpeg", preflight=False)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "PREFLIGHT_REQUIRED"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"just some text, not a picture", "UNSUPPORTED_MEDIA_TYPE"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "MEDIA_CORRUPT"),
        (jpeg()[:600], "MEDIA_CORRUPT"),
    ],
)
async def test_bad_files_get_a_user_error_and_leave_nothing(
    server: LiveServer, settings: Settings, data: bytes, code: str
) -> None:
    response = await upload_multipart(server, data, "x.jpg", "image/jpeg")
    errors = response.json()["data"]["uploadMedia"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [("file", code)]
    streamed = await upload_stream(server, data, "x.jpg")
    assert streamed.status_code == 422
    assert streamed.json()["userErrors"][0]["code"] == code
    leftovers = [p for p in settings.effective_storage_dir.rglob("*") if p.is_file()]
    assert leftovers == []


async def test_streaming_upload_and_its_limits(settings_factory: Any) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(max_upload_bytes=50_000)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        small = jpeg(64, 48)
        ok = await upload_stream(live, small, "small.jpg")
        assert ok.status_code == 201, ok.text
        assert ok.json()["media"]["byteSize"] == len(small)

        big = Image.effect_noise((400, 400), 64).convert("RGB")
        out = io.BytesIO()
        big.save(out, "PNG")
        assert len(out.getvalue()) > 50_000
        too_big = await upload_stream(live, out.getvalue())
        assert too_big.status_code == 413
        assert too_big.json()["userErrors"][0]["code"] == "MEDIA_TOO_LARGE"
        multipart = await upload_multipart(live, out.getvalue() * 40, "b.png", "image/png")
        assert multipart.status_code == 413
        assert multipart.json()["errors"][0]["extensions"]["code"] == "MEDIA_TOO_LARGE"

        simple = await live.http.post(
            "/uploads", content=small, headers={"Content-Type": "text/plain"}
        )
        assert simple.status_code == 415
        files = [p for p in settings.effective_storage_dir.rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].suffix == ".jpg"


async def test_process_image_makes_named_upright_variants(server: LiveServer) -> None:
    source = (await upload_stream(server, jpeg(800, 600, orientation=6))).json()["media"]
    body = await server.graphql(
        PROCESS_IMAGE,
        {
            "input": {
                "mediaId": source["id"],
                "variants": [
                    {
                        "name": "thumb",
                        "operations": [{"thumbnail": {"size": 120}}],
                        "format": "WEBP",
                    },
                    {
                        "name": "web",
                        "operations": [
                            {"resize": {"width": 300, "fit": "CONTAIN"}},
                            {"textWatermark": {"text": "gql", "position": "BOTTOM_RIGHT"}},
                        ],
                        "format": "JPEG",
                        "quality": 80,
                    },
                ],
            }
        },
    )
    payload = body["data"]["processImage"]
    assert payload["userErrors"] == [], payload
    job = payload["job"]
    assert (job["kind"], job["status"]) == ("PROCESS_IMAGE", "QUEUED")
    states = await follow(server, job["id"])
    final = states[-1]
    assert final["status"] == "SUCCEEDED", final
    outputs = {o["name"]: o for o in final["outputs"]}
    assert set(outputs) == {"thumb", "web"}
    # orientation 6: the 800x600 picture is shown rotated, 600 wide and 800 high
    thumb = outputs["thumb"]
    assert (thumb["contentType"], thumb["width"], thumb["height"]) == ("image/webp", 90, 120)
    web = Image.open(io.BytesIO((await server.http.get(outputs["web"]["url"])).content))
    assert (web.format, web.size) == ("JPEG", (300, 400))
    # upright: red was top-left of the stored picture, which orientation 6 puts top-right
    assert web.convert("RGB").getpixel((280, 20))[0] > 200
    # what the job was asked, typed, the defaults filled in
    asked = await parameters(server, job["id"])
    assert (asked["__typename"], asked["mediaId"]) == ("ProcessImageParameters", source["id"])
    thumb_variant, web_variant = asked["variants"]
    assert thumb_variant == {
        "name": "thumb",
        "format": "WEBP",
        "quality": None,
        "progressive": False,
        "stripMetadata": True,
        "operations": [entry(thumbnail={"size": 120})],
    }
    assert (web_variant["format"], web_variant["quality"]) == ("JPEG", 80)
    assert web_variant["operations"] == [
        entry(resize={"width": 300, "height": None, "fit": "CONTAIN", "upscale": False}),
        entry(
            textWatermark={
                "text": "gql",
                "position": "BOTTOM_RIGHT",
                "margin": 16,
                "opacity": 0.5,
                "scale": 0.05,
                "color": "#ffffff",
            }
        ),
    ]


async def test_process_image_reports_every_problem(server: LiveServer) -> None:
    source = (await upload_stream(server, jpeg(64, 64))).json()["media"]
    body = await server.graphql(
        PROCESS_IMAGE,
        {
            "input": {
                "mediaId": source["id"],
                "variants": [
                    {"name": "a", "operations": [{"thumbnail": {"size": 0}}]},
                    {
                        "name": "a",
                        "operations": [
                            {"thumbnail": {"size": 9}, "crop": {"width": 1, "height": 1}}
                        ],
                    },
                    {"name": "bad name!", "quality": 101},
                ],
            }
        },
    )
    errors = {(e["field"], e["code"]) for e in body["data"]["processImage"]["userErrors"]}
    assert errors == {
        ("variants.0.operations.0.thumbnail.size", "INVALID_ARGUMENT"),
        ("variants.1.name", "INVALID_ARGUMENT"),
        ("variants.1.operations.0", "INVALID_ARGUMENT"),
        ("variants.2.name", "INVALID_ARGUMENT"),
        ("variants.2.quality", "INVALID_ARGUMENT"),
    }
    missing = await server.graphql(
        PROCESS_IMAGE,
        {"input": {"mediaId": "med_" + "0" * 32, "variants": [{"name": "x"}]}},
    )
    assert missing["data"]["processImage"]["userErrors"][0]["code"] == "NOT_FOUND"
    jobs = await server.graphql("{ jobs { totalCount } }")
    assert jobs["data"]["jobs"]["totalCount"] == 0


async def test_process_video_end_to_end(server: LiveServer, tmp_path: Path) -> None:
    from tests.media import make_video

    video = make_video(tmp_path / "clip.mp4", seconds=2.0, width=320, height=240)
    source = (await upload_stream(server, video.read_bytes(), "clip.mp4")).json()["media"]
    assert source["contentType"] == "video/mp4"
    assert source["metadata"]["duration"] == pytest.approx(2.0, abs=0.15)
    body = await server.graphql(
        PROCESS_VIDEO,
        {
            "input": {
                "mediaId": source["id"],
                "operations": [
                    {"videoThumbnail": {"fraction": 0.5, "maxSize": 160}},
                    {"videoMetadata": True},
                    {"name": "small", "transcode": {"targetHeight": 120, "quality": "LOW"}},
                    {"extractAudio": {"codec": "MP3"}},
                ],
            }
        },
    )
    payload = body["data"]["processVideo"]
    assert payload["userErrors"] == [], payload
    states = await follow(server, payload["job"]["id"])
    final = states[-1]
    assert final["status"] == "SUCCEEDED", final
    assert final["result"]["duration"] == pytest.approx(2.0, abs=0.15)
    assert (final["result"]["width"], final["result"]["height"]) == (320, 240)
    assert (final["result"]["kind"], final["result"]["container"]) == ("VIDEO", "mp4")
    assert final["result"]["videoCodec"] == "h264" and final["result"]["rotation"] == 0
    assert source["metadata"]["kind"] == "video"  # /uploads answers the JSON as stored
    typed = await server.graphql(
        "query($id: ID!) { media(id: $id) { metadata { ... on AudioVideoMetadata { "
        "kind container duration width height videoCodec } } } }",
        {"id": source["id"]},
    )
    metadata = typed["data"]["media"]["metadata"]
    assert metadata["duration"] == pytest.approx(2.0, abs=0.15)
    assert {**metadata, "duration": None} == {
        "kind": "VIDEO",
        "container": "mp4",
        "duration": None,
        "width": 320,
        "height": 240,
        "videoCodec": "h264",
    }
    asked = await parameters(server, payload["job"]["id"])
    video_ops = ("videoThumbnail", "videoMetadata", "transcode", "extractAudio")

    def step(name: str | None = None, **operation: Any) -> dict[str, Any]:
        return {"name": name, **{key: operation.get(key) for key in video_ops}}

    assert asked == {
        "__typename": "ProcessVideoParameters",
        "mediaId": source["id"],
        "operations": [
            step(videoThumbnail={"at": None, "fraction": 0.5, "maxSize": 160, "format": "JPEG"}),
            step(videoMetadata=True),
            step("small", transcode={"targetHeight": 120, "quality": "LOW"}),
            step(extractAudio={"codec": "MP3", "bitrate": None}),
        ],
    }
    outputs = {o["name"]: o for o in final["outputs"]}
    assert outputs["thumbnail"]["contentType"] == "image/jpeg"
    assert (outputs["thumbnail"]["width"], outputs["thumbnail"]["height"]) == (160, 120)
    assert outputs["small"]["contentType"] == "video/mp4"
    assert (outputs["small"]["width"], outputs["small"]["height"]) == (160, 120)
    assert outputs["audio"]["contentType"] == "audio/mpeg"

    url = outputs["small"]["url"]
    ranged = await server.http.get(url, headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    etag = ranged.headers["etag"]
    assert (await server.http.get(url, headers={"If-None-Match": etag})).status_code == 304


async def test_process_video_refuses_an_image(server: LiveServer) -> None:
    source = (await upload_stream(server, jpeg(64, 64))).json()["media"]
    body = await server.graphql(
        PROCESS_VIDEO, {"input": {"mediaId": source["id"], "operations": [{"videoMetadata": True}]}}
    )
    errors = body["data"]["processVideo"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [("mediaId", "UNSUPPORTED_MEDIA_TYPE")]


async def test_hostile_names_and_bombs_write_nothing_outside_the_root(
    settings_factory: Any, tmp_path: Path
) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(max_image_pixels=100_000)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    before = {p for p in tmp_path.rglob("*")}
    async with start_server(settings, fake, with_worker=False) as live:
        named = await upload_multipart(live, jpeg(64, 48), "../../../etc/passwd.jpg", "image/jpeg")
        media = named.json()["data"]["uploadMedia"]["media"]
        assert media["filename"] == "passwd.jpg"
        assert "/uploads/" in media["url"] and ".." not in media["url"]
        streamed = await upload_stream(live, jpeg(64, 48), "..%2F..%2Fescape.jpg")
        assert streamed.status_code == 201 and streamed.json()["media"]["filename"] == "escape.jpg"

        # a 1000x1000 PNG is small on disk but over the pixel limit: refused from its header
        bomb = io.BytesIO()
        Image.new("L", (1000, 1000)).save(bomb, "PNG")
        refused = await upload_stream(live, bomb.getvalue(), "bomb.png")
        assert refused.status_code == 422
        assert refused.json()["userErrors"][0]["code"] == "TOO_MANY_PIXELS"
        traversal = await live.http.get(f"{live.url}/media/..%2F..%2Fgql_media.db")
        assert traversal.status_code == 404
    root = settings.effective_storage_dir
    created = {p for p in tmp_path.rglob("*") if p not in before and p.is_file()}
    assert created and all(
        p.is_relative_to(root) or p.suffix in (".db", ".db-journal") for p in created
    )
    assert len([p for p in root.rglob("*") if p.is_file()]) == 2
