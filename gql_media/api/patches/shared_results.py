"""Subscription events rendered once for every subscriber who asked the same (the
``shared_results`` patch).

Why: graphql-core runs each subscriber's selection set on each event: with many dashboards
following the same jobs, the api spends most of its time producing identical results. Here
a subscription event's result is cached by (operation, variables, event): subscribers with
the same document and variables share it (the events are the same objects, see
``api.fanout.SharedJobs``). Only what the document asks about the event is shared; what an
event may be seen by is decided before it is yielded (owners, filters), so sharing leaks
nothing. ``render_payload`` gives the encoded ``next`` payload to ``direct_events``.

``QuietExecution`` leaves "Did you mean …?" out of variable errors for a server whose
introspection is off. Off, strawberry's own executor runs every event for every subscriber,
and those hints are cut from the messages by ``api.errors`` instead.

Internals relied on (checked by ``tests/test_patches.py``): strawberry's executor class
``strawberry.schema.schema.StrawberryGraphQLCoreExecutionContext`` (subclassed: strawberry
passes it extra arguments) and its ``build_resolve_info``; graphql-core's
``ExecutionContext.execute_operation(serially)``, ``build_per_event_executor(event)``,
``build(..., hide_suggestions=)``, ``is_awaitable``, and the attributes ``operation``,
``root_value`` and ``variable_values.coerced``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, cast

import orjson
from graphql import OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gql_media.api.fanout import keep
from gql_media.api.patches.direct_events import DIRECT_TARGET
from gql_media.api.types import Job

RESULTS_KEPT = 4096


class SharedEventExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, sharing the results of subscription events."""

    # (id of the operation node, variables, id of the event) → (event, operation, result);
    # the entry holds the event and the operation so their ids are not reused meanwhile
    _results: OrderedDict[tuple[int, str, int], tuple[Any, Any, Any]] = OrderedDict()
    # the same keys → (event, operation, the result's ``next`` payload as JSON)
    _payloads: OrderedDict[tuple[int, str, int], tuple[Any, Any, bytes]] = OrderedDict()
    # the subscription's variables as text, made once and copied into each event's executor
    _variables: str | None = None

    def build_resolve_info(self, *args: Any, **kwargs: Any) -> Any:
        # the subscription's field is resolved first, by the executor whose copies run its
        # events: the operation's direct target gets it
        target = DIRECT_TARGET.get()
        if target is not None and target.executor is None:
            target.executor = self
        return super().build_resolve_info(*args, **kwargs)

    def _key(self, event: Any) -> tuple[int, str, int] | None:
        variables = self._variables
        if variables is None:
            try:
                # as text: orjson's bytes keep the 4 KB buffer they were written in, which
                # the cache would hold for each of its entries
                variables = orjson.dumps(
                    self.variable_values.coerced, option=orjson.OPT_SORT_KEYS
                ).decode()
            except TypeError:
                return None
            self._variables = variables
        return (id(self.operation), variables, id(event))

    def render_payload(self, event: Job) -> bytes | None:
        """The ``next`` payload of ``event`` for this subscription, as JSON, rendered once
        for everyone asking the same; None when it has errors or is not ready at once."""
        key = self._key(event)
        if key is None:
            return None
        cached = self._payloads.get(key)
        if cached is not None:
            return cached[2]
        executor = cast(SharedEventExecution, self.build_per_event_executor(event))
        result = executor._shared_result(key, False)
        if isinstance(result, asyncio.Future) or result.errors:
            return None
        # exact-size bytes: orjson's own keep the 4 KB buffer they were written in
        payload = orjson.dumps({"data": result.data}).decode().encode()
        keep(self._payloads, key, (event, self.operation, payload), RESULTS_KEPT)
        return payload

    def execute_operation(self, serially: bool | None = None) -> Any:
        event = self.root_value
        if self.operation.operation is not OperationType.SUBSCRIPTION or not isinstance(event, Job):
            return super().execute_operation(serially)
        key = self._key(event)
        if key is None:
            return super().execute_operation(serially)
        result = self._shared_result(key, serially)
        if isinstance(result, asyncio.Future):
            return _shared(result)
        return result

    def _shared_result(self, key: tuple[int, str, int], serially: bool | None) -> Any:
        """This event's result for everyone with ``key``: made once, a Future while it is
        awaited."""
        cached = self._results.get(key)
        if cached is not None:
            return cached[2]
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            result = asyncio.ensure_future(result)
        keep(self._results, key, (self.root_value, self.operation, result), RESULTS_KEPT)
        return result


async def _shared(future: asyncio.Future[Any]) -> Any:
    # shield: one subscriber going away must not cancel the work the others wait on
    return await asyncio.shield(future)


class QuietExecution(SharedEventExecution):
    """The executor with "Did you mean …?" left out of variable errors, for a server whose
    introspection is off (the hints would reveal the schema's names)."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        kwargs["hide_suggestions"] = True
        return super().build(*args, **kwargs)
