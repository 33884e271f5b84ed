"""GraphiQL's page without the internet: the files strawberry's page loads from unpkg are
shipped in the package and served under ``/graphiql-assets``."""

from __future__ import annotations

from pathlib import Path

GRAPHIQL_ASSETS = Path(__file__).parent / "static" / "graphiql"
# The files strawberry's GraphiQL page loads from unpkg, shipped in the package (the same
# versions; the page's integrity hashes still apply).
CDN_ASSETS = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": (
        "react-dom.production.min.js"
    ),
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": (
        "plugin-explorer.umd.js"
    ),
}


def offline_graphiql(html: str) -> str:
    for url, name in CDN_ASSETS.items():
        html = html.replace(url, f"/graphiql-assets/{name}")
    return html
