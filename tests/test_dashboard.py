"""The dashboard at ``/``: Debian's Chromium against a real server, worker and WebSocket."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import (
    ConsoleMessage,
    Locator,
    Page,
    Route,
    WebSocketRoute,
    expect,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from gql_media.adapters import redis as redis_adapter
from gql_media.runtime import open_runtime
from gql_media.services.auth import create_key
from gql_media.settings import Settings
from tests.browser import ARTIFACTS, PNG_SIGNATURE, needs_chromium
from tests.fakes import serving
from tests.media import jpeg, make_video
from tests.support import LiveServer, graphql_ws, start_server

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a webhook secret of 32 bytes!!!!").decode()
FOLLOW = "subscription Follow($id: ID!) { jobUpdated(id: $id) { status } }"

# Every data-progress value the page renders, per job, from the moment it is installed.
RECORD_PROGRESS = """() => {
  window.__progress = [];
  const record = (node) => {
    if (node.nodeType === 1 && node.matches(".progress")) {
      window.__progress.push([node.closest("[data-job-id]").dataset.jobId,
                              Number(node.dataset.progress)]);
    }
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      record(change.target);
      change.addedNodes.forEach((node) => node.nodeType === 1 &&
        node.querySelectorAll(".progress").forEach(record));
    }
  }).observe(document.getElementById("jobs"), {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-progress"],
  });
}"""


# The page is the same on both backends; tests whose backend part is covered by the api's
# own tests (uploads, processing, webhooks, providers) run on the embedded one only.
embedded_only = pytest.mark.parametrize("backend", ["embedded"])

# Every status a card shows from the moment this is installed on it.
RECORD_STATUSES = """card => {
  card.statuses = [];
  new MutationObserver(() => card.statuses.push(card.dataset.status))
    .observe(card, { attributes: true, attributeFilter: ["data-status"] });
}"""


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    # Local jobs take a few visible steps; mock jobs run for a minute unless canceled.
    settings: Settings = settings_factory(
        local_steps=4,
        local_step_delay=0.1,
        mock_delay_ms=60_000,
        mock_steps=600,
        shutdown_grace=0.5,
        # configured (so its models can be chosen), never called
        openai_base_url="http://127.0.0.1:9/v1",
        openai_api_key="sk-never-used",
    )
    return settings


@dataclass
class Dashboard:
    """The page, driven like a person would, plus what the browser complained about."""

    page: Page
    server: LiveServer
    problems: list[str] = field(default_factory=list)

    @classmethod
    def watch(cls, page: Page, server: LiveServer) -> Dashboard:
        """A dashboard collecting the page's errors and console errors as problems."""
        board = cls(page, server)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                board.problems.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: board.problems.append(str(error)))
        return board

    async def open(self) -> None:
        await self.page.goto(self.server.url + "/")
        await expect(self.page.locator("#connection")).to_have_attribute("data-state", "live")
        await expect(self.page.locator("#jobs")).to_have_attribute("aria-busy", "false")

    async def submit(
        self, prompt: str, provider: str = "local", size: str = "256x256", outputs: int = 1
    ) -> None:
        await self.page.get_by_label("Prompt", exact=True).fill(prompt)
        await self.page.get_by_label("Provider", exact=True).select_option(provider)
        await self.page.get_by_label("Size", exact=True).select_option(size)
        await self.page.get_by_label("Outputs", exact=True).select_option(str(outputs))
        await self.page.get_by_role("button", name="Generate").click()

    def card(self, prompt: str) -> Locator:
        return self.page.locator(".job").filter(
            has=self.page.locator(".job-prompt", has_text=prompt)
        )

    async def progress_of(self, job_id: str) -> list[float]:
        recorded: list[list[Any]] = await self.page.evaluate("window.__progress")
        return [value for recorded_id, value in recorded if recorded_id == job_id]


@pytest.fixture
async def dashboard(page: Page, server: LiveServer) -> Dashboard:
    return Dashboard.watch(page, server)


async def wait_until_finished(server: LiveServer, job_id: str) -> str:
    async with graphql_ws(server.ws_url) as ws:
        updates = await ws.collect(await ws.subscribe(FOLLOW, {"id": job_id}))
    return str(updates[-1]["data"]["jobUpdated"]["status"])


