"""Token buckets in Redis, shared by every api process: one atomic script per request."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1]: the bucket; ARGV: refill per second, capacity, now (s), cost.
# Returns {1 or 0, seconds until the cost would be available, as a string}.
_TAKE = """
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local now, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds; 0 when allowed


class RateLimiter:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace
        self._script = redis.register_script(_TAKE)

    async def take(self, bucket: str, per_minute: float, burst: int, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``bucket`` (refilled at ``per_minute``, holding at most
        ``burst``)."""
        key = f"{self._namespace}:ratelimit:{bucket}"
        allowed, wait = await self._script(
            keys=[key], args=[per_minute / 60.0, burst, f"{time.time():.6f}", cost]
        )
        return Decision(bool(int(allowed)), float(wait))
