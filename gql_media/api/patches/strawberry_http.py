"""Strawberry's HTTP view, reading every malformed request as a 400 (always on: this is
behaviour, not speed; nothing to switch).

Why: strawberry answers a body that is not JSON with 400, but bytes that are not text,
arrays nested past the parser's stack and bodies that are not an object reach code that
assumes an object and fail as server errors; so does a multipart ``map`` that does not fit
its ``operations``. ``ReadingView`` turns each into cross-web's ``HTTPException`` (400),
the type strawberry's view raises for a request it cannot read, which the api's view then
answers as JSON with a code.

It also reads a request that names a trusted document by id (``api.trusted``): the body
or the query string gets the document's text as its ``query`` before strawberry reads it.

Internals relied on (checked by ``tests/test_patches.py``): strawberry's view calls
``parse_json(data)`` to read a JSON body, ``parse_query_params(params)`` to read a GET's
query string (calling ``parse_json`` for its ``variables`` and ``extensions``) and
``parse_multipart(request)`` to read a multipart request, asks
``should_render_graphql_ide(request)`` whether a GET wants GraphiQL's page, and raises
``cross_web.HTTPException(status_code, reason)`` (cross-web is strawberry's HTTP toolkit)
out of ``run`` for one it cannot read.
"""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException
from strawberry.asgi import GraphQL

from gql_media.api.context import Context
from gql_media.api.trusted import TrustedDocuments

__all__ = ["HTTPException", "ReadingView"]


class ReadingView(GraphQL[Context, None]):
    """Strawberry's ASGI view with the readers above."""

    trusted: TrustedDocuments | None = None
    _reading_params = False  # parse_json is reading a part of a query string

    def parse_json(self, data: str | bytes) -> Any:
        try:
            parsed = super().parse_json(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # bytes that are not text at all, or arrays nested past the parser's stack
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(parsed, dict | list):  # strawberry assumes an object (or a batch)
            raise HTTPException(400, "Expected a JSON object")
        if self.trusted is not None and isinstance(parsed, dict) and not self._reading_params:
            return self.trusted.resolve(parsed)  # a request's body
        return parsed

    def should_render_graphql_ide(self, request: Any) -> bool:
        """Not for a GET that names a trusted document instead of sending one."""
        if not super().should_render_graphql_ide(request):  # a POST: no query string read
            return False
        params = request.query_params
        return not ("documentId" in params or "extensions" in params)

    def parse_query_params(self, params: Any) -> dict[str, Any]:
        # synchronous: no other request reads a query string meanwhile
        self._reading_params = True
        try:
            parsed = super().parse_query_params(params)
        finally:
            self._reading_params = False
        return self.trusted.resolve(parsed) if self.trusted is not None else parsed

    async def parse_multipart(self, request: Any) -> dict[str, str]:
        """strawberry's, with a ``map`` that does not fit ``operations`` (not an object of
        lists of dotted paths, or paths into nothing) answered 400, not a server error."""
        try:
            return await super().parse_multipart(request)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise HTTPException(
                400, "the multipart map does not match the operations' variables"
            ) from exc