async def test_the_page_is_static_and_strict(server: LiveServer) -> None:
    page = await server.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline scripts"
    assert not re.search(r"\s(?:on\w+|style)=", html), "no inline handlers or styles"
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", html), "nothing from elsewhere"

    assets = re.findall(r"(?:src|href)=\"(/dashboard-assets/[^\"?]+)\?v=(\w+)\"", html)
    assert sorted(path for path, _ in assets) == [
        "/dashboard-assets/app.css",
        "/dashboard-assets/app.js",
    ]
    for path, version in assets:
        pinned = await server.http.get(path, params={"v": version})
        assert pinned.status_code == 200, path
        assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
        unpinned = await server.http.get(path)
        assert unpinned.content == pinned.content
        assert unpinned.headers["cache-control"] == "no-cache"
    # the entry module's imports, and theirs, come from here too
    pending, modules = ["app.js"], set()
    while pending:
        name = pending.pop()
        modules.add(name)
        script = await server.http.get(f"/dashboard-assets/{name}")
        assert script.status_code == 200, name
        assert script.headers["content-type"].startswith(
            ("text/javascript", "application/javascript")
        )
        imported = re.findall(r"^(?:import|export)\b[^;]*?from\s+\"([^\"]+)\"", script.text, re.M)
        assert all(re.fullmatch(r"\./[a-z]+\.js", path) for path in imported), imported
        assert not re.search(r"\bimport\s*\(|https?://", script.text), name
        pending += [path[2:] for path in imported if path[2:] not in modules]
    assert len(modules) > 1
    assert "media-src 'self'" in policy
    assert (await server.http.get("/dashboard-assets/missing.js")).status_code == 404


@needs_chromium
async def test_a_prompt_runs_live_to_its_images(dashboard: Dashboard, server: LiveServer) -> None:
    page = dashboard.page
    await dashboard.open()
    await page.evaluate(RECORD_PROGRESS)

    await dashboard.submit("a lighthouse at dusk", provider="local", size="256x256")
    card = dashboard.card("a lighthouse at dusk")
    await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
    await expect(card.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    await expect(card.locator(".job-meta")).to_contain_text("local · 256×256")
    await expect(page.get_by_label("Prompt", exact=True)).to_have_value("")

    job_id = await card.get_attribute("data-job-id")
    assert job_id is not None
    progress = await dashboard.progress_of(job_id)
    assert any(0 < value < 1 for value in progress), progress
    assert progress == sorted(progress) and progress[-1] == 1, progress

    image = card.locator(".job-outputs img")
    await expect(image).to_have_count(1)
    await expect(image).to_have_attribute("alt", "Output 1 of “a lighthouse at dusk”")
    await page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
    )
    src = await image.get_attribute("src")
    assert src is not None and src.startswith(server.url + "/media/")
    download = await server.http.get(src)
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert download.content.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(download.content)).size == (256, 256)
    assert dashboard.problems == []


PROVIDERS = "{ providers { name configured defaultModel models { name maxOutputs sizes } } }"
JOB_PARAMETERS = """query($id: ID!) { job(id: $id) {
  parameters { ... on GenerateImageParameters { seed negativePrompt width height outputFormat } }
  outputs { contentType width height } } }"""


