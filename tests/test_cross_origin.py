"""A frontend served from another origin, in Chromium: a listed origin queries with the
headers GraphQL clients send and follows its job live over the WebSocket; an origin that is
not listed gets neither."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser import ARTIFACTS, needs_chromium
from tests.fakes import serving
from tests.test_security import secured

# What a frontend does with Apollo Client or urql and graphql-ws: a mutation over HTTP with
# the headers those clients and tracing add (a CORS preflight), then a subscription over
# graphql-transport-ws until the job completes.
FRONTEND = """async ({api, key}) => {
  const headers = {
    "Content-Type": "application/json",
    "Authorization": `Bearer ${key}`,
    "apollographql-client-name": "web",
    "apollographql-client-version": "1.0.0",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=value",
  };
  const query = `mutation($i: GenerateImageInput!) {
    generateImage(input: $i) { job { id } userErrors { code } } }`;
  let created;
  try {
    const response = await fetch(`${api}/graphql`, {
      method: "POST", headers,
      body: JSON.stringify({query, variables: {i: {prompt: "a kite", width: 64, height: 64}}}),
    });
    created = (await response.json()).data.generateImage.job.id;
  } catch (error) {
    created = null;
  }
  const follow = (id) => new Promise((resolve) => {
    const seen = [];
    const socket = new WebSocket(`${api.replace("http", "ws")}/graphql`, "graphql-transport-ws");
    socket.onopen = () => socket.send(JSON.stringify(
      {type: "connection_init", payload: {authorization: `Bearer ${key}`}}));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({id: "1", type: "subscribe", payload: {
          query: "subscription($id: ID!) { jobUpdated(id: $id) { status } }",
          variables: {id}}}));
      } else if (message.type === "next") {
        seen.push(message.payload.data.jobUpdated.status);
      } else if (message.type === "complete") {
        socket.close(1000);
      }
    };
    socket.onclose = (event) => resolve({seen, code: event.code});
  });
  return {created, followed: await follow(created || "job_unknown")};
}"""


@needs_chromium
async def test_a_listed_origin_gets_live_updates_and_another_gets_nothing(
    settings_factory: Any, page: Any
) -> None:
    home = Starlette(routes=[Route("/", lambda request: HTMLResponse("<title>app</title>"))])
    async with serving(home) as served:
        port = served.rsplit(":", 1)[1]
        listed, other = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
        async with secured(settings_factory, cors_origins=[listed]) as api:
            arguments = {"api": api.live.url, "key": api.keys.alice}
            await page.goto(listed + "/")
            result = await page.evaluate(FRONTEND, arguments)
            assert result["created"], result
            assert result["followed"]["seen"][-1] == "SUCCEEDED", result
            assert result["followed"]["code"] == 1000, result
            await page.screenshot(path=str(ARTIFACTS / "cross-origin-listed.png"))

            await page.goto(other + "/")  # same page, an origin that is not listed
            refused = await page.evaluate(FRONTEND, arguments)
            assert refused["created"] is None, refused
            assert refused["followed"] == {"seen": [], "code": 1006}, refused
            jobs = await api.graphql(api.keys.alice, "{ jobs { totalCount } }")
            assert jobs["data"]["jobs"]["totalCount"] == 1, json.dumps(jobs)  # the listed one's
