"""Log lines as text (the default) or as one JSON object per line, with the job they are about.

While a worker runs a job, ``job_context`` marks the job in a context variable that tasks
started inside inherit, so every line logged on its behalf (by the runner, a provider or a
library) carries its ``job_id``. A line logged elsewhere that names a job in its message
(``"job job_5f0c… failed"``, arq's own lines) carries that job's id.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_current_job: ContextVar[str | None] = ContextVar("gql_media_job_id", default=None)
_JOB_ID = re.compile(r"\bjob_[0-9a-f]{32}\b")


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside the block, and in tasks started inside it, are about ``job_id``."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


class JobIdFilter(logging.Filter):
    """Gives every record a ``job_id`` attribute: the job being run where it was logged, or
    None. Put it on handlers (a logger's filters skip records of its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _current_job.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and job_id and exc when
    there are any (a traceback stays inside its string, so a record is one line)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job_id = getattr(record, "job_id", None) or _current_job.get() or _named_job(message)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _named_job(message: str) -> str | None:
    match = _JOB_ID.search(message)
    return match.group(0) if match else None


def configure_handler(handler: logging.Handler, log_format: str) -> None:
    """Make ``handler`` add job ids, and write JSON when ``log_format`` is ``json``."""
    if not any(isinstance(f, JobIdFilter) for f in handler.filters):
        handler.addFilter(JobIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())


def configure(log_format: str) -> None:
    """Apply ``log_format`` to every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        configure_handler(handler, log_format)