@needs_chromium
@embedded_only
async def test_the_form_offers_what_the_providers_query_names(
    dashboard: Dashboard, server: LiveServer
) -> None:
    page = dashboard.page
    await dashboard.open()
    providers = {p["name"]: p for p in (await server.graphql(PROVIDERS))["data"]["providers"]}
    assert not providers["replicate"]["configured"] and providers["openai"]["configured"]
    select = page.get_by_label("Provider", exact=True)
    options = select.locator("option")
    await expect(options).to_have_text(
        [name if p["configured"] else f"{name} (not configured)" for name, p in providers.items()]
    )
    for name, provider in providers.items():
        enabled = not await select.locator(f'option[value="{name}"]').is_disabled()
        assert enabled == provider["configured"], name
    await expect(select).to_have_value("local")  # the default provider

    # a model's own sizes and output limit
    openai = providers["openai"]
    await select.select_option("openai")
    model = page.get_by_label("Model", exact=True)
    await expect(model.locator("option")).to_have_text([m["name"] for m in openai["models"]])
    await expect(model).to_have_value(openai["defaultModel"])
    await model.select_option("dall-e-2")
    dalle2 = next(m for m in openai["models"] if m["name"] == "dall-e-2")
    size = page.get_by_label("Size", exact=True)
    await expect(size.locator("option")).to_have_text(
        [s.replace("x", "×") for s in dalle2["sizes"]]
    )
    outputs = page.get_by_label("Outputs", exact=True).locator("option")
    await expect(outputs).to_have_count(dalle2["maxOutputs"])

    # seed, negative prompt, size and format reach the job
    await select.select_option("local")
    await page.get_by_label("Prompt", exact=True).fill("a harbour in fog")
    await page.get_by_label("Negative prompt").fill("boats, text")
    await page.get_by_label("Seed", exact=True).fill("4242")
    await page.get_by_label("Format", exact=True).select_option("JPEG")
    await size.select_option("256x256")
    await page.get_by_label("Outputs", exact=True).select_option("2")
    await page.get_by_role("button", name="Generate").click()
    card = dashboard.card("a harbour in fog")
    await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
    await expect(card.locator(".job-outputs img")).to_have_count(2)
    job_id = await card.get_attribute("data-job-id")
    job = (await server.graphql(JOB_PARAMETERS, {"id": job_id}))["data"]["job"]
    assert job["parameters"]["seed"] == 4242
    assert job["parameters"]["negativePrompt"] == "boats, text"
    assert (job["parameters"]["width"], job["parameters"]["height"]) == (256, 256)
    assert job["parameters"]["outputFormat"] == "JPEG"
    assert [o["contentType"] for o in job["outputs"]] == ["image/jpeg", "image/jpeg"]

    # a seed the api refuses is reported on its field
    await page.get_by_label("Prompt", exact=True).fill("a harbour at noon")
    await page.get_by_label("Seed", exact=True).fill("-1")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator("#form-errors")).to_contain_text("SEED_OUT_OF_RANGE")
    await expect(page.get_by_label("Seed", exact=True)).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Prompt", exact=True)).to_have_attribute("aria-invalid", "false")
    assert dashboard.problems == []


@needs_chromium
async def test_an_empty_prompt_is_reported_inline(dashboard: Dashboard) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.submit("   ")
    await expect(page.locator("#form-errors")).to_contain_text("PROMPT_EMPTY")
    await expect(page.locator("#form-errors")).to_contain_text("prompt must not be empty")
    await expect(page.get_by_label("Prompt", exact=True)).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".job")).to_have_count(0)
    await expect(page.locator("#jobs-empty")).to_be_visible()

    await dashboard.submit("a quiet harbour")
    await expect(page.locator("#form-errors li")).to_have_count(0)
    await expect(page.get_by_label("Prompt", exact=True)).to_have_attribute("aria-invalid", "false")
    await expect(dashboard.card("a quiet harbour")).to_have_count(1)
    assert dashboard.problems == []


@needs_chromium
async def test_jobs_are_canceled_and_retried_from_their_cards(
    dashboard: Dashboard, server: LiveServer
) -> None:
    done = await server.generate(prompt="an orchard in spring", provider="local", numOutputs=2)
    assert await wait_until_finished(server, done["job"]["id"]) == "SUCCEEDED"
    page = dashboard.page
    await dashboard.open()
    listed = dashboard.card("an orchard in spring")  # from the jobs query on load
    await expect(listed.locator(".badge")).to_have_text("SUCCEEDED")
    await expect(listed.locator(".job-outputs img")).to_have_count(2)
    await expect(listed.get_by_role("button")).to_have_count(0)

    await dashboard.submit("a very slow mountain", provider="mock", size="512x512")
    card = dashboard.card("a very slow mountain")
    badge = card.locator(".badge")
    await expect(badge).to_have_text("RUNNING")
    await card.get_by_role("button", name="Cancel").click()
    await expect(badge).to_have_text("CANCELED")
    await expect(card.get_by_role("button", name="Cancel")).to_be_hidden()
    await expect(card.get_by_role("button", name="Retry")).to_be_focused()
    await expect(page.locator("#announcer")).to_have_text(
        "Job “a very slow mountain” was canceled."
    )

    await card.get_by_role("button", name="Retry").click()
    await expect(badge).to_have_text(re.compile("QUEUED|RUNNING"))
    await card.get_by_role("button", name="Cancel").click()
    await expect(badge).to_have_text("CANCELED")
    await expect(card.get_by_role("button", name="Retry")).to_be_visible()
    await expect(page.locator("#jobs-count")).to_have_text("2 jobs")

    await page.mouse.move(0, 0)  # no hover highlight in the picture
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert Image.open(io.BytesIO(data)).size[0] == 1200
    assert dashboard.problems == []


