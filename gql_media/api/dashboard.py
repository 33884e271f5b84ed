"""The live dashboard at ``/``: one static page, its stylesheet and its ES modules.

The page carries a strict Content-Security-Policy (no inline script or style). The URLs of
the stylesheet and the entry module carry a digest of the file, so those answers are cached
for good; the page itself and the modules the entry imports are revalidated on every load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).parent / "static" / "dashboard"
ASSETS_PATH = "/dashboard-assets"
VERSIONED = ("app.js", "app.css")

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


class DashboardFiles(StaticFiles):
    """The dashboard's files: cached for good when asked for by their current digest."""

    def __init__(self, directory: Path, digests: dict[str, str]) -> None:
        super().__init__(directory=directory)
        self.digests = digests

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        query = scope.get("query_string", b"").decode("latin-1")
        current = self.digests.get(path)
        pinned = current is not None and query == f"v={current}"
        response.headers["Cache-Control"] = IMMUTABLE if pinned else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _pinned_page(digests: dict[str, str]) -> str:
    html = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    for name, digest in digests.items():
        html = html.replace(f'"{ASSETS_PATH}/{name}"', f'"{ASSETS_PATH}/{name}?v={digest}"')
    return html


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(request: Request) -> str:
    """Only this origin's scripts and styles; images, video and audio also from the
    configured public URL; connections to this origin over HTTP and WebSocket."""
    websocket = f"{'wss' if request.url.scheme == 'https' else 'ws'}://{request.url.netloc}"
    media = ["'self'"]
    runtime = getattr(request.state, "runtime", None)
    public_url = runtime.deps.settings.public_url if runtime is not None else None
    if public_url:
        media.append(_origin(public_url))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join([*media, 'data:'])}",
            f"media-src {' '.join(media)}",
            f"connect-src 'self' {websocket}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def dashboard_routes() -> list[BaseRoute]:
    """``/`` serving the page and ``/dashboard-assets/…`` serving its files."""
    digests = {name: _digest(DASHBOARD_DIR / name) for name in VERSIONED}
    page = _pinned_page(digests)

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": content_security_policy(request),
                "Cache-Control": REVALIDATE,
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return [
        Route("/", dashboard, name="dashboard"),
        Mount(ASSETS_PATH, DashboardFiles(DASHBOARD_DIR, digests), name="dashboard-assets"),
    ]
