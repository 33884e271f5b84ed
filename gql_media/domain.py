"""Pure domain: statuses, transitions, backoff, ids and the job snapshot.

Nothing here does I/O; every other layer may import it.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from gql_media.errors import Forbidden


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class JobKind(StrEnum):
    GENERATE_IMAGE = "GENERATE_IMAGE"
    PROCESS_IMAGE = "PROCESS_IMAGE"
    PROCESS_VIDEO = "PROCESS_VIDEO"


class OutputFormat(StrEnum):
    PNG = "PNG"
    JPEG = "JPEG"
    WEBP = "WEBP"

    @property
    def content_type(self) -> str:
        return f"image/{self.value.lower()}"

    @property
    def extension(self) -> str:
        return {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[self.value]


TRANSITIONS: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.QUEUED, JobStatus.CANCELED),
        (JobStatus.RUNNING, JobStatus.SUCCEEDED),
        (JobStatus.RUNNING, JobStatus.FAILED),
        (JobStatus.RUNNING, JobStatus.QUEUED),
        (JobStatus.RUNNING, JobStatus.CANCELED),
        (JobStatus.FAILED, JobStatus.QUEUED),
        (JobStatus.CANCELED, JobStatus.QUEUED),
    }
)


def can_transition(source: JobStatus, target: JobStatus) -> bool:
    """Whether the lifecycle of DESIGN.md allows ``source → target``."""
    return (source, target) in TRANSITIONS


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter for ``attempt`` (1-based), at least ``retry_after``."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


# Opaque ids: a prefix keeps ids of different types apart and malformed ids detectable.
JOB_ID_PREFIX = "job_"
ASSET_ID_PREFIX = "med_"
WEBHOOK_DELIVERY_ID_PREFIX = "whd_"


def encode_id(prefix: str, value: uuid.UUID) -> str:
    return f"{prefix}{value.hex}"


def decode_id(prefix: str, text: str) -> uuid.UUID | None:
    """The UUID behind an opaque id, or None when ``text`` is not one of ``prefix``'s ids."""
    if not text.startswith(prefix) or len(text) != len(prefix) + 32:
        return None
    try:
        return uuid.UUID(hex=text[len(prefix) :])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class AssetSnapshot:
    id: str
    key: str
    content_type: str
    width: int | None
    height: int | None
    byte_size: int
    sha256: str
    name: str | None = None  # the variant or operation that made it; None for uploads
    filename: str | None = None  # an upload's name as the client gave it (never trusted)
    info: dict[str, Any] | None = None  # e.g. duration and codecs of video and audio
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job as clients see it; it travels whole in every event so no reader hits the database."""

    id: str
    kind: JobKind
    status: JobStatus
    progress: float
    version: int
    prompt: str | None
    provider: str
    model: str | None
    parameters: dict[str, Any]
    attempts: int
    max_attempts: int
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: tuple[AssetSnapshot, ...] = field(default_factory=tuple)
    result: dict[str, Any] | None = None  # what a job found out, e.g. a video's metadata
    owner: str | None = None  # hex id of the API key that owns the job; None: auth is off
    webhook_url: str | None = None  # POSTed the job when it ends
    priority: int = 0  # see ``Scheduling``
    group: str | None = None
    deadline: datetime | None = None

    def to_json(self) -> bytes:
        """The snapshot as JSON (``from_dict`` reads it back): orjson writes the dataclasses,
        enums and datetimes itself, with no intermediate dict."""
        return orjson.dumps(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSnapshot:
        def when(name: str) -> datetime | None:
            value = data.get(name)
            return datetime.fromisoformat(value) if value else None

        error = data.get("error")
        created, updated = when("created_at"), when("updated_at")
        assert created is not None and updated is not None
        return cls(
            id=data["id"],
            kind=JobKind(data["kind"]),
            status=JobStatus(data["status"]),
            progress=float(data["progress"]),
            version=int(data["version"]),
            prompt=data.get("prompt"),
            provider=data["provider"],
            model=data.get("model"),
            parameters=dict(data.get("parameters") or {}),
            attempts=int(data["attempts"]),
            max_attempts=int(data["max_attempts"]),
            error=JobError(**error) if error else None,
            created_at=created,
            updated_at=updated,
            started_at=when("started_at"),
            finished_at=when("finished_at"),
            outputs=tuple(_asset_from_dict(a) for a in data.get("outputs") or ()),
            result=data.get("result"),
            owner=data.get("owner"),
            webhook_url=data.get("webhook_url"),
            priority=int(data.get("priority") or 0),
            group=data.get("group"),
            deadline=when("deadline"),
        )


def _asset_from_dict(data: dict[str, Any]) -> AssetSnapshot:
    created = data.get("created_at")
    return AssetSnapshot(
        **{**data, "created_at": datetime.fromisoformat(created) if created else None}
    )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    max_outputs: int
    sizes: tuple[str, ...] = ()  # "WxH" the model accepts; empty: any within the limits


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    configured: bool
    default_model: str
    models: tuple[ModelInfo, ...]


def decimal(text: str | None, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative integer when it is 1 to ``max_digits`` ASCII digits, else
    None (``str.isdigit`` also takes "²" and other digits ``int`` refuses)."""
    if not text or len(text) > max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


