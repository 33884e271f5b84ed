"""Who is asking, and from where: API keys on HTTP and WebSocket, allowed origins, and the
GraphQL validation rules that bound what one document may cost."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast
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
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    parse,
)
from starlette.types import Scope
from strawberry.extensions import SchemaExtension

from gql_media.api.errors import refuse_subscription_over_http
from gql_media.errors import ErrorCode, Unauthenticated
from gql_media.settings import Settings

# list fields whose size a client chooses with `first` (and the default when it does not);
# generateImages's `jobs`, which has no `first`, holds up to a batch
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


@dataclass(frozen=True, slots=True)
class Measure:
    """What a selection set asks for once expanded: its depth (nested fields with
    selections; introspection fields count 0, as in strawberry's depth limiter), its
    aliases, and its estimated cost (see ``bounds_rule``)."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0


NOTHING = Measure()


class Measurer:
    """Measures selection sets, each fragment once: a fragment's measure does not depend on
    where it is spread, so a document costs time linear in its size however often its
    fragments spread one another (a chain of fragments that each spread the next twice is
    2^n paths walked naively). A spread that closes a cycle, or of an unknown fragment,
    measures nothing (other rules report those)."""

    def __init__(self, document: DocumentNode, default_page: int, max_nodes: int = 1) -> None:
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.default_page = default_page
        self.max_nodes = max_nodes
        self.measured: dict[str, Measure] = {}
        self.measuring: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None) -> Measure:
        if selection_set is None:
            return NOTHING
        depth = aliases = cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                inner = self.selections(selection.selection_set)
                if selection.selection_set is not None and not selection.name.value.startswith(
                    "__"
                ):
                    depth = max(depth, 1 + inner.depth)
                aliases += (selection.alias is not None) + inner.aliases
                cost += 1 + self.multiplier(selection) * inner.cost
                continue
            if isinstance(selection, InlineFragmentNode):
                inner = self.selections(selection.selection_set)
            else:
                inner = self.fragment(cast(FragmentSpreadNode, selection).name.value)
            depth = max(depth, inner.depth)
            aliases += inner.aliases
            cost += inner.cost
        return Measure(depth, aliases, cost)

    def multiplier(self, field: FieldNode) -> int:
        """How many times a field's selection is resolved: a page, the ids of ``nodes``
        (a variable counts as ``max_nodes``), an assumed length of another list, or 1."""
        if field.name.value == "nodes" and field.selection_set is not None:
            return max(1, _count(field.arguments or (), "ids", self.max_nodes))
        return _multiplier(field, self.default_page)

    def fragment(self, name: str) -> Measure:
        found = self.measured.get(name)
        if found is not None:
            return found
        definition = self.fragments.get(name)
        if definition is None or name in self.measuring:
            return NOTHING
        self.measuring.add(name)
        found = self.measured[name] = self.selections(definition.selection_set)
        self.measuring.discard(name)
        return found


