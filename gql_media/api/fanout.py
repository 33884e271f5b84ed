"""Subscription events rendered once for all subscribers who asked the same thing.

Without this, graphql-core runs each subscriber's selection set on each event: with many
dashboards following the same jobs, the api spends most of its time producing identical
results. Here a subscription event's result is cached by (operation, variables, event):
subscribers with the same document and variables share it. Subscription resolvers yield
the event objects from ``SharedJobs``, so equal events are the same object.

Only what the document asks about the event is shared; what an event may be seen by is
decided before it is yielded (owners, filters), so sharing leaks nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from graphql import OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gql_media.api.types import Job
from gql_media.domain import JobSnapshot

RESULTS_KEPT = 4096
JOBS_KEPT = 4096


class SharedJobs:
    """One ``Job`` per (job, version, media base URL) for the subscriptions of a process."""

    def __init__(self, limit: int = JOBS_KEPT) -> None:
        self._jobs: OrderedDict[tuple[str, int, str], Job] = OrderedDict()
        self._limit = limit

    def get(self, snapshot: JobSnapshot, base_url: str, make: Callable[[], Job]) -> Job:
        key = (snapshot.id, snapshot.version, base_url)
        job = self._jobs.get(key)
        if job is None:
            job = self._jobs[key] = make()
            if len(self._jobs) > self._limit:
                self._jobs.popitem(last=False)
        return job


class SharedEventExecution(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, sharing the results of subscription events."""

    # (id of the operation node, variables, id of the event) → (event, operation, result);
    # the entry holds the event and the operation so their ids are not reused meanwhile
    _results: OrderedDict[tuple[int, str, int], tuple[Any, Any, Any]] = OrderedDict()

    def execute_operation(self, serially: bool | None = None) -> Any:
        event = self.root_value
        if self.operation.operation is not OperationType.SUBSCRIPTION or not isinstance(event, Job):
            return super().execute_operation(serially)
        try:
            # as text: orjson's bytes keep the 4 KB buffer they were written in, which the
            # cache would hold for each of its entries
            variables = orjson.dumps(
                self.variable_values.coerced, option=orjson.OPT_SORT_KEYS
            ).decode()
        except TypeError:
            return super().execute_operation(serially)
        key = (id(self.operation), variables, id(event))
        cached = self._results.get(key)
        if cached is not None:
            result = cached[2]
        else:
            result = super().execute_operation(serially)
            if self.is_awaitable(result):
                result = asyncio.ensure_future(result)
            self._results[key] = (event, self.operation, result)
            if len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
        if isinstance(result, asyncio.Future):
            return _shared(result)
        return result


async def _shared(future: asyncio.Future[Any]) -> Any:
    # shield: one subscriber going away must not cancel the work the others wait on
    return await asyncio.shield(future)