# Bounds of what a job asks of the scheduler (see ``Scheduling``)
MIN_PRIORITY = -10
MAX_PRIORITY = 10
MAX_GROUP_LENGTH = 128  # the length of the fair_group column


@dataclass(frozen=True, slots=True)
class Scheduling:
    """What a new job asks of the scheduler: ``priority`` (higher starts first),
    ``group`` (a fairness group inside the owner, e.g. the calling app's end user; None is
    the owner's default group) and ``deadline`` (after which the job is too late)."""

    priority: int = 0
    group: str | None = None
    deadline: datetime | None = None

    def digest_fields(self) -> dict[str, Any]:
        """The fields that differ from the defaults, for a request's digest: a request that
        sets none of them digests as it did before jobs had them. The deadline counts as
        the instant it names, whatever its zone (it must have one: validate first)."""
        fields: dict[str, Any] = {}
        if self.priority:
            fields["priority"] = self.priority
        if self.group is not None:
            fields["group"] = self.group
        if self.deadline is not None:
            fields["deadline"] = self.deadline.astimezone(UTC).isoformat()
        return fields


class JobAction(StrEnum):
    """What a principal narrowed to one job (a watch token) may do with it."""

    READ = "READ"  # the job, its outputs (signed media URLs) and jobUpdated
    CANCEL = "CANCEL"


@dataclass(frozen=True, slots=True)
class Scope:
    """The narrowing of a principal to one job: which job, whose it is, what may be done
    with it, and until when (Unix seconds)."""

    job_id: uuid.UUID
    owner: uuid.UUID | None
    actions: frozenset[JobAction]
    expires_at: float

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. Only two places make one: auth (a key's principal, a watch token's
    narrowed one, or ``OPEN`` when auth is off) and the service's own paths (``SYSTEM``: the
    worker and maintenance). Every service function takes it explicitly; none has a default.

    A principal with a ``scope`` (a watch token's) sees one job and nothing else: every
    check that does not name that job (``can_see``, ``require_full``) refuses it."""

    key_id: uuid.UUID | None
    admin: bool
    name: str = "anonymous"
    # the highest job priority the key may ask for; None: no limit (``MAX_PRIORITY``)
    max_priority: int | None = field(kw_only=True)
    # how many of the key's jobs may run at once; None: no cap
    max_running: int | None = field(default=None, kw_only=True)
    # set for a watch token's principal: the one job it may see, and what it may do
    scope: Scope | None = field(default=None, kw_only=True)

    @property
    def priority_limit(self) -> int:
        """The highest priority this principal's jobs may have (admins have no limit)."""
        if self.admin or self.max_priority is None:
            return MAX_PRIORITY
        return self.max_priority

    @property
    def owner(self) -> str | None:
        """The owner recorded on what this principal creates."""
        return self.key_id.hex if self.key_id is not None else None

    def can_see(self, owner: str | uuid.UUID | None) -> bool:
        """Whether what ``owner`` owns is visible; never for a scoped principal, which sees
        its one job only through ``sees_job``."""
        if self.scope is not None:
            return False
        if self.admin:
            return True
        if owner is None or self.key_id is None:
            return False
        return (owner if isinstance(owner, str) else owner.hex) == self.key_id.hex

    def sees_job(self, owner: str | uuid.UUID | None, job_id: uuid.UUID) -> bool:
        """Whether the job ``job_id`` of ``owner`` is visible: a scoped principal sees its
        own job (of the owner it was minted for) while it has not expired."""
        scope = self.scope
        if scope is None:
            return self.can_see(owner)
        if scope.job_id != job_id or scope.expired:
            return False
        shown = owner.hex if isinstance(owner, uuid.UUID) else owner
        return shown == (scope.owner.hex if scope.owner is not None else None)

    def may(self, action: JobAction) -> bool:
        """Whether this principal may do ``action`` to a job it sees."""
        return self.scope is None or action in self.scope.actions

    def require_full(self, what: str) -> None:
        """Forbidden for a scoped principal: ``what`` is more than following one job."""
        if self.scope is not None:
            raise Forbidden(f"a watch token may not {what}")


# Anyone who reaches the api when GQL_MEDIA_AUTH=off (who then sees everything); handed out
# by auth only, and never while auth is required.
OPEN = Principal(None, admin=True, name="open", max_priority=None)
# The service acting on its own behalf: the worker running jobs it was given, the catch-up
# re-reading finished jobs, maintenance. Never the principal of a request.
SYSTEM = Principal(None, admin=True, name="system", max_priority=None)


@dataclass(frozen=True, slots=True)
class GenerateImageRequest:
    """What a provider needs to make images; built from a validated job row."""

    prompt: str
    negative_prompt: str | None
    model: str | None
    width: int
    height: int
    num_outputs: int
    seed: int
    output_format: OutputFormat
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One provider output: encoded bytes plus what we know of them."""

    data: bytes
    content_type: str
    width: int | None
    height: int | None