@needs_chromium
async def test_the_page_reconnects_and_catches_up(dashboard: Dashboard, server: LiveServer) -> None:
    page = dashboard.page
    sockets: list[WebSocketRoute] = []
    refusing = False

    async def through_proxy(socket: WebSocketRoute) -> None:
        if refusing:
            await socket.close()
            return
        socket.connect_to_server()
        sockets.append(socket)

    await page.route_web_socket(re.compile(r"/graphql$"), through_proxy)
    await dashboard.open()
    connection = page.locator("#connection")

    refusing = True
    await sockets[0].close()
    await expect(connection).to_have_attribute("data-state", "offline")
    job = (await server.generate(prompt="made while offline", provider="local"))["job"]
    assert await wait_until_finished(server, job["id"]) == "SUCCEEDED"
    await expect(dashboard.card("made while offline")).to_have_count(0)

    refusing = False
    await expect(connection).to_have_attribute("data-state", "live", timeout=15_000)
    card = dashboard.card("made while offline")
    await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
    await expect(card.locator(".job-outputs img")).to_have_count(1)
    assert len(sockets) == 2
    assert dashboard.problems == []


@needs_chromium
async def test_an_api_key_is_asked_for_and_used(
    page: Page, settings_factory: Any, fake_redis_server: Any
) -> None:
    secured = settings_factory(auth="required", secret_key="dashboard-test-secret-" + "k" * 20)
    async with open_runtime(secured, fake_redis_server) as runtime:
        _, key = await create_key(runtime.deps, f"dashboard-{uuid.uuid4().hex[:8]}")
    async with start_server(secured, fake_redis_server, with_worker=True) as server:
        board = Dashboard.watch(page, server)
        await page.goto(server.url + "/")
        connection = page.locator("#connection")
        await expect(connection).to_have_text("This server needs an API key")
        await expect(connection).to_have_attribute("data-state", "error")
        # the prompt opens by itself, the field focused; no list is claimed to be empty
        await expect(page.locator("#key-needed")).to_be_visible()
        await expect(page.get_by_label("API key")).to_be_focused()
        await expect(page.locator("#jobs-empty")).to_be_hidden()
        await expect(page.locator("#jobs-loading")).to_have_text(
            "Enter an API key to see the jobs."
        )
        await screenshot(page, "dashboard-key.png")

        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Save").click()
        await expect(connection).to_have_attribute("data-state", "live")
        await expect(page.locator("#key-needed")).to_be_hidden()
        assert await page.evaluate("localStorage.getItem('gql-media-key')") == key
        await expect(page.locator("#jobs-empty")).to_be_visible()
        await expect(page.locator("#jobs-count")).to_have_text("0 jobs")

        await board.submit("a locked garden")
        card = board.card("a locked garden")
        await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
        image = card.locator(".job-outputs img")
        await page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=await image.element_handle()
        )
        assert "sig=" in (await image.get_attribute("src") or "")
        # Before the key was given, the api answered 401 and refused the WebSocket.
        assert all("401" in p or "WebSocket" in p for p in board.problems), board.problems


# -- the list: count, pages, filters, loading ----------------------------------------------

COUNT = "query($filter: JobFilter) { jobs(filter: $filter) { totalCount } }"
PROCESS_IMAGE = """mutation($input: ProcessImageInput!) { processImage(input: $input) {
  job { id } userErrors { code message } } }"""
QUICK = {"delayMs": 0, "steps": 1}
CANCEL = "mutation($id: ID!) { cancelJob(id: $id) { job { status } } }"


async def total(server: LiveServer, **job_filter: Any) -> int:
    body = await server.graphql(COUNT, {"filter": job_filter or None})
    return int(body["data"]["jobs"]["totalCount"])


async def finished_job(server: LiveServer, **fields: Any) -> str:
    """A generation job, waited for until it ends."""
    fields.setdefault("width", 64)
    fields.setdefault("height", 64)
    job_id = str((await server.generate(**fields))["job"]["id"])
    await wait_until_finished(server, job_id)
    return job_id


