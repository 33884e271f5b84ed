"""Where Redis is: one server at a URL, or the master that Redis Sentinel names.

A part of ``settings.Settings`` (read from the same ``GQL_MEDIA_*`` variables).
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SENTINEL_PORT = 26379  # Redis Sentinel's own port, when an address names none

# what applies with sentinels only (with a URL, the URL carries the login and database)
_SENTINEL_ONLY = frozenset(
    {
        "redis_sentinel_master",
        "redis_sentinel_password",
        "redis_username",
        "redis_password",
        "redis_db",
    }
)


class RedisConnectionSettings(BaseSettings):
    """``redis_url``, or ``redis_sentinels`` and what goes with them; neither: the
    in-process stand-in of the embedded mode."""

    model_config = SettingsConfigDict(env_prefix="GQL_MEDIA_", extra="ignore")

    redis_url: str | None = None
    # Redis through Sentinel instead: the sentinels (host:port, comma-separated), the name
    # they know the master by, and the logins of the master and of the sentinels
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    redis_sentinel_password: SecretStr | None = None
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_db: int = Field(default=0, ge=0)

    @property
    def redis_configured(self) -> bool:
        """True when a Redis server is set (a URL or sentinels), not the stand-in."""
        return self.redis_url is not None or bool(self.redis_sentinels)

    @property
    def redis_sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs."""
        return [sentinel_address(item) for item in self.redis_sentinels]

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        for item in value if isinstance(value, list) else ():
            sentinel_address(item)  # its ValueError names the item
        return value

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> Self:
        if self.redis_url is not None and self.redis_sentinels:
            raise ValueError(
                "set GQL_MEDIA_REDIS_URL or GQL_MEDIA_REDIS_SENTINELS, not both: with "
                "sentinels, they say where the master is"
            )
        sentinel_only = sorted(self.model_fields_set & _SENTINEL_ONLY)
        if sentinel_only and not self.redis_sentinels:
            names = ", ".join(f"GQL_MEDIA_{name.upper()}" for name in sentinel_only)
            raise ValueError(
                f"{names}: used with GQL_MEDIA_REDIS_SENTINELS only "
                "(with GQL_MEDIA_REDIS_URL, the URL carries the login and database)"
            )
        return self


def sentinel_address(item: str) -> tuple[str, int]:
    """``host:port``, ``host`` (port 26379) or ``[IPv6 address]:port`` as (host, port)."""
    host, port = item, str(SENTINEL_PORT)
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest:
            port = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, _, port = item.partition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} is not a sentinel address: host:port (port 1-65535)")
    return host, int(port)
