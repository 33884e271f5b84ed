"""Requests to addresses that come from outside the configuration (provider output URLs,
users' webhook URLs): only http(s), and no private, loopback, link-local or otherwise
internal address unless ``GQL_MEDIA_OUTBOUND_ALLOW`` lists it. The hosts of configured
provider base URLs are trusted. Each redirect hop is checked again by the caller.

The check resolves the name itself; a name that resolves differently a moment later (DNS
rebinding) is not caught, which the allow list's absence of internal ranges makes harmless
for the common case of cloud metadata addresses only when the resolver is not hostile.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpx

from gql_media.errors import ErrorCode, PermanentProviderError, TransientProviderError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundBlocked(PermanentProviderError):
    code = ErrorCode.OUTBOUND_BLOCKED


def _internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class OutboundGuard:
    def __init__(self, allow: Iterable[str] = (), trusted_hosts: Iterable[str] = ()) -> None:
        self._networks: list[Network] = []
        self._hosts: set[str] = {h.lower() for h in trusted_hosts if h}
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self._hosts.add(entry.strip().lower())

    async def check(self, url: str) -> None:
        """Raise OutboundBlocked unless ``url`` may be fetched."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise OutboundBlocked(f"not a valid URL: {url[:200]!r}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise OutboundBlocked(f"only http(s) URLs may be fetched, not {url[:200]!r}")
        host = parsed.host.lower()
        if host in self._hosts:
            return
        for address in await self._addresses(host, parsed.port or 443):
            if _internal(address) and not any(address in net for net in self._networks):
                raise OutboundBlocked(
                    f"{host} is an internal address ({address}); list it in "
                    "GQL_MEDIA_OUTBOUND_ALLOW to allow it"
                )

    @staticmethod
    async def _addresses(host: str, port: int) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise TransientProviderError(
                f"cannot resolve {host}: {exc}", code=ErrorCode.PROVIDER_UNAVAILABLE
            ) from exc
        return [ipaddress.ip_address(info[4][0]) for info in infos]


def guard_from(allow: Iterable[str], *base_urls: str | None) -> OutboundGuard:
    """The guard for a provider: its configured base URLs' hosts are trusted."""
    hosts = [httpx.URL(url).host for url in base_urls if url]
    return OutboundGuard(allow, hosts)
