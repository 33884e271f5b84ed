"""Every Redis key, channel and task name, in one place."""

from __future__ import annotations

RUN_JOB_TASK = "run_job"
DELIVER_WEBHOOK_TASK = "deliver_webhook"


def queue_name(namespace: str) -> str:
    """The arq queue (a sorted set) that workers poll."""
    return f"{namespace}:queue"


def events_channel(namespace: str) -> str:
    """The pub/sub channel carrying every job change, one JSON snapshot per message."""
    return f"{namespace}:events"


# between a job's id and its version in the arq id of one run of it
ARQ_VERSION_MARK = ":v"


def arq_job_id(job_id: str, version: int) -> str:
    """One arq job per enqueue: the version makes re-enqueues after a retry distinct."""
    return f"{job_id}{ARQ_VERSION_MARK}{version}"


def arq_job_run(arq_id: str) -> tuple[str, int] | None:
    """The job id and version of a job run's arq id (``arq_job_id``), or None for another
    task's id."""
    head, _, version = arq_id.rpartition(ARQ_VERSION_MARK)
    return (head, int(version)) if head and version.isdigit() else None


def arq_job_version(arq_id: str) -> int | None:
    """The version in a job run's arq id (``arq_job_id``), or None for another task's id."""
    run = arq_job_run(arq_id)
    return None if run is None else run[1]


def webhook_delivery_id(job_id: str, attempt: int) -> str:
    """The arq id of delivery ``attempt`` of a finished job's webhook."""
    return f"{job_id}:webhook:{attempt}"


def delivering_key(namespace: str, arq_id: str) -> str:
    """Set, with an expiry, while a worker makes the delivery ``arq_id``: once it expires
    with no attempt recorded, the worker died during it."""
    return f"{namespace}:delivering:{arq_id}"


def wake_channel(namespace: str) -> str:
    """Pub/sub channel that wakes idle workers as soon as a job is enqueued."""
    return f"{namespace}:wake"


def worker_wake_channel(namespace: str, worker_id: str) -> str:
    """Pub/sub channel on which one worker is given the entries started for it."""
    return f"{wake_channel(namespace)}:{worker_id}"


def idle_slots(namespace: str) -> str:
    """The workers' idle slots: a list holding a worker's id once per slot."""
    return f"{namespace}:idle"


def provider_nudge_channel(namespace: str) -> str:
    """Pub/sub channel telling workers a provider-side prediction changed (a webhook came)."""
    return f"{namespace}:provider-nudge"


def webhook_seen_key(namespace: str, webhook_id: str) -> str:
    """Marks a received webhook id as accepted, so a replay of it is dropped."""
    return f"{namespace}:webhook-seen:{webhook_id}"
