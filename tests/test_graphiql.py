"""GraphiQL works offline: the page loads every asset from the api, with intact hashes."""

from __future__ import annotations

import base64
import hashlib
import re

from tests.support import LiveServer

ASSET = re.compile(r'(?:src|href)="(/graphiql-assets/[^"]+)"\s+integrity="sha384-([^"]+)"')


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
