"""Stable codes on every top-level GraphQL error, and masking of the unexpected ones."""

from __future__ import annotations

import logging
import re

from graphql import GraphQLError
from starlette.websockets import WebSocket
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gql_media.db.engine import is_unavailable
from gql_media.errors import ErrorCode, GqlMediaError

log = logging.getLogger(__name__)

# The parser's errors carry no code of their own: anchored, so that a client's own text
# quoted in a message cannot pick the code. (Depth, aliases and cost come from our own rule,
# with their codes.)
_MESSAGE_CODES = (
    (
        re.compile(r"Syntax Error: Document contains more than \d+ tokens"),
        ErrorCode.TOO_MANY_TOKENS,
    ),
    (re.compile(r"Syntax Error"), ErrorCode.GRAPHQL_PARSE_FAILED),
)


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
        or isinstance(original, GraphQLError | GqlMediaError | InvalidOperationTypeError)
        or is_unavailable(original)
    )


def classify(error: GraphQLError, debug: bool) -> GraphQLError:
    """The error with ``extensions.code`` set; unexpected errors are masked unless debugging.
    Logging them is ``log_errors``'s work."""
    if error.extensions and "code" in error.extensions:
        return error
    original = error.original_error
    if isinstance(original, GqlMediaError):
        return _with_code(error, original.code, original.message)
    if isinstance(original, InvalidOperationTypeError):
        # e.g. a query over the legacy graphql-ws protocol, which carries subscriptions only
        kind = original.operation_type.value
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
        # Parse, validation and variable coercion errors: the request is wrong, not the server.
        code = next(
            (c for pattern, c in _MESSAGE_CODES if pattern.match(error.message)),
            ErrorCode.GRAPHQL_VALIDATION_FAILED,
        )
        return _with_code(error, code, error.message)
    message = f"{type(original).__name__}: {original}" if debug else "Internal server error."
    return _with_code(error, ErrorCode.INTERNAL_ERROR, message)


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
    """Raise for a parsed subscription that came over HTTP, which would otherwise run as a
    plain field and fail as an internal error; the view answers 400 BAD_REQUEST."""
    if context.graphql_document is None or isinstance(context.context.request, WebSocket):
        return
    try:
        operation_type = context.operation_type
    except RuntimeError:
        return  # no such operation: strawberry reports it
    if operation_type is OperationType.SUBSCRIPTION:
        raise InvalidOperationTypeError(operation_type)