async def hold_first_jobs_page(page: Page) -> asyncio.Event:
    """Hold the page's first jobs query until the returned event is set."""
    release = asyncio.Event()
    held: list[str] = []

    async def handle(route: Route) -> None:
        if not held and "query Jobs(" in (route.request.post_data or ""):
            held.append(route.request.url)
            await release.wait()
        await route.continue_()

    await page.route("**/graphql", handle)
    return release


@needs_chromium
async def test_the_list_counts_pages_and_filters(dashboard: Dashboard, server: LiveServer) -> None:
    for index in range(21):
        await finished_job(server, prompt=f"a quick sketch {index}", provider="mock", extra=QUICK)
    failed = await finished_job(
        server, prompt="a doomed sketch", provider="mock", extra={**QUICK, "fail": "permanent"}
    )
    await finished_job(server, prompt="a local painting", provider="local")
    assert await total(server) == 23

    page = dashboard.page
    release = await hold_first_jobs_page(page)
    await page.goto(server.url + "/")
    # while the first page is on its way, nothing claims the list is empty
    await expect(page.locator("#jobs-loading")).to_be_visible()
    await expect(page.locator("#jobs")).to_have_attribute("aria-busy", "true")
    await expect(page.locator("#jobs-empty")).to_be_hidden()
    await expect(page.locator("body")).not_to_contain_text("No jobs yet")
    await expect(page.locator("#jobs-count")).to_have_text("")
    await screenshot(page, "dashboard-loading.png")
    release.set()

    await expect(page.locator("#jobs-loading")).to_be_hidden()
    await expect(page.locator("#jobs-count")).to_have_text("23 jobs")
    jobs = page.locator("#jobs > .job")
    await expect(jobs).to_have_count(20)
    more = page.get_by_role("button", name=re.compile("Load more"))
    await expect(more).to_have_text("Load more (20 of 23 shown)")
    await more.click()
    await expect(jobs).to_have_count(23)
    await expect(more).to_be_hidden()
    await expect(jobs.last.locator(".job-prompt")).to_have_text("a quick sketch 0")
    await page.mouse.move(0, 0)
    await screenshot(page, "dashboard-list.png")

    status = page.get_by_label("Filter by status")
    await status.select_option("FAILED")
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_have_attribute("data-job-id", failed)
    await expect(page.locator("#jobs-count")).to_have_text("1 job")
    assert await total(server, status=["FAILED"]) == 1

    await status.select_option("")
    provider = page.get_by_label("Filter by provider")
    await expect(provider.locator("option")).to_have_text(
        ["All", "local", "mock", "openai", "replicate"]
    )
    await provider.select_option("local")
    await expect(jobs).to_have_count(1)
    await expect(jobs.first.locator(".job-prompt")).to_have_text("a local painting")
    await expect(page.locator("#jobs-count")).to_have_text("1 job")

    await page.get_by_label("Filter by kind").select_option("PROCESS_IMAGE")
    await expect(page.locator("#jobs-empty")).to_have_text("No jobs match these filters.")
    await expect(jobs).to_have_count(0)
    await expect(page.locator("#jobs-count")).to_have_text("0 jobs")

    # live under filters: a matching new job comes in and is counted, another stays out
    await page.get_by_label("Filter by kind").select_option("GENERATE_IMAGE")
    await expect(page.locator("#jobs-count")).to_have_text("1 job")
    await finished_job(server, prompt="another mock sketch", provider="mock", extra=QUICK)
    await finished_job(server, prompt="another local painting", provider="local")
    await expect(dashboard.card("another local painting").locator(".badge")).to_have_text(
        "SUCCEEDED"
    )
    await expect(page.locator("#jobs-count")).to_have_text("2 jobs")
    await expect(dashboard.card("another mock sketch")).to_have_count(0)
    assert await total(server, provider="local", kind="GENERATE_IMAGE") == 2

    # a job leaving the chosen statuses leaves the list (the subscription is not filtered
    # by status, so the page sees it go)
    await page.get_by_label("Filter by provider").select_option("")
    await page.get_by_label("Filter by status").select_option("QUEUED,RUNNING")
    await expect(page.locator("#jobs-empty")).to_have_text("No jobs match these filters.")
    await dashboard.submit("a mountain to stop", provider="mock")
    card = dashboard.card("a mountain to stop")
    await expect(card.locator(".badge")).to_have_text("RUNNING")
    await expect(page.locator("#jobs-count")).to_have_text("1 job")
    job_id = await card.get_attribute("data-job-id")
    canceled = await server.graphql(CANCEL, {"id": job_id})  # elsewhere: seen through events
    assert canceled["data"]["cancelJob"]["job"]["status"] == "CANCELED"
    await expect(card).to_have_count(0)
    await expect(page.locator("#jobs-count")).to_have_text("0 jobs")
    await expect(page.locator("#jobs-empty")).to_be_visible()
    assert dashboard.problems == []


