"""Validation results kept per document, and validation without "Did you mean …?" hints
(the ``strawberry_validation`` patch).

Why: strawberry validates every operation's document again, though most requests send one
of a few documents; here each document's errors are kept beside its parse tree in the
``DocumentCache`` (one entry per rule set), so a known document is not walked again. The
validation also leaves out graphql-core's suggestions when introspection is off (they
reveal the schema's names). Off, strawberry validates every document itself with the same
rules (ours are added to ``validation_rules`` as parsing starts), and ``api.errors`` cuts
the hints from the messages.

Internals relied on (checked by ``tests/test_patches.py``): ``strawberry.Schema._schema``
(the graphql-core schema), strawberry's two rules of its own
(``strawberry.schema.validation_rules``: ``MaybeNullValidationRule``,
``OneOfInputValidationRule``), which its validation adds to ``validation_rules``; and that
strawberry skips its validation when an ``on_validate`` hook has set
``pre_execution_errors``.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, validate
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from gql_media.api.security import DocumentChecks


def validate_document(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
    hide_suggestions: bool,
) -> list[GraphQLError]:
    """graphql-core's validation with strawberry's two rules added (as strawberry's own
    validation does). ``hide_suggestions`` leaves out "Did you mean …?" hints."""
    return validate(
        schema,
        document,
        (*rules, MaybeNullValidationRule, OneOfInputValidationRule),
        hide_suggestions=hide_suggestions,
    )


class CachedValidation(DocumentChecks):
    """``DocumentChecks`` that validates each document once per rule set."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # validation follows a parse
        cached = self.cached
        rules = tuple(context.validation_rules)
        errors = cached.errors.get(rules) if cached is not None else None
        if errors is None:
            errors = validate_document(
                context.schema._schema, context.graphql_document, rules, self.hide_suggestions
            )
            if cached is not None:
                cached.errors[rules] = errors
        context.pre_execution_errors = errors
        yield
