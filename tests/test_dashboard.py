"""The dashboard at ``/``: Debian's Chromium against a real server, worker and WebSocket."""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import (
    ConsoleMessage,
    Locator,
    Page,
    WebSocketRoute,
    expect,
)

from gql_media.runtime import open_runtime
from gql_media.services.auth import create_key
from gql_media.settings import Settings
from tests.browser import ARTIFACTS, PNG_SIGNATURE, needs_chromium
from tests.support import LiveServer, graphql_ws, start_server

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


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    # Local jobs take a few visible steps; mock jobs run for a minute unless canceled.
    settings: Settings = settings_factory(
        local_steps=4,
        local_step_delay=0.1,
        mock_delay_ms=60_000,
        mock_steps=600,
        shutdown_grace=0.5,
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
        await self.page.get_by_label("Prompt").fill(prompt)
        await self.page.get_by_label("Provider").select_option(provider)
        await self.page.get_by_label("Size").select_option(size)
        await self.page.get_by_label("Outputs").select_option(str(outputs))
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
    script = await server.http.get("/dashboard-assets/app.js")
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
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
    await expect(page.get_by_label("Prompt")).to_have_value("")

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


@needs_chromium
async def test_an_empty_prompt_is_reported_inline(dashboard: Dashboard) -> None:
    page = dashboard.page
    await dashboard.open()
    await dashboard.submit("   ")
    await expect(page.locator("#form-errors")).to_contain_text("PROMPT_EMPTY")
    await expect(page.locator("#form-errors")).to_contain_text("prompt must not be empty")
    await expect(page.get_by_label("Prompt")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".job")).to_have_count(0)
    await expect(page.locator("#jobs-empty")).to_be_visible()

    await dashboard.submit("a quiet harbour")
    await expect(page.locator("#form-errors li")).to_have_count(0)
    await expect(page.get_by_label("Prompt")).to_have_attribute("aria-invalid", "false")
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
async def test_an_api_key_entered_on_the_page_is_used(
    page: Page, settings_factory: Any, fake_redis_server: Any
) -> None:
    secured = settings_factory(auth="required", secret_key="dashboard-test-secret-" + "k" * 20)
    async with open_runtime(secured, fake_redis_server) as runtime:
        _, key = await create_key(runtime.deps, f"dashboard-{uuid.uuid4().hex[:8]}")
    async with start_server(secured, fake_redis_server, with_worker=True) as server:
        board = Dashboard.watch(page, server)
        await page.goto(server.url + "/")
        connection = page.locator("#connection")
        await expect(connection).to_have_text(re.compile("API key"))
        await expect(connection).to_have_attribute("data-state", "error")

        await page.get_by_text("API key", exact=True).click()
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Save").click()
        await expect(connection).to_have_attribute("data-state", "live")
        assert await page.evaluate("localStorage.getItem('gql-media-key')") == key

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