# -- media: upload, process, play -----------------------------------------------------------

MEDIA_SETTLED = "el => el.readyState >= 1 || el.error !== null"
MEDIA_STATE = "el => [el.readyState, el.error && el.error.code, el.duration]"


async def assert_plays(page: Page, media: Locator) -> float:
    """Wait until the element has loaded its metadata (or failed to); returns the duration."""
    await page.wait_for_function(MEDIA_SETTLED, arg=await media.element_handle())
    ready, error, duration = await media.evaluate(MEDIA_STATE)
    assert error is None and ready >= 1 and duration > 0, (ready, error, duration)
    return float(duration)


async def upload_on_page(page: Page, path: Path) -> None:
    await page.get_by_label("File (image, video or audio)").set_input_files(path)
    await expect(page.locator("#upload-status")).to_have_attribute("data-state", "uploaded")
    await expect(page.get_by_role("button", name="Process")).to_be_enabled()


async def outputs_of(server: LiveServer, job_id: str) -> dict[str, dict[str, Any]]:
    body = await server.graphql(
        "query($id: ID!) { job(id: $id) { outputs { name contentType width height } } }",
        {"id": job_id},
    )
    return {output["name"]: output for output in body["data"]["job"]["outputs"]}


@needs_chromium
@embedded_only
async def test_a_video_is_uploaded_processed_live_and_played(
    dashboard: Dashboard, server: LiveServer, tmp_path: Path
) -> None:
    page = dashboard.page
    await dashboard.open()
    await page.evaluate(RECORD_PROGRESS)
    clip = make_video(tmp_path / "clip.mp4", seconds=1.0, width=160, height=120)
    await upload_on_page(page, clip)
    await expect(page.locator("#upload-status")).to_contain_text("clip.mp4 · video/mp4 · 160×120")
    await expect(page.locator("#operations")).to_be_visible()
    await expect(page.locator("#variants")).to_be_hidden()
    await page.get_by_label("Audio codec").select_option("MP3")
    await page.get_by_role("button", name="Process").click()

    card = page.locator('.job[data-kind="PROCESS_VIDEO"]')
    await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
    job_id = await card.get_attribute("data-job-id")
    assert job_id is not None
    progress = await dashboard.progress_of(job_id)
    assert progress[-1] == 1 and len(progress) >= 2, progress

    video = card.locator(".job-outputs video")
    audio = card.locator(".job-outputs audio")
    await expect(video).to_have_count(1)
    await expect(audio).to_have_count(1)
    await expect(card.locator(".job-outputs img")).to_have_count(1)  # the thumbnail
    assert await assert_plays(page, video) == pytest.approx(1.0, abs=0.2)
    assert await video.evaluate("v => [v.videoWidth, v.videoHeight]") == [160, 120]
    assert await assert_plays(page, audio) == pytest.approx(1.0, abs=0.2)
    outputs = await outputs_of(server, job_id)
    assert outputs["video"]["contentType"] == "video/mp4"
    assert outputs["audio"]["contentType"] == "audio/mpeg"
    await expect(card.locator("figcaption")).to_contain_text(
        [re.compile(r"^thumbnail · 160×120"), re.compile(r"^video · 160×120"), re.compile("^audio")]
    )

    await card.get_by_text("Details").click()
    detail = card.locator(".detail-body")
    outputs_table = detail.locator("table").filter(has_text="Outputs")
    await expect(outputs_table.locator("tbody tr")).to_have_count(3)
    await expect(outputs_table.locator("tbody tr").filter(has_text="video/mp4")).to_contain_text(
        '"duration"'
    )
    await expect(detail).to_contain_text('"videoCodec": "h264"')  # the job's result
    await page.mouse.move(0, 0)
    await screenshot(page, "dashboard-video.png")
    assert dashboard.problems == []


