"""Error-free subscription events skip strawberry's per-result extension round (the
``strawberry_results`` patch).

Why: strawberry hands every result of an operation, each event of a subscription
included, to ``Schema._handle_execution_result``, which asks every extension for its
results and wraps the result anew. Ours add none; with thousands of subscribers the asking
costs more than the rest of the event. Here an error-free subscription event becomes its
``ExecutionResult`` at once; anything else goes strawberry's way. Off, strawberry's way
serves every event (the same messages, more work).

Internals relied on (checked by ``tests/test_patches.py``): ``strawberry.Schema``'s
``_handle_execution_result(context, result, extensions_runner, *,
skip_process_errors=False)``, called for every result of ``execute``, ``subscribe`` and
``stream``; ``ExecutionContext.extensions_results``, ``operation_type`` and ``result``.
"""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType


class LightEventResults(strawberry.Schema):
    """Put before the schema class in a subclass's bases."""

    async def _handle_execution_result(
        self,
        context: ExecutionContext,
        result: Any,
        extensions_runner: Any,
        *,
        skip_process_errors: bool = False,
    ) -> Any:
        if (
            type(result) is GraphQLExecutionResult
            and not result.errors
            and not context.extensions_results
            and context.operation_type is OperationType.SUBSCRIPTION
        ):
            plain = ExecutionResult(data=result.data, errors=None)
            context.result = plain
            return plain
        return await super()._handle_execution_result(
            context, result, extensions_runner, skip_process_errors=skip_process_errors
        )
