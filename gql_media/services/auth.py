"""API keys, who is asking, and signed media URLs.

A key is ``gqlm_`` and 43 random URL-safe characters (256 bits), shown once when created;
only its SHA-256 is stored (a key is random, so a fast hash is enough, and lookups stay a
single indexed read). Verified keys are cached in-process for ``api_key_cache_seconds``,
which bounds how long a revoked key keeps working, and how long a change of a key's limits
(``update_key``) takes to reach new requests.

A key's limits: ``max_priority``, the highest priority its jobs may ask for (0 to 10; None:
no limit; admin keys have none), and ``max_running``, how many of its jobs may run at once
(1 or more; None: no cap), which the scheduler reads from the row.

With auth required, media URLs carry an expiry and an HMAC of the storage key
(``?exp=…&sig=…``) so browsers can load them in ``<img>`` tags without a header; the expiry
is rounded up to a window so a URL stays the same (and cacheable) for a while. Watch tokens
(``services.watch_tokens``) are signed with a key derived from the same secret, and checked
here too: a token stands for its minting key narrowed to one job, while that key is live.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError

from gql_media.db.models import ApiKeyRow, utcnow
from gql_media.domain import MAX_PRIORITY, OPEN, Principal, decimal
from gql_media.errors import ErrorCode, UserError
from gql_media.services import watch_tokens
from gql_media.services.deps import Deps
from gql_media.settings import Settings

log = logging.getLogger(__name__)
KEY_PREFIX = "gqlm_"
URL_WINDOWS = 8  # a signed URL changes at most this often within its lifetime


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: uuid.UUID
    name: str
    prefix: str
    admin: bool
    created_at: str
    revoked: bool
    max_priority: int | None = None
    max_running: int | None = None


class Keep(Enum):
    """``update_key``'s value for a limit it leaves as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_limits(max_priority: int | None | Keep, max_running: int | None | Keep) -> None:
    """UserError INVALID_ARGUMENT for a key limit out of its range."""
    if isinstance(max_priority, int) and not 0 <= max_priority <= MAX_PRIORITY:
        raise UserError(
            ErrorCode.INVALID_ARGUMENT,
            f"max priority must be 0 to {MAX_PRIORITY}, or none",
            "max_priority",
        )
    if isinstance(max_running, int) and not 1 <= max_running <= 2**31 - 1:
        raise UserError(
            ErrorCode.INVALID_ARGUMENT, "max running must be 1 or more, or none", "max_running"
        )


async def create_key(
    deps: Deps,
    name: str,
    admin: bool = False,
    *,
    max_priority: int | None = None,
    max_running: int | None = None,
) -> tuple[KeyInfo, str]:
    """A new key: its description and the key itself, which is not stored anywhere."""
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise UserError(ErrorCode.INVALID_ARGUMENT, "name must be 1 to 128 characters", "name")
    check_limits(max_priority, max_running)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        id=uuid.uuid4(),
        name=name,
        key_hash=hash_key(key),
        prefix=key[:12],
        admin=admin,
        created_at=utcnow(),
        max_priority=max_priority,
        max_running=max_running,
    )
    try:
        async with deps.sessions.begin() as session:
            session.add(row)
    except IntegrityError as exc:
        raise UserError(ErrorCode.INVALID_ARGUMENT, f"a key named {name!r} exists", "name") from exc
    return _info(row), key


async def list_keys(deps: Deps) -> list[KeyInfo]:
    async with deps.sessions() as session:
        rows = (await session.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).scalars()
        return [_info(row) for row in rows]


def _named(name_or_id: str) -> ColumnElement[bool]:
    condition = ApiKeyRow.name == name_or_id
    try:
        condition = condition | (ApiKeyRow.id == uuid.UUID(name_or_id))
    except ValueError:
        pass
    return condition


async def update_key(
    deps: Deps,
    name_or_id: str,
    *,
    max_priority: int | None | Keep = KEEP,
    max_running: int | None | Keep = KEEP,
) -> KeyInfo | None:
    """Change the limits of the live key with this name (or id); None when there is no such
    key. Api processes see the change once their cached copy of the key expires
    (``api_key_cache_seconds``)."""
    check_limits(max_priority, max_running)
    changes: dict[str, int | None] = {}
    if not isinstance(max_priority, Keep):
        changes["max_priority"] = max_priority
    if not isinstance(max_running, Keep):
        changes["max_running"] = max_running
    if not changes:
        raise UserError(ErrorCode.INVALID_ARGUMENT, "nothing to change")
    async with deps.sessions.begin() as session:
        row = await session.scalar(
            update(ApiKeyRow)
            .where(_named(name_or_id), ApiKeyRow.revoked_at.is_(None))
            .values(**changes)
            .returning(ApiKeyRow)
        )
    if row is None:
        return None
    if not isinstance(max_running, Keep):  # the scheduler holds to it from now on
        await deps.queue.set_cap(row.id.hex, max_running or 0)
    return _info(row)


async def revoke_key(deps: Deps, name_or_id: str) -> bool:
    """Revoke the key with this name (or id); False when there is no such live key."""
    async with deps.sessions.begin() as session:
        result = await session.execute(
            update(ApiKeyRow)
            .where(_named(name_or_id), ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(ApiKeyRow.id)
        )
        return result.first() is not None


def _info(row: ApiKeyRow) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.name,
        row.prefix,
        row.admin,
        row.created_at.isoformat(),
        bool(row.revoked_at),
        row.max_priority,
        row.max_running,
    )