@needs_chromium
@embedded_only
async def test_an_image_is_uploaded_and_made_into_variants(
    dashboard: Dashboard, server: LiveServer, tmp_path: Path
) -> None:
    page = dashboard.page
    await dashboard.open()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    await page.get_by_label("File (image, video or audio)").set_input_files(notes)
    await expect(page.locator("#upload-status")).to_have_attribute("data-state", "refused")
    await expect(page.locator("#process-errors")).to_contain_text("UNSUPPORTED_MEDIA_TYPE")
    await expect(page.get_by_role("button", name="Process")).to_be_disabled()

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(640, 480))
    await upload_on_page(page, photo)
    await expect(page.locator("#process-errors li")).to_have_count(0)
    await expect(page.locator("#variants")).to_be_visible()
    await expect(page.locator("#operations")).to_be_hidden()
    variants = page.locator(".variant")
    await expect(variants).to_have_count(1)
    await page.get_by_role("button", name="Add variant").click()
    second = variants.nth(1)
    await second.get_by_label("Name", exact=True).fill("small")
    await second.get_by_label("Operation", exact=True).select_option("resize")
    await expect(second.get_by_label("Size", exact=True)).to_be_hidden()
    await second.get_by_label("Width", exact=True).fill("160")
    await second.get_by_label("Height", exact=True).fill("120")
    await second.get_by_label("Format", exact=True).select_option("WEBP")
    await page.get_by_role("button", name="Process").click()

    card = page.locator('.job[data-kind="PROCESS_IMAGE"]')
    await expect(card.locator(".job-prompt")).to_have_text("Process image: thumb, small")
    await expect(card.locator(".badge")).to_have_text("SUCCEEDED")
    images = card.locator(".job-outputs img")
    await expect(images).to_have_count(2)
    for index in range(2):
        await page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0",
            arg=await images.nth(index).element_handle(),
        )
    await expect(card.locator("figcaption")).to_contain_text(
        [re.compile(r"^thumb · 256×192"), re.compile(r"^small · 160×120")]
    )
    job_id = await card.get_attribute("data-job-id")
    assert job_id is not None
    outputs = await outputs_of(server, job_id)
    assert outputs["small"]["contentType"] == "image/webp"
    assert (outputs["thumb"]["width"], outputs["thumb"]["height"]) == (256, 192)
    # the browser logs the refused upload's 422 itself; nothing else went wrong
    assert [p for p in dashboard.problems if "status of 422" not in p] == []


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    await page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


# -- what each job offers: buttons by state, and its detail ---------------------------------


def buttons(card: Locator) -> Locator:
    return card.locator(".job-actions button:visible")


@needs_chromium
async def test_cancel_and_retry_are_offered_only_where_they_help(
    page: Page, settings_factory: Any
) -> None:
    # one job at a time, so that a second job waits QUEUED behind a running one
    settings = settings_factory(
        worker_concurrency=1,
        max_attempts=2,
        mock_delay_ms=60_000,
        mock_steps=600,
        shutdown_grace=0.5,
    )
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=True) as server:
        board = Dashboard.watch(page, server)
        await finished_job(
            server, prompt="refused for good", provider="mock", extra={**QUICK, "fail": "permanent"}
        )
        await finished_job(
            server, prompt="failed twice", provider="mock", extra={**QUICK, "fail": "transient"}
        )
        await board.open()
        refused, flaky = board.card("refused for good"), board.card("failed twice")
        await expect(refused.locator(".badge")).to_have_text("FAILED")
        await expect(buttons(refused)).to_have_count(0)  # the same request fails the same way
        await expect(flaky.locator(".badge")).to_have_text("FAILED")
        await expect(buttons(flaky)).to_have_text(["Retry"])  # retryable, attempts ran out

        await board.submit("holding the worker", provider="mock", size="256x256")
        holding = board.card("holding the worker")
        await expect(holding.locator(".badge")).to_have_text("RUNNING")
        await expect(buttons(holding)).to_have_text(["Cancel"])
        await board.submit("waiting its turn", provider="local", size="256x256")
        waiting = board.card("waiting its turn")
        await expect(waiting.locator(".badge")).to_have_text("QUEUED")
        await expect(buttons(waiting)).to_have_text(["Cancel"])

        await waiting.get_by_role("button", name="Cancel").click()
        await expect(waiting.locator(".badge")).to_have_text("CANCELED")
        await expect(buttons(waiting)).to_have_text(["Retry"])

        # a detail left open follows the job
        await holding.get_by_text("Details").click()
        facts = holding.locator(".facts")
        await expect(facts).to_contain_text("StatusRUNNING")
        await holding.get_by_role("button", name="Cancel").click()
        await expect(facts).to_contain_text("StatusCANCELED")
        await expect(buttons(holding)).to_have_text(["Retry"])

        # retried, it fails again at once: seen queued, then failed again with Retry back
        before = int(await flaky.get_attribute("data-version") or 0)
        await flaky.evaluate(RECORD_STATUSES)
        await flaky.get_by_role("button", name="Retry").click()
        await page.wait_for_function(
            "([card, n]) => card.dataset.status === 'FAILED' && +card.dataset.version > n",
            arg=[await flaky.element_handle(), before],
        )
        assert "QUEUED" in await flaky.evaluate("card => card.statuses")
        await expect(buttons(flaky)).to_have_text(["Retry"])
        await page.mouse.move(0, 0)
        await screenshot(page, "dashboard-states.png")
        assert board.problems == []


