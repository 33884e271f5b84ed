"""Stable codes on every top-level GraphQL error, and masking of the unexpected ones.

Codes come from types and our own rules, never from a library's wording: our errors and
rules carry their codes, a ``GqlMediaError`` behind an error gives its own, a syntax error
is told by its type (and the token cap by ``Classifier.syntax_error_code``), strawberry's
refusal of an operation type by its type, and what is left of a request's errors is
GRAPHQL_VALIDATION_FAILED.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from graphql import GraphQLError, GraphQLSyntaxError, parse
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gql_media.api.patches.strawberry_operations import refuse, refused_type
from gql_media.db.engine import is_unavailable
from gql_media.errors import ErrorCode, GqlMediaError

log = logging.getLogger(__name__)


def graphql_error(code: ErrorCode, message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code.value})


def is_unexpected(error: GraphQLError) -> bool:
    """Whether the error is the server's fault (``classify`` makes it INTERNAL_ERROR), not
    something the request did or met: a bad document or argument, an unknown id, a limit,
    a database that is down."""
    if error.extensions and "code" in error.extensions:
        return False
    original = error.original_error
    return not (
        original is None
        or isinstance(original, GraphQLError | GqlMediaError)
        or refused_type(original) is not None
        or is_unavailable(original)
    )


@dataclass(frozen=True, slots=True)
class Classifier:
    """Gives every error a code (``classify``).

    ``debug`` shows unexpected errors' text instead of masking it; ``max_tokens`` is the
    parser's token cap, which tells TOO_MANY_TOKENS from other syntax errors;
    ``cut_hints`` cuts graphql-core's "Did you mean …?" hints out of request errors, for a
    server whose introspection is off when no patch of ours asked graphql-core not to
    hint (see ``api.patches``)."""

    debug: bool = False
    max_tokens: int | None = None
    cut_hints: bool = False

    def classify(self, error: GraphQLError) -> GraphQLError:
        """The error with ``extensions.code`` set; unexpected errors are masked unless
        debugging. Logging them is ``log_errors``'s work."""
        if error.extensions and "code" in error.extensions:
            return error
        original = error.original_error
        if isinstance(original, GqlMediaError):
            return _with_code(error, original.code, original.message)
        kind = refused_type(original)
        if kind is not None:
            # e.g. a query over the legacy graphql-ws protocol, which carries subscriptions
            return _with_code(
                error,
                ErrorCode.BAD_REQUEST,
                f"{kind} operations are not allowed on this transport; "
                "use HTTP, or the graphql-transport-ws protocol",
            )
        if original is not None and is_unavailable(original):
            log.warning("database unavailable: %s", original)
            return _with_code(error, ErrorCode.SERVICE_UNAVAILABLE, "The database is unavailable.")
        if original is None or isinstance(original, GraphQLError):
            # Parse, validation and variable coercion errors: the request is wrong, not the
            # server.
            message = _without_hint(error.message) if self.cut_hints else error.message
            if isinstance(error, GraphQLSyntaxError):
                return _with_code(error, self.syntax_error_code(error), message)
            return _with_code(error, ErrorCode.GRAPHQL_VALIDATION_FAILED, message)
        message = (
            f"{type(original).__name__}: {original}" if self.debug else "Internal server error."
        )
        return _with_code(error, ErrorCode.INTERNAL_ERROR, message)

    def syntax_error_code(self, error: GraphQLSyntaxError) -> ErrorCode:
        """TOO_MANY_TOKENS when the parser's token cap stopped the document: parsed again
        with one token more allowed, it gets further (or through). A document that fails
        where it failed has a syntax error of its own within its first ``max_tokens`` + 1
        tokens: GRAPHQL_PARSE_FAILED (also when that token is the one past the cap). The
        parse again reads at most ``max_tokens`` + 2 tokens, comments counted, and only
        for a document that did not parse."""
        if self.max_tokens is None or error.source is None:
            return ErrorCode.GRAPHQL_PARSE_FAILED
        try:
            parse(error.source, no_location=True, max_tokens=self.max_tokens + 1)
        except GraphQLSyntaxError as again:
            if again.positions == error.positions:
                return ErrorCode.GRAPHQL_PARSE_FAILED
        return ErrorCode.TOO_MANY_TOKENS


def _without_hint(message: str) -> str:
    """``message`` without graphql-core's trailing " Did you mean …?" suggestion."""
    head, hint, _ = message.partition(" Did you mean ")
    return head if hint else message


def log_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    """Log the errors a request met at DEBUG, and return the unexpected ones, which the
    caller logs at ERROR with their traceback: a client's mistake is not the server's."""
    unexpected: list[GraphQLError] = []
    for error in errors:
        if is_unexpected(error):
            unexpected.append(error)
        else:
            log.debug("request error at %s: %s", error.path, error.message)
    return unexpected


def _with_code(error: GraphQLError, code: ErrorCode, message: str) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**(error.extensions or {}), "code": code.value},
    )


def refuse_subscription_over_http(context: ExecutionContext) -> None:
    """Raise for a parsed subscription that came over HTTP without asking for a stream
    (``api.streams``), which would otherwise run as a plain field and fail as an internal
    error; the view answers 400 BAD_REQUEST."""
    if context.graphql_document is None or isinstance(context.context.request, WebSocket):
        return
    if getattr(context.context, "stream", False):
        return
    try:
        operation_type = context.operation_type
    except RuntimeError:
        return  # no such operation: strawberry reports it
    if operation_type is OperationType.SUBSCRIPTION:
        refuse(operation_type)


def error_response(code: ErrorCode, message: str, status: int) -> JSONResponse:
    """An HTTP answer in GraphQL's error shape, for requests refused before any document
    runs."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code.value}}]},
        status_code=status,
    )


def unauthenticated() -> JSONResponse:
    response = error_response(
        ErrorCode.UNAUTHENTICATED, "send an API key: Authorization: Bearer <key>", 401
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="gql-media"'
    return response
