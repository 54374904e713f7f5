"""HTTPS and forward proxies, for real: a TLS server with its own certificate authority and a
proxy on 127.0.0.1 that records what reached it.

What users behind a corporate proxy or talking TLS need to hold:
- the span is the exchange with the service, not with the proxy (its URL, its endpoint);
- B3 headers travel inside the TLS tunnel, never on the ``CONNECT`` the proxy reads;
- no proxy credential reaches a span, not even where aiohttp's exception text carries it;
- a failure (untrusted certificate, proxy down, proxy refusing the credentials) reaches the
  caller exactly as without tracing, and its span says why, once.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import trustme

from tests.kit.assertions import assert_propagated, outcome
from tests.kit.proxy import ForwardProxy, start_proxy
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, LoopbackResolver, b3_headers, refused_url, start_app

USER, PASSWORD = "alice", "hunter2"

# aiohttp 3.10 warns that "an HTTPS request is being sent through an HTTPS proxy" for every
# https:// URL through any proxy whose transport lacks asyncio's TLS-in-TLS marker, which
# uvloop's transports do; the proxy here is plain HTTP, and aiohttp 3.11+ no longer says it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:An HTTPS request is being sent through an HTTPS proxy:RuntimeWarning"
)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusting(authority: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test authority (and nothing else)."""
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


@pytest.fixture
async def tls_backend(authority: trustme.CA) -> AsyncIterator[Backend]:
    """The usual backend, served over TLS with a certificate for 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    backend = Backend()
    async with start_app(backend.app(), ssl_context=context) as url:
        backend.url = url
        yield backend
        backend.released.set()


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    """A proxy that wants USER and PASSWORD."""
    async with start_proxy((USER, PASSWORD)) as proxy:
        yield proxy


@pytest.fixture
async def session(make_session: Any) -> aiohttp.ClientSession:
    traced: aiohttp.ClientSession = make_session()
    return traced


@pytest.fixture
async def untraced() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as plain:
        yield plain


def no_credentials(spans: list[dict[str, Any]], *secrets: str) -> None:
    """No span holds the proxy's password, as text or in the Basic token, nor ``secrets``."""
    text = json.dumps(spans)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, token, *secrets):
        assert secret not in text, f"{secret!r} in {text}"


async def test_https_exchange_is_one_span_and_b3_arrives_inside_tls(
    session: aiohttp.ClientSession,
    tls_backend: Backend,
    trusting: ssl.SSLContext,
    recorder: SpanRecorder,
) -> None:
    url = tls_backend.url / "ok"

    assert await outcome(session, url, ssl=trusting) == (200, "ok")

    span = recorder.take_one()
    assert span["tags"]["http.url"] == str(url)
    assert span["tags"]["http.status_code"] == "200"
    assert span["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": url.port}
    # The handshake is part of creating the connection: both ends are there, then the headers.
    values = [annotation["value"] for annotation in span["annotations"]]
    assert values[:2] == ["connect.start", "connect.end"]
    assert {"ws", "wr"} <= set(values)
    assert_propagated(tls_backend.take_one(), span)


async def test_an_untrusted_certificate_fails_as_without_tracing_and_the_span_says_why(
    session: aiohttp.ClientSession,
    untraced: aiohttp.ClientSession,
    tls_backend: Backend,
    recorder: SpanRecorder,
) -> None:
    url = tls_backend.url / "ok"

    expected = await outcome(untraced, url)
    got = await outcome(session, url)

    assert got == expected
    assert got[0] == "ClientConnectorCertificateError"
    span = recorder.take_one()
    assert span["tags"]["error"] == f"{got[0]}: {got[1]}"
    assert "CERTIFICATE_VERIFY_FAILED" in span["tags"]["error"]
    assert "http.status_code" not in span["tags"]
    # The handshake failed: no connection, no request written, nothing arrived.
    assert [annotation["value"] for annotation in span["annotations"]] == ["connect.start"]
    assert tls_backend.received == []


async def test_plain_http_through_a_proxy_the_span_is_the_services(
    session: aiohttp.ClientSession,
    backend: Backend,
    proxy: ForwardProxy,
    recorder: SpanRecorder,
) -> None:
    url = backend.url / "ok"

    assert await outcome(session, url, proxy=proxy.url) == (200, "ok")

    span = recorder.take_one()
    assert span["tags"]["http.url"] == str(url)
    assert span["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": url.port}
    assert url.port != proxy.url.port
    assert_propagated(backend.take_one(), span)
    # A plain request goes through the proxy whole: it sees the B3 headers too (it could not
    # forward them otherwise), and the credentials the span must not hold.
    (seen,) = proxy.requests
    assert (seen.method, seen.target) == ("GET", str(url))
    assert b3_headers(seen.headers)["x-b3-spanid"] == span["id"]
    assert "Proxy-Authorization" in seen.headers
    no_credentials([span])