def bounds_rule(settings: Settings) -> type[ValidationRule]:
    """A validation rule refusing operations deeper than ``max_query_depth``, with more
    aliases than ``max_aliases``, or whose estimated cost passes ``max_query_cost``: every
    field costs 1, times the page size of the lists around it (``first``, or else the larger
    of the default page size and ``max_batch``, the most jobs a generateImages payload
    lists; for ``nodes`` the ids, or else ``max_nodes``), other lists counted as
    ``LIST_FIELD_WEIGHT`` items. Fragments count where they
    are spread, and are measured once (``Measurer``)."""
    max_depth, max_aliases, max_cost = (
        settings.max_query_depth,
        settings.max_aliases,
        settings.max_query_cost,
    )
    default_page = max(settings.max_page_size, settings.max_batch)

    class DocumentBounds(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.measurer = Measurer(context.document, default_page, settings.max_nodes)

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            measure = self.measurer.selections(node.selection_set)
            name = node.name.value if node.name else "anonymous"
            if measure.depth > max_depth:
                self._refuse(
                    ErrorCode.QUERY_TOO_DEEP,
                    f"'{name}' exceeds maximum operation depth of {max_depth}",
                    node,
                )
            if measure.aliases > max_aliases:
                self._refuse(
                    ErrorCode.TOO_MANY_ALIASES,
                    f"{_shown(measure.aliases)} aliases found. Allowed: {max_aliases}",
                    node,
                )
            if measure.cost > max_cost:
                self._refuse(
                    ErrorCode.QUERY_TOO_COSTLY,
                    f"the query costs about {_shown(measure.cost)}, more than the limit of "
                    f"{max_cost}; ask for fewer items or fields",
                    node,
                )

        def _refuse(self, code: ErrorCode, message: str, node: OperationDefinitionNode) -> None:
            self.context.report_error(GraphQLError(message, node, extensions={"code": code.value}))

    return DocumentBounds


def _shown(count: int) -> str:
    """A count for a message: fragments spreading fragments reach numbers of any length."""
    return str(count) if count < 10**12 else "more than 10^12"


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
            digits = argument.value.value  # any length the parser took
            return int(digits) if len(digits) <= 12 else 10**12
    return default


def _count(arguments: Iterable[Any], name: str, default: int) -> int:
    """The length of a literal list argument; a variable counts as ``default``."""
    for argument in arguments:
        if argument.name.value == name and isinstance(argument.value, ListValueNode):
            return len(argument.value.values)
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


class CachedDocument:
    """A parsed document and its validation results, one per rule set."""

    __slots__ = ("document", "errors")

    def __init__(self, document: DocumentNode) -> None:
        self.document = document
        self.errors: dict[tuple[Any, ...], list[GraphQLError]] = {}


class DocumentCache:
    """Parsed and validated documents by their text, least recently used dropped first,
    bounded by the characters of the texts it holds: a document's parse tree grows with
    its text, and a text may be mostly comments and whitespace, which the token cap does
    not count. A text over a sixteenth of the budget is not kept at all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[tuple[str, tuple[Any, ...]], CachedDocument] = OrderedDict()

    def get(self, query: str, options: tuple[Any, ...]) -> CachedDocument | None:
        key = (query, options)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def add(self, query: str, options: tuple[Any, ...], document: DocumentNode) -> CachedDocument:
        entry = CachedDocument(document)
        if len(query) * 16 > self.budget:
            return entry
        key = (query, options)
        if key in self._entries:
            return self._entries[key]
        self._entries[key] = entry
        self.size += len(query)
        while self.size > self.budget:
            (old, _), _ = self._entries.popitem(last=False)
            self.size -= len(old)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


class DocumentChecks(SchemaExtension):
    """What every operation's document goes through, as one extension: strawberry runs
    each extension's hooks on every request and on every result a subscription streams,
    so one costs less than four.

    - The parser's token cap and our validation rules are set as parsing starts (every
      operation parses first), not in hooks around the whole operation, which stay
      suspended as long as a subscription lives (about 1 KB per subscribed socket).
    - Each distinct document is parsed once (a ``DocumentCache`` bounded in bytes, shared
      by the schema's operations; the ``strawberry_validation`` patch also keeps its
      validation results there); a document that does not parse is left to strawberry,
      which reports the syntax error (``api.errors`` gives it its code).
    - Subscriptions over HTTP are refused (``refuse_subscription_over_http``).
    - A document without a principal chosen by auth runs nothing (UNAUTHENTICATED).
    """

    def __init__(
        self,
        max_tokens: int,
        rules: tuple[type[ASTValidationRule], ...],
        hide_suggestions: bool,
        cache: DocumentCache,
    ) -> None:
        self.max_tokens = max_tokens
        self.rules = rules
        self.hide_suggestions = hide_suggestions
        self.cache = cache
        self.cached: CachedDocument | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if getattr(context.context, "caller", None) is None:
            # every transport sets the principal auth chose before a document runs; one
            # that arrives without it (a path that skipped auth) runs nothing
            raise Unauthenticated()
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.rules
        if context.query and context.graphql_document is None:
            options = tuple(sorted(context.parse_options.items()))
            cached = self.cache.get(context.query, options)
            if cached is None:
                with contextlib.suppress(GraphQLError):
                    document = parse(context.query, **context.parse_options)
                    cached = self.cache.add(context.query, options, document)
            if cached is not None:
                context.graphql_document = cached.document
                self.cached = cached
        yield
        refuse_subscription_over_http(context)
