"""The one error tree of gql_media, translated at the edges.

    GqlMediaError
    ├── UserError                  expected problem with a request → GraphQL ``userErrors``
    │   ├── NotFound               unknown (or malformed) id
    │   ├── InvalidState           the job is not in a state that allows the action
    │   └── Forbidden              a watch token asked for more than its one job
    ├── Unauthenticated            no principal was chosen by auth for this operation
    ├── CredentialRefused          a watch token that is malformed, forged or expired
    ├── ServiceUnavailable         a backing service (Redis, database) is down
    ├── StorageUnavailable         media storage cannot be written (full, read-only, refused)
    ├── JobCanceled                the job was canceled while a worker ran it
    └── ProviderError              a provider could not make the media
        ├── TransientProviderError timeouts, 429, 5xx, connection errors: retried
        └── PermanentProviderError bad input, provider 4xx: failed at once
            └── MediaError         unsupported, corrupt or oversized media

Every ``code`` is stable and documented in docs/errors.md (the common ones in the README).
"""

from __future__ import annotations

import errno
from enum import StrEnum


class ErrorCode(StrEnum):
    # request validation (userErrors)
    PROMPT_EMPTY = "PROMPT_EMPTY"
    PROMPT_TOO_LONG = "PROMPT_TOO_LONG"
    SIZE_OUT_OF_RANGE = "SIZE_OUT_OF_RANGE"
    NUM_OUTPUTS_OUT_OF_RANGE = "NUM_OUTPUTS_OUT_OF_RANGE"
    SEED_OUT_OF_RANGE = "SEED_OUT_OF_RANGE"
    UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_ID = "INVALID_ID"
    NOT_FOUND = "NOT_FOUND"
    INVALID_STATE = "INVALID_STATE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    WEBHOOKS_NOT_CONFIGURED = "WEBHOOKS_NOT_CONFIGURED"
    TOO_MANY_ACTIVE_JOBS = "TOO_MANY_ACTIVE_JOBS"
    PRIORITY_NOT_ALLOWED = "PRIORITY_NOT_ALLOWED"
    DEADLINE_IN_PAST = "DEADLINE_IN_PAST"
    SINCE_TOO_OLD = "SINCE_TOO_OLD"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    # request level (top-level GraphQL errors)
    BAD_REQUEST = "BAD_REQUEST"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    WATCH_TOKEN_INVALID = "WATCH_TOKEN_INVALID"
    WATCH_TOKEN_EXPIRED = "WATCH_TOKEN_EXPIRED"
    FORBIDDEN = "FORBIDDEN"
    FORBIDDEN_ORIGIN = "FORBIDDEN_ORIGIN"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
    PREFLIGHT_REQUIRED = "PREFLIGHT_REQUIRED"
    INVALID_CURSOR = "INVALID_CURSOR"
    TOO_MANY_NODES = "TOO_MANY_NODES"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"
    # connections (HTTP status, WebSocket close reason or operation error)
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    TOO_MANY_SOCKETS = "TOO_MANY_SOCKETS"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    SEND_BUFFER_FULL = "SEND_BUFFER_FULL"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # job errors (Job.error.code)
    PROVIDER_ERROR = "PROVIDER_ERROR"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    PROVIDER_CANCELED = "PROVIDER_CANCELED"
    PROVIDER_BAD_OUTPUT = "PROVIDER_BAD_OUTPUT"
    OUTBOUND_BLOCKED = "OUTBOUND_BLOCKED"
    JOB_TIMEOUT = "JOB_TIMEOUT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    WORKER_LOST = "WORKER_LOST"
    # media (userErrors on upload, or Job.error of processing jobs)
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    MEDIA_CORRUPT = "MEDIA_CORRUPT"
    MEDIA_TOO_LARGE = "MEDIA_TOO_LARGE"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    MEDIA_TOO_LONG = "MEDIA_TOO_LONG"
    RESOURCE_LIMIT = "RESOURCE_LIMIT"
    PROCESSING_FAILED = "PROCESSING_FAILED"


class GqlMediaError(Exception):
    """Base of every error raised on purpose by gql_media."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UserError(GqlMediaError):
    """A problem with the request that the client can fix; ``field`` names the input."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.field = field
        self.retry_after = retry_after

    def within(self, path: str) -> UserError:
        """The same problem, its field named under ``path`` (``inputs.3`` + ``width``)."""
        field = f"{path}.{self.field}" if self.field else path
        return UserError(self.code, self.message, field, retry_after=self.retry_after)


class NotFound(UserError):
    """The id names no job (or one the caller may not see)."""

    def __init__(self, message: str = "job not found", field: str | None = "id") -> None:
        super().__init__(ErrorCode.NOT_FOUND, message, field)


class InvalidState(UserError):
    """The job's status does not allow the requested action."""

    def __init__(self, message: str, field: str | None = "id") -> None:
        super().__init__(ErrorCode.INVALID_STATE, message, field)


class Forbidden(UserError):
    """A principal narrowed to one job (a watch token) asked for something else: a list,
    another kind of mutation, or an action its token was not minted for."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(ErrorCode.FORBIDDEN, message, field)


class CredentialRefused(GqlMediaError):
    """A presented watch token that cannot be used: malformed or forged
    (WATCH_TOKEN_INVALID) or past its expiry (WATCH_TOKEN_EXPIRED)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)


class Unauthenticated(GqlMediaError):
    """An operation reached a resolver without a principal chosen by auth; nothing runs."""

    def __init__(self) -> None:
        super().__init__(
            "send an API key: Authorization: Bearer <key>", code=ErrorCode.UNAUTHENTICATED
        )


class ServiceUnavailable(GqlMediaError):
    """A backing service is down; the request may succeed later."""

    code = ErrorCode.SERVICE_UNAVAILABLE


# what a file system answers when it cannot take a write: full, over quota, read-only, a
# file too large, or not permitted
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}
)


class StorageUnavailable(GqlMediaError):
    """Media storage cannot be written now (a full disk, a read-only or refused one, an
    unreachable bucket); the request or job may succeed once an operator fixes it."""

    code = ErrorCode.STORAGE_UNAVAILABLE

    @classmethod
    def from_os_error(cls, exc: BaseException) -> StorageUnavailable | None:
        """The storage error ``exc`` stands for, or None when it is no such OSError."""
        if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
            return None
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "error")
        return cls(f"media storage cannot be written: {reason}")


class JobCanceled(GqlMediaError):
    """Raised inside a running job once its row says CANCELED; the worker stops quietly."""


class ProviderError(GqlMediaError):
    """A provider failed to produce media."""

    code = ErrorCode.PROVIDER_ERROR
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """Worth another attempt: timeouts, rate limits, 5xx and connection errors."""

    code = ErrorCode.PROVIDER_UNAVAILABLE
    retryable = True


class PermanentProviderError(ProviderError):
    """Another attempt would fail the same way: bad input, provider 4xx."""


class MediaError(PermanentProviderError):
    """A media file is unsupported, corrupt, lies about its type, or exceeds a limit.

    Raised by the media adapters; at upload it becomes a userError, inside a processing job
    a FAILED job with this code.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)


class InvalidInput(GqlMediaError):
    """One or more input fields are wrong; carries every problem found, not just the first."""

    def __init__(self, errors: list[UserError]) -> None:
        super().__init__("; ".join(e.message for e in errors), code=errors[0].code)
        self.errors = errors
