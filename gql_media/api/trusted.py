"""Trusted documents: operations known in advance, sent by their hash.

``GQL_MEDIA_TRUSTED_DOCUMENTS`` names a manifest, a JSON object from a document's id to its
text: the ``persisted-documents.json`` that GraphQL Code Generator's client preset writes
(ids ``sha256:<hex>``), or any object of that shape. A request may then name a listed
document instead of sending it:

- ``documentId`` beside ``variables`` (the GraphQL-over-HTTP persisted documents draft, as
  the client preset's documents carry their id), in a POST body, a GET query string or a
  WebSocket ``subscribe`` payload;
- ``extensions.persistedQuery.sha256Hash`` (Apollo's persisted queries, also urql's
  ``persistedExchange``), with or without the ``sha256:`` prefix.

An id the manifest lacks is answered with PERSISTED_QUERY_NOT_FOUND (the code Apollo's and
urql's links look for before sending the whole document). With
``GQL_MEDIA_TRUSTED_DOCUMENTS_STRICT`` only listed documents run: a document sent as text
runs only if it is, character for character, one of the manifest's, and any other gets
DOCUMENT_NOT_TRUSTED before it is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphql import GraphQLError, GraphQLFormattedError

from gql_media.errors import ErrorCode, GqlMediaError
from gql_media.settings import Settings

PREFIX = "sha256:"


class DocumentRefused(GqlMediaError):
    """A request named a document the manifest lacks, or sent one it does not list."""


class ManifestError(ValueError):
    """The manifest cannot be read, or is not an object of document ids to texts."""


def _bare(document_id: str) -> str:
    return document_id.removeprefix(PREFIX).lower()


class TrustedDocuments:
    """The manifest's documents by id, and whether only they may run."""

    def __init__(self, documents: Mapping[str, str], *, strict: bool) -> None:
        self._by_id = {_bare(key): text for key, text in documents.items()}
        self._texts = frozenset(documents.values())
        self.strict = strict

    @classmethod
    def load(cls, path: Path, *, strict: bool) -> TrustedDocuments:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ManifestError(f"cannot read the trusted documents {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(key, str) and isinstance(text, str) and text.strip()
            for key, text in data.items()
        ):
            raise ManifestError(
                f"the trusted documents {path} must be a JSON object of document ids to "
                "documents (GraphQL Code Generator's persisted-documents.json)"
            )
        return cls(data, strict=strict)

    def __len__(self) -> int:
        return len(self._by_id)

    def resolve(self, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` (a POST body, GET parameters or a subscribe payload) with the text
        of the document it names by id as its ``query``; unchanged when it sends a text
        (which strict mode checks here) or names none."""
        query = request.get("query")
        if query:
            if isinstance(query, str):
                self.check(query)
            return request
        document_id = named_id(request)
        if document_id is None:
            return request
        text = self._by_id.get(_bare(document_id))
        if text is None:
            raise DocumentRefused(
                "PersistedQueryNotFound: no trusted document has this id",
                code=ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            )
        return {**request, "query": text}

    def check(self, query: str) -> None:
        """In strict mode, refuse a document the manifest does not list."""
        if self.strict and query not in self._texts:
            raise DocumentRefused(
                "only trusted documents run here: send a document of the manifest, or its id",
                code=ErrorCode.DOCUMENT_NOT_TRUSTED,
            )


def trusted_documents(settings: Settings) -> TrustedDocuments | None:
    """The manifest ``settings`` name, read now (a file that cannot be read stops the api
    at start-up), or None."""
    if settings.trusted_documents is None:
        return None
    return TrustedDocuments.load(
        settings.trusted_documents, strict=settings.trusted_documents_strict
    )


def named_id(request: Mapping[str, Any]) -> str | None:
    """The document id a request names, if any (see the module docstring)."""
    document_id = request.get("documentId")
    if isinstance(document_id, str) and document_id:
        return document_id
    extensions = request.get("extensions")
    if isinstance(extensions, dict):
        persisted = extensions.get("persistedQuery")
        if isinstance(persisted, dict):
            digest = persisted.get("sha256Hash")
            if isinstance(digest, str) and digest:
                return digest
    return None


def refusal_payload(error: DocumentRefused) -> GraphQLFormattedError:
    """A GraphQL error object for ``error``, as sent in a response or WebSocket message."""
    return GraphQLError(error.message, extensions={"code": error.code.value}).formatted
