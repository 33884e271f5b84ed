"""What the service tells of itself: its providers and the load of its queue."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gql_media.services import queue_info


@strawberry.type(description="A model a provider offers, with the limits checked up front.")
class ProviderModel:
    name: str
    description: str
    max_outputs: int = strawberry.field(description="Most images in one request.")
    sizes: list[str] = strawberry.field(
        description="Sizes (WxH) the model accepts; empty when any size within the limits is."
    )


@strawberry.type(description="An image provider this service can run.")
class Provider:
    name: str
    configured: bool = strawberry.field(
        description="False until its settings (token, base URL) are given; jobs are refused."
    )
    default_model: str = strawberry.field(description="Used when a request names no model.")
    models: list[ProviderModel] = strawberry.field(
        description="Well-known models and their limits; remote providers accept others too."
    )
    is_default: bool = strawberry.field(description="Used when a request names no provider.")


@strawberry.type(description="The jobs of one priority that wait and run.")
class QueueLoad:
    priority: int
    queued: int
    running: int
    oldest_queued_at: datetime | None = strawberry.field(
        description="Since when the longest waiting due job has waited; null when none waits."
    )


@strawberry.type(description="The load of the queue: every job for an admin, yours otherwise.")
class Queue:
    queued: int
    running: int
    oldest_wait_seconds: float | None = strawberry.field(
        description="How long the longest waiting due job has waited; null when none waits."
    )
    starts_per_second: float | None = strawberry.field(
        description="Jobs started per second over the last minute, over every worker."
    )
    priorities: list[QueueLoad] = strawberry.field(description="Highest priority first.")


def queue_from_summary(summary: queue_info.QueueSummary) -> Queue:
    return Queue(
        queued=summary.queued,
        running=summary.running,
        oldest_wait_seconds=summary.oldest_wait_seconds,
        starts_per_second=summary.starts_per_second,
        priorities=[
            QueueLoad(
                priority=load.priority,
                queued=load.queued,
                running=load.running,
                oldest_queued_at=load.oldest_queued_at,
            )
            for load in summary.priorities
        ],
    )
