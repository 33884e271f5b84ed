"""Requests to addresses that come from outside the configuration (provider output URLs,
users' webhook URLs): which ones may be made (``OutboundGuard``). ``outbound_http`` makes them,
connecting to the addresses checked here.

- only http(s) URLs;
- every address a name resolves to must be public: no private, loopback, link-local,
  multicast, reserved or unspecified address (IPv4-mapped IPv6 counts as its IPv4 address),
  unless an entry of ``GQL_MEDIA_OUTBOUND_ALLOW`` opens it *on that port*; one refused
  address refuses the name;
- a trusted host (the host of a configured provider base URL, or a name listed in
  ``GQL_MEDIA_OUTBOUND_ALLOW``) is not checked, but only on its own port: the base URL's port
  (its scheme's default when it names none), the entry's port, or 80 and 443 for an entry
  without one. The same host on any other port goes through the address check.

Allow-list entries: ``images.internal``, ``images.internal:8080``, ``10.0.0.0/8``,
``10.0.0.0/8:9000``, ``[fd00::/8]:9000``, or a URL (``http://images.internal:8080``).

Names are resolved by ``resolve`` and nowhere else, off the event loop.
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
DEFAULT_PORTS = {"http": 80, "https": 443}
WEB_PORTS = frozenset(DEFAULT_PORTS.values())


class OutboundBlocked(PermanentProviderError):
    """A URL from outside the configuration that may not be fetched."""

    code = ErrorCode.OUTBOUND_BLOCKED


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to, in the resolver's order (socket.gaierror when
    none). Outbound connections resolve names here and nowhere else."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _internal(address: Address) -> bool:
    address = _unmapped(address)
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _host(text: str) -> str:
    """``text`` as httpcore passes a host to the network backend (lower case, IDNA, no
    brackets around an IPv6 address)."""
    try:
        host = httpx.URL(scheme="http", host=text, path="/").raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"{text!r} is not a host name or address") from exc
    if not host:
        raise ValueError("an empty host")
    return host.lower()


def _port(text: str, entry: str) -> frozenset[int]:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: {text!r} is not a port")
    return frozenset({int(text)})


def parse_entry(entry: str) -> tuple[str | Network, frozenset[int]]:
    """An allow-list entry as (host name or network, ports); ValueError when malformed."""
    text = entry.strip()
    if "://" in text:
        try:
            url = check_url(text)
        except OutboundBlocked as exc:
            raise ValueError(f"{entry!r} is not an http(s) URL with a host") from exc
        target, ports = url.host, frozenset({url.port or DEFAULT_PORTS[url.scheme]})
    elif text.startswith("["):
        target, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not [address]:port")
        ports = _port(rest[1:], entry) if rest else WEB_PORTS
    elif text.count(":") == 1:
        target, _, port = text.partition(":")
        ports = _port(port, entry)
    else:
        target, ports = text, WEB_PORTS
    try:
        return ipaddress.ip_network(target, strict=False), ports
    except ValueError:
        return _host(target), ports


def _trusted_origin(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    return _host(url.host), url.port or DEFAULT_PORTS.get(url.scheme, 443)


def check_url(url: str | httpx.URL) -> httpx.URL:
    """``url`` parsed; OutboundBlocked unless it is an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundBlocked(f"not a valid URL: {str(url)[:200]!r}") from exc
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        raise OutboundBlocked(f"only http(s) URLs may be fetched, not {str(url)[:200]!r}")
    return parsed


class OutboundGuard:
    """The outbound policy: ``allow`` holds ``GQL_MEDIA_OUTBOUND_ALLOW`` entries, ``trusted``
    the base URLs of configured providers. A malformed entry is a ValueError here, so a
    process refuses to start with one."""

    def __init__(self, allow: Iterable[str] = (), trusted: Iterable[str] = ()) -> None:
        self._networks: list[tuple[Network, frozenset[int]]] = []
        self._trusted: set[tuple[str, int]] = {_trusted_origin(url) for url in trusted if url}
        for entry in allow:
            if not entry.strip():
                continue
            target, ports = parse_entry(entry)
            if isinstance(target, str):
                self._trusted.update((target, port) for port in ports)
            else:
                self._networks.append((target, ports))

    def trusts(self, host: str, port: int) -> bool:
        """Whether ``host`` (as httpcore passes it) is trusted on ``port``."""
        return (host.lower(), port) in self._trusted

    def permits(self, address: Address, port: int) -> bool:
        """Whether a connection to ``address`` on ``port`` is allowed."""
        if not _internal(address):
            return True
        plain = _unmapped(address)
        return any(plain in network and port in ports for network, ports in self._networks)

    async def addresses(self, host: str, port: int) -> list[Address]:
        """Resolve ``host`` once and check every address it has: the addresses to connect
        to. OutboundBlocked when one of them is refused; socket.gaierror when none."""
        try:
            found: list[Address] = [ipaddress.ip_address(host)]
        except ValueError:
            found = await resolve(host, port)
        for address in found:
            if not self.permits(address, port):
                raise OutboundBlocked(
                    f"{host} resolves to an internal address ({address}); list it with "
                    f"port {port} in GQL_MEDIA_OUTBOUND_ALLOW to allow it"
                )
        return found

    async def check(self, url: str) -> None:
        """The whole policy for ``url``, as a new connection to it applies it."""
        parsed = check_url(url)
        host, port = _host(parsed.host), parsed.port or DEFAULT_PORTS[parsed.scheme]
        if not self.trusts(host, port):
            try:
                await self.addresses(host, port)
            except socket.gaierror as exc:
                raise TransientProviderError(
                    f"cannot resolve {host}: {exc}", code=ErrorCode.PROVIDER_UNAVAILABLE
                ) from exc


def guard_from(allow: Iterable[str], *base_urls: str | None) -> OutboundGuard:
    """The guard for a provider: its configured base URLs' hosts are trusted on their ports."""
    return OutboundGuard(allow, [url for url in base_urls if url])
