"""Redirects as servers really send them: every exchange aiohttp makes is a span of its own.

Each test sends a request whose redirect carries a Location exactly as written here (servers send
anything), then compares the spans with what the server really received: one span per exchange
that arrived, with that exchange's URL, and B3 headers only on the host ``propagate_to`` allows.
``127.0.0.1`` and ``localhost`` are the same server under two host names, so "another host" is
real and still on this machine; every session here resolves ``localhost`` alone, so no host name
a Location makes up is ever looked up elsewhere.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from aiozipkin_client import redact_url
from tests.kit.assertions import assert_propagated
from tests.kit.harness import make_context
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, LoopbackResolver, Received

ALLOWED = "127.0.0.1"
#: Credentials and secret query values the Locations below carry; no span may show them.
SECRETS = ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5")


@pytest.fixture
def make_session(make_session: Any) -> Any:
    """Sessions that propagate to 127.0.0.1 only and resolve nothing but ``localhost``."""

    def factory() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver())
        session: aiohttp.ClientSession = make_session(
            propagate_to=[ALLOWED], session_kwargs={"connector": connector}
        )
        return session

    return factory


async def follow(
    session: aiohttp.ClientSession,
    backend: Backend,
    location: str,
    *,
    status: int = 302,
    method: str = "GET",
    trace_request_ctx: Any = None,
) -> int | BaseException:
    """Request a redirect to ``location``; the final status, or what aiohttp raised."""
    url = (backend.url / "location").with_query(to=location, status=str(status))
    data = b"payload" if method == "POST" else None
    try:
        async with session.request(
            method, url, data=data, max_redirects=5, trace_request_ctx=trace_request_ctx
        ) as response:
            await response.read()
            return response.status
    except aiohttp.ClientError as exc:
        return exc


def arrived_url(received: Received) -> URL:
    """The URL of an exchange as the server saw it (Host header, raw path and query)."""
    return URL(f"http://{received.headers['Host']}{received.raw_path}", encoded=True)


def check_exchanges(recorder: SpanRecorder, backend: Backend, location: str) -> None:
    """One span per exchange that arrived, with its URL, and B3 only where allowed.

    An exchange that never arrived (its connection failed) may only be the last one, and its
    span must say why.
    """
    spans = recorder.take_all()
    received, backend.received = backend.received, []
    context = f"Location {location!r}: spans {spans}, received {received}"
    # Not in http.url, not in an error's text, whatever aiohttp made of the Location.
    text = json.dumps(spans)
    assert not [secret for secret in SECRETS if secret in text], context
    if len(spans) == len(received) + 1:
        failed = spans[-1]["tags"]
        assert failed.get("error"), context
        assert "http.status_code" not in failed, context
        spans = spans[:-1]
    assert len(spans) == len(received), context
    assert len({span["id"] for span in spans}) == len(spans), context
    assert len({span["traceId"] for span in spans}) == 1, context
    for span, arrived in zip(spans, received, strict=True):
        assert span["name"] == arrived.method.lower(), context
        # The URL that arrived, as http.url records it (secrets masked; SECRETS checks them).
        assert URL(span["tags"]["http.url"]) == redact_url(arrived_url(arrived)), context
        if URL(span["tags"]["http.url"]).host == ALLOWED:
            assert_propagated(arrived, span)
        else:
            assert arrived.b3() == {}, context


def check_unsampled_exchanges(
    recorder: SpanRecorder, backend: Backend, location: str, parent: Any
) -> None:
    """No span; each exchange that arrived at the allowed host carries ids of its own under the
    parent, with ``X-B3-Sampled: 0``; every other exchange carries no B3 header."""
    recorder.expect_none()
    received, backend.received = backend.received, []
    context = f"Location {location!r}: received {received}"
    assert received, context
    span_ids = []
    for arrived in received:
        b3 = arrived.b3()
        if arrived_url(arrived).host != ALLOWED:
            assert b3 == {}, context
            continue
        span_ids.append(b3.pop("x-b3-spanid", None))
        assert b3 == {
            "x-b3-traceid": parent.trace_id,
            "x-b3-parentspanid": parent.span_id,
            "x-b3-sampled": "0",
        }, context
    assert span_ids[0] is not None, context  # the first exchange always goes to 127.0.0.1
    assert len(set(span_ids)) == len(span_ids), context
    assert parent.span_id not in span_ids, context


# Every form of Location aiohttp reads, with {port} for the backend's port. Those aiohttp
# refuses (or, before 3.14, the "http:path" forms) end the request with an error on the
# redirect's span; the check is the same: spans match what arrived.
LOCATIONS = [
    pytest.param("//localhost:{port}/ok", id="scheme-relative-other-host"),
    pytest.param("//127.0.0.1:{port}/ok", id="scheme-relative-same-host"),
    pytest.param("//localhost:{port}", id="scheme-relative-no-path"),
    pytest.param("//user:SECRET5@localhost:{port}/ok", id="scheme-relative-userinfo"),
    pytest.param("ftp://bob:SECRET2@localhost/x?sig=SECRET4", id="not-http-with-secrets"),
    pytest.param("http:///cb?access_token=SECRET3", id="no-host-with-token"),
    pytest.param("http://localhost:{port}/ok", id="absolute-other-host"),
    pytest.param("HTTP://LOCALHOST:{port}/ok", id="absolute-upper-case"),
    pytest.param("http://localhost:{port}/ok#frag", id="absolute-fragment"),
    pytest.param("/ok", id="path-absolute"),
    pytest.param("ok", id="path-relative"),
    pytest.param("../ok?q=1", id="dot-segments"),
    pytest.param("?page=2", id="query-only"),
    pytest.param("#top", id="fragment-only"),
    pytest.param("/ok with space", id="unquoted-space"),
    pytest.param("\\\\localhost:{port}/ok", id="backslashes"),
    pytest.param("http:/ok", id="scheme-no-slashes"),
    pytest.param("http:ok", id="scheme-no-slash"),
    pytest.param("http:///ok", id="empty-host"),
    pytest.param("ftp://localhost:{port}/ok", id="not-http"),
    pytest.param("http://[not-an-ip/ok", id="not-a-url"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("location", LOCATIONS)
async def test_each_location_form_is_traced_as_the_exchange_that_happened(
    make_session: Any, backend: Backend, recorder: SpanRecorder, location: str
) -> None:
    session = make_session()
    location = location.format(port=backend.url.port)

    await follow(session, backend, location)

    check_exchanges(recorder, backend, location)


@pytest.mark.parametrize("location", LOCATIONS)
async def test_unsampled_requests_send_fresh_ids_per_hop_only_where_allowed(
    make_session: Any, backend: Backend, recorder: SpanRecorder, location: str
) -> None:
    # A request that is not sampled records nothing, but each hop still propagates a span id
    # of its own, and never to a host propagate_to leaves out.
    session = make_session()
    location = location.format(port=backend.url.port)
    parent = make_context(sampled=False)

    await follow(session, backend, location, trace_request_ctx={"span_context": parent})

    check_unsampled_exchanges(recorder, backend, location, parent)


async def test_unsampled_ids_come_back_when_a_redirect_returns_to_an_allowed_host(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session = make_session()
    port = backend.url.port
    # 127.0.0.1 (allowed) -> localhost (not allowed) -> 127.0.0.1 again.
    back = f"http://{ALLOWED}:{port}/ok"
    location = f"//localhost:{port}/location?to={back}"
    parent = make_context(sampled=False)

    outcome = await follow(session, backend, location, trace_request_ctx={"span_context": parent})

    assert outcome == 200
    assert [arrived_url(r).host for r in backend.received] == [ALLOWED, "localhost", ALLOWED]
    check_unsampled_exchanges(recorder, backend, location, parent)


async def test_unsampled_redirects_send_nothing_when_headers_are_not_propagated(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session = make_session()
    location = f"/location?to=//{ALLOWED}:{backend.url.port}/ok"
    parent = make_context(sampled=False)
    request_ctx = {"span_context": parent, "propagate_headers": False}

    outcome = await follow(session, backend, location, trace_request_ctx=request_ctx)

    assert outcome == 200
    assert [r.b3() for r in backend.received] == [{}, {}, {}]
    recorder.expect_none()


async def test_scheme_relative_redirect_to_another_host_is_a_new_span_without_headers(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session = make_session()

    outcome = await follow(session, backend, f"//localhost:{backend.url.port}/ok")

    assert outcome == 200
    first, second = recorder.take(2)
    assert first["tags"]["http.status_code"] == "302"
    assert second["tags"]["http.url"] == f"http://localhost:{backend.url.port}/ok"
    assert second["id"] != first["id"]
    assert second["traceId"] == first["traceId"]
    redirected, landed = backend.received
    assert_propagated(redirected, first)
    assert landed.headers["Host"] == f"localhost:{backend.url.port}"
    assert landed.b3() == {}


@pytest.mark.parametrize(
    ("status", "method", "next_method"),
    [
        (301, "POST", "GET"),
        (302, "POST", "GET"),
        (303, "POST", "GET"),
        (303, "HEAD", "HEAD"),
        (307, "POST", "POST"),
        (308, "POST", "POST"),
        (301, "PUT", "PUT"),
    ],
)
async def test_next_hop_method_is_the_one_aiohttp_sends(
    make_session: Any,
    backend: Backend,
    recorder: SpanRecorder,
    status: int,
    method: str,
    next_method: str,
) -> None:
    session = make_session()

    outcome = await follow(session, backend, "/ok", status=status, method=method)

    assert outcome == 200
    assert [r.method for r in backend.received] == [method, next_method]
    check_exchanges(recorder, backend, "/ok")


_PREFIXES = (
    "",
    "/",
    "//",
    "\\\\",
    "http://",
    "http:",
    "http:/",
    "HTTP://",
    "ftp://",
    "//u:p@",
    "//alice:SECRET1@",
    "ftp://bob:SECRET2@",
)
_HOSTS = ("", "localhost:{port}", "127.0.0.1:{port}", "LocalHost:{port}", "[::1]:1")
_PATHS = ("", "/", "ok", "/ok", "/location", "a/../ok", "%2e%2e/ok", "%2F%2Fok", "/o k", "\\ok")
_QUERIES = (
    "",
    "?x=1",
    "?to=/ok",
    "?to=//localhost:{port}/ok",
    "?a=1&a=2",
    "?access_token=SECRET3",
    "?sig=SECRET4&page=2",
)
_FRAGMENTS = ("", "#f", "#?x=1")
FUZZ_CASES = 300


def fuzzed_locations(seed: int, port: int | None) -> Iterator[str]:
    """FUZZ_CASES hostile Location values, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(FUZZ_CASES):
        parts = (rng.choice(options) for options in (_PREFIXES, _HOSTS, _PATHS, _QUERIES))
        yield "".join(parts).format(port=port) + rng.choice(_FRAGMENTS)


async def test_fuzzed_locations_never_share_a_span_or_leak_headers_or_secrets(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    """Hostile Location values, seeded: the same invariants as for the named forms."""
    session = make_session()
    for location in fuzzed_locations(20261121, backend.url.port):
        await follow(session, backend, location)
        check_exchanges(recorder, backend, location)


async def test_fuzzed_locations_under_an_unsampled_parent_never_leak_or_repeat_ids(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    """The same hostile Locations for requests that are not sampled, which keep no hop."""
    session = make_session()
    for location in fuzzed_locations(20261122, backend.url.port):
        parent = make_context(sampled=False)

        await follow(session, backend, location, trace_request_ctx={"span_context": parent})
        check_unsampled_exchanges(recorder, backend, location, parent)