def _principal(row: ApiKeyRow) -> Principal:
    return Principal(
        row.id, row.admin, row.name, max_priority=row.max_priority, max_running=row.max_running
    )


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header value."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    """Turns presented keys into principals for one api process, with a short cache."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        # live keys by id, for the watch tokens they minted: the key's principal and hash
        self._by_id: dict[uuid.UUID, tuple[tuple[Principal, str] | None, float]] = {}
        secret = deps.settings.secret_key
        if secret is not None:
            self._secret = secret.get_secret_value().encode()
        else:
            self._secret = secrets.token_bytes(32)
            if deps.settings.auth == "required":
                log.warning(
                    "GQL_MEDIA_SECRET_KEY is not set: media URLs and watch tokens are signed "
                    "with a key of this process only, so another api process (or this one "
                    "after a restart) will not accept them"
                )
        self.watch_key = watch_tokens.signing_key(self._secret)

    @property
    def required(self) -> bool:
        return self._settings.auth == "required"

    async def principal(self, key: str | None) -> Principal | None:
        """Who presents ``key`` (an API key or a watch token): the open principal when auth
        is off (the only place it is handed out), None for a missing, bad or revoked key or
        a token of a revoked key; CredentialRefused for a malformed, forged or expired
        token."""
        found = await self.identify(key)
        return found[0] if found is not None else None

    async def identify(self, key: str | None) -> tuple[Principal, str | None] | None:
        """``principal``, and the hash of the API key behind it (a token's minting key),
        by which open sockets are checked again; None with auth off."""
        if not self.required:
            return OPEN, None
        if not key:
            return None
        if watch_tokens.is_token(key):
            claims = watch_tokens.decode(self.watch_key, key)
            minter = await self._key_by_id(claims.key_id) if claims.key_id else None
            if minter is None:
                return None
            return watch_tokens.narrowed(claims, minter[0]), minter[1]
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return (cached[0], digest) if cached[0] is not None else None
        async with self._deps.sessions() as session:
            row = await session.scalar(
                select(ApiKeyRow).where(
                    ApiKeyRow.key_hash == digest, ApiKeyRow.revoked_at.is_(None)
                )
            )
        found = _principal(row) if row is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (found, now + self._settings.api_key_cache_seconds)
        return (found, digest) if found is not None else None

    async def _key_by_id(self, key_id: uuid.UUID) -> tuple[Principal, str] | None:
        """The live key ``key_id`` (its principal and hash), cached like keys by hash."""
        now = time.monotonic()
        cached = self._by_id.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._deps.sessions() as session:
            row = await session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            )
        found = (_principal(row), row.key_hash) if row is not None else None
        if len(self._by_id) > 10_000:
            self._by_id.clear()
        self._by_id[key_id] = (found, now + self._settings.api_key_cache_seconds)
        return found

    async def live_digests(self, digests: Collection[str]) -> set[str]:
        """Which of these key hashes belong to live keys, read now in one query per
        thousand; the answers refresh the cache."""
        now = time.monotonic()
        live: dict[str, Principal] = {}
        wanted = list(digests)
        async with self._deps.sessions() as session:
            for start in range(0, len(wanted), 1000):
                rows = await session.scalars(
                    select(ApiKeyRow).where(
                        ApiKeyRow.key_hash.in_(wanted[start : start + 1000]),
                        ApiKeyRow.revoked_at.is_(None),
                    )
                )
                for row in rows:
                    live[row.key_hash] = _principal(row)
        expires = now + self._settings.api_key_cache_seconds
        for digest in wanted:
            if digest in self._cache:
                self._cache[digest] = (live.get(digest), expires)
        checked = set(wanted)
        for key_id, (minter, _) in list(self._by_id.items()):
            if minter is not None and minter[1] in checked and minter[1] not in live:
                self._by_id[key_id] = (None, expires)  # revoked: its tokens end too
        return set(live)

    # signed media URLs

    def sign_media(self, key: str, now: float | None = None) -> str:
        """The query string that lets anyone holding the URL download ``key`` for a while."""
        return signed_query(self._secret, self._settings.media_url_ttl, key, now)

    def media_allowed(self, key: str, expires: str | None, signature: str | None) -> bool:
        if not self.required:
            return True
        expiry = decimal(expires)
        if expiry is None or not signature or expiry < time.time():
            return False
        return hmac.compare_digest(_signature(self._secret, key, expiry), signature)


def signed_query(secret: bytes, ttl: float, key: str, now: float | None = None) -> str:
    """``exp=…&sig=…`` for ``key``; the expiry is rounded up to a window of the lifetime so
    the URL stays the same for a while."""
    window = ttl / URL_WINDOWS
    expires = int(math.ceil(((now or time.time()) + ttl) / window) * window)
    return f"exp={expires}&sig={_signature(secret, key, expires)}"


def _signature(secret: bytes, key: str, expires: int) -> str:
    mac = hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def media_url_for(settings: Settings, key: str) -> str:
    """A media URL made outside a request (webhooks): on ``public_url`` when set, signed
    when auth is required and a shared secret key is configured."""
    url = f"{(settings.public_url or '').rstrip('/')}/media/{key}"
    if settings.auth == "required" and settings.secret_key is not None:
        secret = settings.secret_key.get_secret_value().encode()
        return f"{url}?{signed_query(secret, settings.media_url_ttl, key)}"
    return url
