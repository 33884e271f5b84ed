"""Signed webhooks in the Standard Webhooks scheme, which Replicate uses.

A delivery carries three headers: ``webhook-id`` (unique per message, the same on
redelivery), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (space-separated
``v1,<base64>`` entries). Each signature is the base64 HMAC-SHA256 of
``f"{id}.{timestamp}.{body}"`` keyed by the secret ``whsec_<base64 key>``.

``verify`` proves a delivery authentic and fresh; ``remember_webhook_id`` rejects a replay
of one already accepted within its lifetime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from redis.asyncio import Redis

from gql_media import keys

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
# a delivery older than the tolerance is refused anyway, so its id need not be kept longer
REPLAY_TTL = 2 * DEFAULT_TOLERANCE


class InvalidWebhook(ValueError):
    """A delivery that must be refused; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError("the webhook secret is not whsec_ followed by base64") from exc


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header value (one ``v1,<base64>`` entry) for a delivery."""
    content = f"{webhook_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Return if the delivery is authentic and its timestamp within ``tolerance`` seconds of
    ``now``; raise InvalidWebhook otherwise. ``body`` must be the raw bytes received."""
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = lowered.get(ID_HEADER)
    stamp = lowered.get(TIMESTAMP_HEADER)
    signatures = lowered.get(SIGNATURE_HEADER)
    if not webhook_id or not stamp or not signatures:
        raise InvalidWebhook("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidWebhook("webhook-timestamp is not an integer") from None
    if timestamp < now - tolerance:
        raise InvalidWebhook("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise InvalidWebhook("webhook-timestamp is in the future")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    for entry in signatures.split():
        if entry.startswith("v1,") and hmac.compare_digest(entry.encode(), expected):
            return
    raise InvalidWebhook("no webhook-signature matches")


async def remember_webhook_id(
    redis: Redis, namespace: str, webhook_id: str, ttl: float = REPLAY_TTL
) -> bool:
    """True the first time ``webhook_id`` is seen within ``ttl`` seconds, False for a replay."""
    created = await redis.set(
        keys.webhook_seen_key(namespace, webhook_id), b"1", nx=True, ex=int(max(ttl, 1))
    )
    return bool(created)