DETAIL = """query($id: ID!) { job(id: $id) { attempts maxAttempts error { code message }
  webhookDeliveries { event statusCode } } }"""


@needs_chromium
@embedded_only
async def test_a_job_detail_shows_attempts_error_outputs_and_webhooks(
    page: Page, settings_factory: Any
) -> None:
    delivered = asyncio.Event()

    async def hook(request: Request) -> Response:
        await request.body()
        delivered.set()
        return Response(status_code=204)

    receiver = Starlette(routes=[StarletteRoute("/hook", hook, methods=["POST"])])
    async with serving(receiver) as receiver_url:
        settings = settings_factory(webhook_secret=WEBHOOK_SECRET, outbound_allow=[receiver_url])
        fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
        async with start_server(settings, fake, with_worker=True) as server:
            board = Dashboard.watch(page, server)
            hooked = await finished_job(
                server,
                prompt="a hooked heron",
                provider="local",
                seed=7,
                numOutputs=2,
                webhookUrl=f"{receiver_url}/hook",
            )
            await asyncio.wait_for(delivered.wait(), timeout=10)
            while not (await server.graphql(DETAIL, {"id": hooked}))["data"]["job"][
                "webhookDeliveries"
            ]:  # recorded right after the receiver answered
                await asyncio.sleep(0.02)
            failed = await finished_job(
                server,
                prompt="a refused heron",
                provider="mock",
                extra={**QUICK, "fail": "permanent"},
            )
            await board.open()

            card = board.card("a hooked heron")
            await card.get_by_text("Details").click()
            detail = card.locator(".detail-body")
            facts = detail.locator(".facts")
            await expect(facts).to_contain_text("Attempts1 of 3")
            for moment in ("Created", "Started", "Finished", "Updated"):
                value = facts.locator("dt", has_text=moment).locator(
                    "xpath=following-sibling::dd[1]"
                )
                await expect(value).to_have_text(re.compile(r"\d{4}.*\d{2}:\d{2}"))
            await expect(detail.locator("pre.json").first).to_contain_text('"seed": 7')
            outputs = detail.locator("table", has_text="Outputs").locator("tbody tr")
            await expect(outputs).to_have_count(2)
            await expect(outputs.first).to_contain_text(re.compile(r"image/png\s*64×64"))
            deliveries = detail.locator("table", has_text="Webhook deliveries").locator("tbody tr")
            await expect(deliveries).to_have_count(1)
            await expect(deliveries.first).to_contain_text("job.succeeded")
            await expect(deliveries.first).to_contain_text("204")
            await expect(deliveries.first).to_contain_text("delivered")

            truth = (await server.graphql(DETAIL, {"id": failed}))["data"]["job"]
            card = page.locator(f'[data-job-id="{failed}"]')
            await expect(card.locator(".job-error")).to_have_text(
                f"{truth['error']['code']}: {truth['error']['message']}"
            )
            await card.get_by_text("Details").click()
            facts = card.locator(".facts")
            await expect(facts).to_contain_text(f"Error code{truth['error']['code']}")
            await expect(facts).to_contain_text(f"Error message{truth['error']['message']}")
            await expect(facts).to_contain_text("Retryableno")
            await expect(facts).to_contain_text(
                f"Attempts{truth['attempts']} of {truth['maxAttempts']}"
            )
            await expect(card.locator(".detail-body")).to_contain_text("No webhook for this job.")
            await page.mouse.move(0, 0)
            await screenshot(page, "dashboard-detail.png")
            assert board.problems == []
