"""Outbound requests to addresses from outside the configuration: only http(s), no internal
addresses unless allowed (on their port), the configured provider hosts trusted on their own
port only, every redirect re-checked, and every connection made to the address that was
checked (a name that resolves elsewhere a moment later is not followed there)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gql_media.adapters import http, outbound, outbound_http
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.outbound import OutboundBlocked, OutboundGuard, guard_from, parse_entry
from gql_media.errors import ErrorCode, ProviderError
from tests.fakes import StandInDNS, picture, serving
from tests.fakes.replicate_server import Script, running_replicate
from tests.support import JOB_FIELDS, graphql_ws, start_server

IMAGE = picture(32, 24, seed=1)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost:8000/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.10/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "not a url",
    ],
)
async def test_internal_and_odd_urls_are_blocked(url: str) -> None:
    with pytest.raises(OutboundBlocked) as blocked:
        await OutboundGuard().check(url)
    assert blocked.value.code is ErrorCode.OUTBOUND_BLOCKED


async def test_the_allow_list_opens_internal_addresses_on_their_ports_only(
    dns: Callable[..., StandInDNS],
) -> None:
    dns("nowhere.invalid", ["127.0.0.1"])  # every other name is unknown
    await OutboundGuard().check("https://93.184.216.34/image.png")  # public: any port
    await OutboundGuard().check("https://93.184.216.34:8443/image.png")
    guard = OutboundGuard(allow=["10.0.0.0/8", "images.internal", "[fd00::/8]:9000"])
    await guard.check("http://10.20.30.40/x.png")  # no port named: 80 and 443
    await guard.check("https://10.20.30.40/x.png")
    await guard.check("http://images.internal/x.png")  # listed by name: not even resolved
    await guard.check("http://[fd00::1]:9000/x.png")
    for refused in (
        "http://192.168.1.1/x.png",
        "http://10.20.30.40:6379/",
        "http://[fd00::1]/x.png",
        "http://127.0.0.1:8080/",
    ):
        with pytest.raises(OutboundBlocked):
            await guard.check(refused)
    ported = OutboundGuard(allow=["127.0.0.1:8080", "http://images.internal:8081"])
    await ported.check("http://127.0.0.1:8080/x.png")
    await ported.check("http://images.internal:8081/x.png")
    with pytest.raises(OutboundBlocked):
        await ported.check("http://127.0.0.1/x.png")
    with pytest.raises(ProviderError) as unknown:  # not trusted on 80: resolved, unknown
        await ported.check("http://images.internal/x.png")
    assert unknown.value.code is ErrorCode.PROVIDER_UNAVAILABLE


async def test_a_provider_base_url_is_trusted_on_its_own_port_only() -> None:
    trusted = guard_from([], "http://127.0.0.1:9999/v1", None, "https://models.internal")
    await trusted.check("http://127.0.0.1:9999/files/a.png")
    await trusted.check("https://models.internal/files/a.png")  # https's port, 443
    for refused in ("http://127.0.0.1:1234/files/a.png", "http://127.0.0.1/files/a.png"):
        with pytest.raises(OutboundBlocked):
            await trusted.check(refused)


@pytest.mark.parametrize(
    "entry", ["images.internal:http", "10.0.0.0/8:0", "[::1", "[::1]x", "http://:80", "ftp://a"]
)
def test_malformed_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_entry(entry)


@dataclass
class Recorder:
    """A server that answers every request with a PNG, recording (method, path, Host)."""

    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def anything(request: Request) -> Response:
            self.requests.append((request.method, request.url.path, request.headers.get("host")))
            return Response(IMAGE, media_type="image/png")

        return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


@asynccontextmanager
async def recording(
    host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[Recorder]:
    made = Recorder()
    async with serving(made.app(), host, port, **options) as url:
        made.url = url
        yield made


@asynccontextmanager
async def checked_and_loopback(**options: Any) -> AsyncIterator[tuple[Recorder, Recorder, int]]:
    """The same port on 127.0.0.2 (the address a test lets the check pass) and on
    127.0.0.1 (where a rebinding name points at connect time)."""
    async with recording("127.0.0.2", **options) as checked:
        port = int(checked.url.rsplit(":", 1)[1])
        async with recording("127.0.0.1", port, **options) as loopback:
            yield checked, loopback, port


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[..., StandInDNS]:
    """``dns(name, answer, ...)`` makes ``name`` resolve to each answer in turn."""

    def script(name: str, *answers: list[str]) -> StandInDNS:
        stand_in = StandInDNS(name, list(answers))
        monkeypatch.setattr(outbound, "resolve", stand_in)
        return stand_in

    return script


async def test_a_rebinding_name_is_connected_to_the_address_that_was_checked(
    dns: Callable[..., StandInDNS],
) -> None:
    async with checked_and_loopback() as (checked, loopback, port):
        # public-looking at the check (127.0.0.2 is allowed on this port), loopback afterwards;
        # "localhost" also reaches 127.0.0.1 through the system's own resolver
        resolver = dns("localhost", ["127.0.0.2"], ["127.0.0.1"])
        guard = OutboundGuard(allow=[f"127.0.0.2:{port}"])
        async with outbound_http.client(guard) as client:
            for _ in range(2):
                image = await http.download(
                    client, f"http://localhost:{port}/a.png", max_bytes=10_000
                )
                assert (image.width, image.height) == (32, 24)
    assert loopback.requests == []
    assert checked.requests == [("GET", "/a.png", f"localhost:{port}")] * 2  # the original Host
    assert resolver.lookups == [("localhost", port)]  # once: the kept connection was reused


async def test_a_name_with_one_refused_address_is_refused(dns: Callable[..., StandInDNS]) -> None:
    async with checked_and_loopback() as (checked, loopback, port):
        dns("localhost", ["127.0.0.2", "127.0.0.1"])
        guard = OutboundGuard(allow=[f"127.0.0.2:{port}"])
        async with outbound_http.client(guard) as client:
            with pytest.raises(OutboundBlocked) as blocked:
                await http.download(client, f"http://localhost:{port}/a.png", max_bytes=10_000)
    assert blocked.value.code is ErrorCode.OUTBOUND_BLOCKED
    assert (checked.requests, loopback.requests) == ([], [])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_pair(ca: trustme.CA, name: str) -> AsyncIterator[tuple[Recorder, Recorder, int]]:
    with ca.issue_cert(name).private_key_and_cert_chain_pem.tempfile() as pem:
        async with checked_and_loopback(ssl_certfile=pem, ssl_keyfile=pem) as servers:
            yield servers


async def test_https_keeps_the_name_for_sni_and_the_certificate(
    dns: Callable[..., StandInDNS], ca: trustme.CA
) -> None:
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    async with tls_pair(ca, "localhost") as (checked, loopback, port):
        dns("localhost", ["127.0.0.2"], ["127.0.0.1"])
        guard = OutboundGuard(allow=[f"127.0.0.2:{port}"])
        async with outbound_http.client(guard, verify=trust) as client:
            image = await http.download(client, f"https://localhost:{port}/a.png", max_bytes=10_000)
    assert image.width == 32
    assert (checked.requests, loopback.requests) == ([("GET", "/a.png", f"localhost:{port}")], [])

    async with tls_pair(ca, "elsewhere.example") as (checked, loopback, port):
        dns("localhost", ["127.0.0.2"])
        guard = OutboundGuard(allow=[f"127.0.0.2:{port}"])
        async with outbound_http.client(guard, verify=trust) as client:
            with pytest.raises(ProviderError) as refused:  # the certificate is for another name
                await http.download(client, f"https://localhost:{port}/a.png", max_bytes=10_000)
    assert refused.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message
    assert (checked.requests, loopback.requests) == ([], [])


def files_app() -> Starlette:
    async def file(request: Request) -> Response:
        return Response(IMAGE, media_type="image/png")

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    return Starlette(routes=[Route("/a.png", file), Route("/redirect", redirect)])


async def test_redirects_are_checked_at_every_hop() -> None:
    async with serving(files_app()) as base:
        guard = guard_from([], base)  # the server's own host and port are trusted
        port = base.rsplit(":", 1)[1]
        async with outbound_http.client(guard) as client:
            same = await http.download(client, f"{base}/redirect?to=/a.png", max_bytes=10_000)
            assert (same.width, same.height) == (32, 24)
            for target in (
                f"http://localhost:{port}/a.png",  # loopback under a name that is not trusted
                "http://169.254.169.254/latest/meta-data/",
                "file:///etc/passwd",
            ):
                with pytest.raises(OutboundBlocked):
                    await http.download(client, f"{base}/redirect?to={target}", max_bytes=10_000)


async def test_provider_outputs_on_another_port_of_the_provider_host_are_refused(
    settings_factory: Any,
) -> None:
    async with recording("127.0.0.1") as elsewhere, running_replicate() as fake:
        fake.script = Script(file_base=elsewhere.url)  # same host as the API, another port
        settings = settings_factory(
            replicate_api_token=fake.token,
            replicate_base_url=fake.url,
            replicate_poll_interval=0.01,
            replicate_poll_max_interval=0.05,
            max_attempts=1,
        )
        fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
        async with start_server(settings, fake_redis, with_worker=True) as server:
            payload = await server.generate(provider="replicate")
            async with graphql_ws(server.ws_url) as ws:
                op = await ws.subscribe(
                    f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}",
                    {"id": payload["job"]["id"]},
                )
                final = [p["data"]["jobUpdated"] for p in await ws.collect(op)][-1]
    assert final["status"] == "FAILED", final
    assert final["error"]["code"] == "OUTBOUND_BLOCKED"
    assert fake.creates and elsewhere.requests == []  # the API was reached, the port was not
