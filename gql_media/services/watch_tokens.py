"""Watch tokens: short-lived credentials that let a browser follow one job.

A backend holding an API key mints one (``createWatchToken``) and hands it to a browser,
which presents it where a key goes (``Authorization: Bearer``, or the WebSocket's
``connection_init`` payload). Auth turns it into a principal narrowed to that job
(``domain.Scope``): the job by id, ``jobUpdated`` on it and the signed media URLs its
outputs carry, and ``cancelJob`` on it when minted with ``allow_cancel``; everything else
reads as not found or is FORBIDDEN.

The token is ``gqlw_`` and the URL-safe base64 (no padding) of a fixed-size payload and its
HMAC-SHA256::

    version (1 byte) | job id (16) | minting key id (16) | job owner (16) |
    expiry, Unix seconds (8) | actions (1 byte of bits) | HMAC of all before (32)

The HMAC is keyed by a key derived from the secret that signs media URLs
(``GQL_MEDIA_SECRET_KEY``; see ``Authenticator``), so a media URL's signature and a token's
can never stand for one another. Nothing is stored: the token is checked by its signature
and expiry, and its minting key must still be live, so revoking the key ends its tokens.
Every token has exactly ``TOKEN_LENGTH`` characters; anything else is refused before it is
decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from gql_media.domain import JOB_ID_PREFIX, JobAction, Principal, Scope, decode_id
from gql_media.errors import CredentialRefused, ErrorCode, NotFound, UserError
from gql_media.services.deps import Deps
from gql_media.services.jobs import get_job

TOKEN_PREFIX = "gqlw_"
VERSION = 1
_PAYLOAD = struct.Struct(">B16s16s16sQB")
_MAC_BYTES = 32
TOKEN_LENGTH = len(TOKEN_PREFIX) + (_PAYLOAD.size + _MAC_BYTES) * 4 // 3
_NO_ID = bytes(16)  # no key (auth off) or no owner
_BITS = {JobAction.READ: 1, JobAction.CANCEL: 2}
_DERIVATION = b"gql_media watch token v1"


@dataclass(frozen=True, slots=True)
class WatchToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Claims:
    """What a genuine, unexpired token says."""

    job_id: uuid.UUID
    key_id: uuid.UUID | None
    owner: uuid.UUID | None
    expires_at: int
    actions: frozenset[JobAction]


def signing_key(secret: bytes) -> bytes:
    """The key tokens are signed with, derived from the server's secret."""
    return hmac.new(secret, _DERIVATION, hashlib.sha256).digest()


def is_token(credential: str) -> bool:
    return credential.startswith(TOKEN_PREFIX)


def encode(key: bytes, claims: Claims) -> str:
    bits = sum(_BITS[action] for action in claims.actions)
    payload = _PAYLOAD.pack(
        VERSION,
        claims.job_id.bytes,
        claims.key_id.bytes if claims.key_id else _NO_ID,
        claims.owner.bytes if claims.owner else _NO_ID,
        claims.expires_at,
        bits,
    )
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(payload + mac).decode()


def decode(key: bytes, token: str, now: float | None = None) -> Claims:
    """The claims of a genuine token; CredentialRefused WATCH_TOKEN_INVALID for one that is
    malformed, of another length or forged, WATCH_TOKEN_EXPIRED for one past its expiry."""
    if len(token) != TOKEN_LENGTH or not is_token(token):
        raise _invalid(f"a watch token has exactly {TOKEN_LENGTH} characters")
    try:
        raw = base64.b64decode(token[len(TOKEN_PREFIX) :], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("this is not a watch token of this server") from None
    payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise _invalid("the watch token's signature does not match")
    version, job, key_id, owner, expires_at, bits = _PAYLOAD.unpack(payload)
    if version != VERSION or not bits & _BITS[JobAction.READ]:
        raise _invalid("this is not a watch token of this server")
    if expires_at <= (time.time() if now is None else now):
        raise CredentialRefused(ErrorCode.WATCH_TOKEN_EXPIRED, "the watch token has expired")
    return Claims(
        job_id=uuid.UUID(bytes=job),
        key_id=None if key_id == _NO_ID else uuid.UUID(bytes=key_id),
        owner=None if owner == _NO_ID else uuid.UUID(bytes=owner),
        expires_at=expires_at,
        actions=frozenset(action for action, bit in _BITS.items() if bits & bit),
    )


def _invalid(message: str) -> CredentialRefused:
    return CredentialRefused(ErrorCode.WATCH_TOKEN_INVALID, message)


def narrowed(claims: Claims, key: Principal) -> Principal:
    """The principal a token stands for: its minting key's, narrowed to the token's job."""
    return Principal(
        key.key_id,
        admin=False,
        name=f"{key.name} (watch token)",
        max_priority=0,
        max_running=key.max_running,
        scope=Scope(claims.job_id, claims.owner, claims.actions, float(claims.expires_at)),
    )


async def mint(
    deps: Deps,
    key: bytes,
    job_id: str,
    ttl_seconds: int | None,
    allow_cancel: bool,
    principal: Principal,
) -> WatchToken:
    """A token following ``job_id`` for ``ttl_seconds`` (``watch_token_ttl`` when None, at
    most ``watch_token_max_ttl``), signed with ``key``; NOT_FOUND for a job ``principal``
    cannot see. A watch token's own principal cannot mint (FORBIDDEN)."""
    principal.require_full("mint watch tokens")
    settings = deps.settings
    ttl = settings.watch_token_ttl if ttl_seconds is None else ttl_seconds
    if not 1 <= ttl <= settings.watch_token_max_ttl:
        raise UserError(
            ErrorCode.INVALID_ARGUMENT,
            f"ttlSeconds must be from 1 to {settings.watch_token_max_ttl}",
            "ttlSeconds",
        )
    parsed = decode_id(JOB_ID_PREFIX, job_id)
    snapshot = await get_job(deps, job_id, principal) if parsed is not None else None
    if snapshot is None or parsed is None:
        raise NotFound(field="jobId")
    expires_at = int(time.time()) + ttl
    actions = {JobAction.READ, JobAction.CANCEL} if allow_cancel else {JobAction.READ}
    claims = Claims(
        job_id=parsed,
        key_id=principal.key_id,
        owner=uuid.UUID(hex=snapshot.owner) if snapshot.owner else None,
        expires_at=expires_at,
        actions=frozenset(actions),
    )
    return WatchToken(encode(key, claims), datetime.fromtimestamp(expires_at, UTC))