async def test_https_through_a_tunnel_b3_travels_only_inside_it(
    session: aiohttp.ClientSession,
    tls_backend: Backend,
    trusting: ssl.SSLContext,
    proxy: ForwardProxy,
    recorder: SpanRecorder,
) -> None:
    url = tls_backend.url / "ok"

    assert await outcome(session, url, ssl=trusting, proxy=proxy.url) == (200, "ok")

    span = recorder.take_one()
    assert span["tags"]["http.url"] == str(url)
    assert span["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": url.port}
    assert_propagated(tls_backend.take_one(), span)
    # The proxy read one CONNECT with the credentials and no trace header: the ids went
    # through the tunnel, which it cannot read.
    (seen,) = proxy.requests
    assert (seen.method, seen.target) == ("CONNECT", f"127.0.0.1:{url.port}")
    assert "Proxy-Authorization" in seen.headers
    assert b3_headers(seen.headers) == {}
    no_credentials([span])


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_refusing_the_credentials(
    scheme: str,
    session: aiohttp.ClientSession,
    untraced: aiohttp.ClientSession,
    backend: Backend,
    tls_backend: Backend,
    trusting: ssl.SSLContext,
    proxy: ForwardProxy,
    recorder: SpanRecorder,
) -> None:
    """A wrong password: a plain request gets the proxy's 407 as its response; a tunnel
    raises, with the proxy's URL and password in aiohttp's text, never in the span."""
    target = backend if scheme == "http" else tls_backend
    url, wrong = target.url / "ok", proxy.url.with_password("letmein")

    expected = await outcome(untraced, url, ssl=trusting, proxy=wrong)
    got = await outcome(session, url, ssl=trusting, proxy=wrong)

    assert got == expected
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "407"
    if scheme == "http":
        assert got == (407, "")
        assert span["tags"]["error"] == "407"
    else:
        assert got[0] == "ClientHttpProxyError"
        assert "letmein" in got[1], "aiohttp's text no longer names the proxy: rewrite this test"
        assert span["tags"]["error"] == (
            "ClientHttpProxyError: 407, message='Proxy Authentication Required'"
        )
    no_credentials([span], "letmein")
    assert target.received == []
    assert [request.method for request in proxy.requests] == [
        "GET" if scheme == "http" else "CONNECT"
    ] * 2


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_is_down(
    scheme: str,
    session: aiohttp.ClientSession,
    untraced: aiohttp.ClientSession,
    backend: Backend,
    tls_backend: Backend,
    recorder: SpanRecorder,
) -> None:
    target = backend if scheme == "http" else tls_backend
    dead = (await refused_url()).with_path("").with_user(USER).with_password(PASSWORD)
    url = target.url / "ok"

    expected = await outcome(untraced, url, proxy=dead)
    got = await outcome(session, url, proxy=dead)

    assert got == expected
    assert got[0] == "ClientProxyConnectionError"
    span = recorder.take_one()
    assert span["tags"]["error"] == f"{got[0]}: {got[1]}"
    assert f":{dead.port} " in span["tags"]["error"]  # the proxy's address, not the service's
    assert span["tags"]["http.url"] == str(url)
    no_credentials([span], USER)
    assert target.received == []


async def test_the_proxys_own_lookup_has_no_annotation(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    """aiohttp sends no signal while it looks up and connects to the proxy (its connector
    passes no traces there), so a span through a proxy has no DNS annotations, while the same
    name looked up for a direct request has them. README says so; were aiohttp to change,
    this fails and README must follow."""
    session = make_session(
        session_kwargs={"connector": aiohttp.TCPConnector(resolver=LoopbackResolver())}
    )
    async with start_proxy() as proxy:
        by_name = proxy.url.with_host("localhost")
        direct = backend.url.with_host("localhost") / "ok"

        assert await outcome(session, backend.url / "ok", proxy=by_name) == (200, "ok")
        assert await outcome(session, direct) == (200, "ok")

    through, straight = recorder.take(2)
    assert [a["value"] for a in through["annotations"]][:2] == ["connect.start", "connect.end"]
    assert not [a for a in through["annotations"] if a["value"].startswith("dns.")]
    assert {"dns.start", "dns.end"} <= {a["value"] for a in straight["annotations"]}
    assert len(proxy.requests) == 1


@pytest.mark.parametrize("allowed", ["service", "proxy"])
async def test_propagate_to_is_asked_about_the_service_not_the_proxy(
    allowed: str,
    make_session: Any,
    backend: Backend,
    proxy: ForwardProxy,
    recorder: SpanRecorder,
) -> None:
    """Both listen on 127.0.0.1, so a predicate tells them apart by port: allowing the
    service's port sends the ids through the proxy; allowing only the proxy's sends none."""
    port = backend.url.port if allowed == "service" else proxy.url.port
    session = make_session(propagate_to=lambda url: url.port == port)

    assert await outcome(session, backend.url / "ok", proxy=proxy.url) == (200, "ok")

    span = recorder.take_one()
    (seen,) = proxy.requests
    if allowed == "service":
        assert_propagated(backend.take_one(), span)
        assert b3_headers(seen.headers)["x-b3-spanid"] == span["id"]
    else:
        assert backend.take_one().b3() == {}
        assert b3_headers(seen.headers) == {}
