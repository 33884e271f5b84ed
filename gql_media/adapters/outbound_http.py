"""The HTTP client for requests to addresses from outside the configuration: every
connection goes to an address that ``OutboundGuard`` checked (no DNS rebinding).

A name is resolved once per new connection (``outbound.resolve``), every address it has is
checked, and the socket is opened to one of those addresses. HTTP is left to httpcore with
the URL unchanged, so the ``Host`` header, the TLS SNI and the certificate check all use the
original name, and connections are pooled per name and port (a trusted provider host keeps
its keep-alive connections; a checked host's kept connection stays on its checked address).

Why a network backend: httpcore, under httpx, opens every connection through the public
``AsyncNetworkBackend.connect_tcp(host, port, ...)``. ``_PinnedBackend`` resolves, checks and
connects there, and ``OutboundTransport`` is the small httpx transport over an httpcore
connection pool that uses it (httpx's own transport takes no network backend). The other
public route, replacing the URL's host by the checked IP and sending the name as the
``sni_hostname`` extension, would pool connections by IP: a TLS connection verified for
one name would be reused for another name served from the same address, unverified.

Redirects: each hop is a new request, so every new connection is checked the same way, and
every request's URL must be http(s). Proxies from the environment (``HTTP_PROXY``...) are
not used: a proxy resolves names itself, which would undo the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from gql_media.adapters.outbound import OutboundGuard, check_url

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def client(
    guard: OutboundGuard,
    *,
    timeout: httpx.Timeout | float | None = 5.0,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every connection follows ``guard`` (see the module)."""
    transport = OutboundTransport(guard, verify=verify, limits=limits or DEFAULT_LIMITS)
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens each TCP connection to an address the guard checked (see the module)."""

    def __init__(self, guard: OutboundGuard) -> None:
        self._guard = guard
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._guard.trusts(host, port):
            return await self._network.connect_tcp(
                host, port, timeout, local_address, socket_options
            )
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.addresses(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from exc
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound requests do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


# httpcore's exceptions as httpx's, most specific first
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _httpx_errors():
                await close()


class OutboundTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore connection pool that connects through
    ``_PinnedBackend``; every request's URL must pass ``check_url``."""

    def __init__(
        self, guard: OutboundGuard, *, verify: ssl.SSLContext | bool, limits: httpx.Limits
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(guard),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_url(request.url)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
