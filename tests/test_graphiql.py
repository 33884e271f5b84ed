"""GraphiQL works offline: the page loads every asset from the api, with intact hashes, and
runs subscriptions over the api's WebSocket."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from urllib.parse import quote, urlencode, urlsplit

from PIL import Image
from playwright.async_api import (
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    WebSocket,
    expect,
)

from gql_media.api.graphiql import CDN_ASSETS
from tests.browser import ARTIFACTS, PNG_SIGNATURE, needs_chromium
from tests.support import LiveServer

ASSET = re.compile(r'(?:src|href)="(/graphiql-assets/[^"]+)"\s+integrity="sha384-([^"]+)"')
FOLLOW = """subscription($id: ID!) {
  jobUpdated(id: $id) {
    status
    progress
  }
}"""

# Every text the result pane shows, in order, from the moment it is installed.
RECORD_RESULTS = """() => {
  window.__results = [];
  const pane = document.querySelector("section.result-window");
  const record = () => {
    const text = pane.innerText.replaceAll("\\u00a0", " ").trim();  // CodeMirror's spaces
    if (text && text !== window.__results.at(-1)) window.__results.push(text);
  };
  new MutationObserver(record).observe(pane, {
    subtree: true, childList: true, characterData: true,
  });
}"""


async def test_graphiql_assets_are_served_by_the_api(server: LiveServer) -> None:
    page = await server.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert "unpkg.com" not in page.text
    assert not re.search(r"(?:src|href)=\"https?:", page.text)
    assets = ASSET.findall(page.text)
    assert len(assets) == 7, assets
    for path, digest in assets:
        response = await server.http.get(path)
        assert response.status_code == 200, path
        assert base64.b64encode(hashlib.sha384(response.content).digest()).decode() == digest
        assert "immutable" in response.headers["cache-control"]


@needs_chromium
async def test_graphiql_runs_a_subscription_with_no_internet(
    page: Page, server: LiveServer
) -> None:
    origin = urlsplit(server.url).netloc
    elsewhere: list[str] = []  # requests for anything not on the api: all refused
    problems: list[str] = []
    loaded: list[str] = []
    sockets: list[WebSocket] = []
    frames: list[str] = []

    async def only_the_api(route: Route) -> None:
        if urlsplit(route.request.url).netloc == origin:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort("internetdisconnected")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    def on_response(response: Response) -> None:
        loaded.append(urlsplit(response.url).path)
        if response.status >= 400:
            problems.append(f"{response.status} {response.url}")

    def on_request_failed(request: Request) -> None:
        if urlsplit(request.url).netloc == origin:
            problems.append(f"{request.failure} {request.url}")

    def on_websocket(socket: WebSocket) -> None:
        sockets.append(socket)
        socket.on("framereceived", lambda payload: frames.append(str(payload)))

    await page.route("**/*", only_the_api)
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    page.on("websocket", on_websocket)

    # strawberry's page takes its document from ?q= (decodeURIComponent: %20, not +)
    await page.goto(f"{server.url}/graphql?{urlencode({'q': FOLLOW}, quote_via=quote)}")
    execute = page.get_by_role("button", name="Execute query (Ctrl-Enter)")
    await expect(execute).to_be_visible()
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("jobUpdated")

    # The job runs for 1.5 s, begun only now so that it is still running when followed.
    submitted = await server.generate(
        prompt="a harbour seen from GraphiQL",
        provider="mock",
        extra={"delayMs": 1500, "steps": 5},
    )
    job_id = submitted["job"]["id"]
    variables = page.get_by_role("region", name="Variables").locator(".CodeMirror").first
    await variables.click()
    await page.keyboard.insert_text(json.dumps({"id": job_id}))
    await expect(variables).to_contain_text(job_id)
    await page.evaluate(RECORD_RESULTS)
    await execute.click()

    result = page.locator("section.result-window")
    await expect(result).to_contain_text('"SUCCEEDED"')
    await expect(execute).to_be_visible()  # back from "Stop query": the subscription completed

    shown = [
        json.loads(text)["data"]["jobUpdated"] for text in await page.evaluate("window.__results")
    ]
    statuses = [update["status"] for update in shown]
    progress = [update["progress"] for update in shown]
    assert shown[-1] == {"status": "SUCCEEDED", "progress": 1}, shown
    assert "RUNNING" in statuses and set(statuses[:-1]) <= {"QUEUED", "RUNNING"}, shown
    assert progress == sorted(progress) and progress[-2] < 1, shown

    assert [socket.url for socket in sockets] == [server.ws_url]
    assert sum('"type":"next"' in frame for frame in frames) >= 2, frames
    assets = {path for path in loaded if path.startswith("/graphiql-assets/")}
    assert assets == {f"/graphiql-assets/{name}" for name in CDN_ASSETS.values()}, loaded
    assert elsewhere == []
    assert problems == []

    await page.mouse.move(0, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "graphiql.png"
    await page.screenshot(path=shot)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert Image.open(io.BytesIO(data)).size == (1200, 820)
