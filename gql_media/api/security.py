"""Who is asking, and from where: API keys on HTTP and WebSocket, allowed origins, and the
GraphQL validation rules that bound what one document may cost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    parse,
)
from starlette.types import Scope
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from gql_media.api.errors import refuse_subscription_over_http
from gql_media.errors import ErrorCode
from gql_media.settings import Settings

# list fields whose size a client chooses with `first` (and the default when it does not)
PAGED_FIELDS = {"jobs"}
LIST_FIELD_WEIGHT = 4  # assumed length of other lists (outputs, models, ...)


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def origin_allowed(scope: Scope, settings: Settings) -> bool:
    """A browser's cross-site WebSocket (or request) is refused unless its Origin is listed
    in ``cors_origins``; same-origin pages and non-browser clients (no Origin) pass."""
    origin = header(scope, b"origin")
    if not origin:
        return True
    allowed = settings.cors_origins
    if "*" in allowed or origin in allowed:
        return True
    host = header(scope, b"host")
    parts = urlsplit(origin)
    return bool(host) and parts.netloc == host


def connection_key(params: Any) -> str | None:
    """The API key in a connection_init payload: ``{"authorization": "Bearer KEY"}`` (any
    capitalisation), or ``{"apiKey": "KEY"}``."""
    if not isinstance(params, dict):
        return None
    for name, value in params.items():
        if not isinstance(value, str):
            continue
        if name.lower() == "authorization":
            scheme, _, key = value.strip().partition(" ")
            return key.strip() or None if scheme.lower() == "bearer" else None
        if name in ("apiKey", "api_key"):
            return value.strip() or None
    return None


def cost_rule(settings: Settings) -> type[ValidationRule]:
    """A validation rule refusing documents whose estimated cost passes ``max_query_cost``:
    every field costs 1, times the page size of the lists around it (``first``, or the
    default page size), other lists counted as ``LIST_FIELD_WEIGHT`` items."""
    limit = settings.max_query_cost
    default_page = settings.max_page_size

    class QueryCost(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            context: ValidationContext = self.context
            fragments = {
                definition.name.value: definition
                for definition in context.document.definitions
                if isinstance(definition, FragmentDefinitionNode)
            }
            cost = _cost(node.selection_set, fragments, default_page, set())
            if cost > limit:
                context.report_error(
                    GraphQLError(
                        f"the query costs about {cost}, more than the limit of {limit}; "
                        "ask for fewer items or fields",
                        node,
                        extensions={"code": ErrorCode.QUERY_TOO_COSTLY.value},
                    )
                )

    return QueryCost


def _cost(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    default_page: int,
    seen: set[str],
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            inner = _cost(selection.selection_set, fragments, default_page, seen)
            total += 1 + _multiplier(selection, default_page) * inner
        elif isinstance(selection, InlineFragmentNode):
            total += _cost(selection.selection_set, fragments, default_page, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen or name not in fragments:
                continue
            total += _cost(fragments[name].selection_set, fragments, default_page, seen | {name})
    return total


def _multiplier(field: FieldNode, default_page: int) -> int:
    if field.selection_set is None:
        return 1
    if field.name.value in PAGED_FIELDS:
        return max(1, _first(field.arguments or (), default_page))
    if field.name.value in ("edges", "node", "pageInfo", "error", "job"):
        return 1
    return LIST_FIELD_WEIGHT if field.name.value in ("outputs", "models") else 1


def _first(arguments: Iterable[Any], default: int) -> int:
    """A literal ``first``; a variable counts as the largest page, as it is not known yet."""
    for argument in arguments:
        if argument.name.value == "first" and isinstance(argument.value, IntValueNode):
            return int(argument.value.value)
    return default


class NoIntrospection(ValidationRule):
    """Refuses ``__schema`` and ``__type`` (``__typename`` stays allowed)."""

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            self.context.report_error(
                GraphQLError(
                    "introspection is disabled on this server",
                    node,
                    extensions={"code": ErrorCode.INTROSPECTION_DISABLED.value},
                )
            )


@lru_cache(maxsize=1024)
def _parse(query: str, options: tuple[tuple[str, Any], ...]) -> DocumentNode:
    return parse(query, **dict(options))


# strawberry's own validation (its rules added to the given ones), once per document and
# rule set: the same rule classes on every request let it hit
_validate = lru_cache(maxsize=1024)(validate_document)


class DocumentChecks(SchemaExtension):
    """What every operation's document goes through, as one extension: strawberry runs
    each extension's hooks on every request and on every result a subscription streams,
    so one costs less than four.

    - The parser's token cap and our validation rules are set as parsing starts (every
      operation parses first), not in hooks around the whole operation, which stay
      suspended as long as a subscription lives (about 1 KB per subscribed socket).
    - Each distinct document is parsed once and validated once per rule set (LRUs of
      1024); a document that does not parse is left to strawberry, which reports the
      syntax error as usual.
    - Subscriptions over HTTP are refused (``refuse_subscription_over_http``).
    """

    def __init__(self, max_tokens: int, rules: tuple[type[ASTValidationRule], ...]) -> None:
        self.max_tokens = max_tokens
        self.rules = rules

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.rules
        if context.query and context.graphql_document is None:
            options = tuple(sorted(context.parse_options.items()))
            with contextlib.suppress(GraphQLError):
                context.graphql_document = _parse(context.query, options)
        yield
        refuse_subscription_over_http(context)

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # validation follows a parse
        context.pre_execution_errors = _validate(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        yield
