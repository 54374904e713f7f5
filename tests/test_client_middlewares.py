"""aiohttp's client middlewares (3.12+): a middleware that sends the request again.

aiohttp's own ``DigestAuthMiddleware`` answers a 401 challenge by sending the same request
again with an ``Authorization`` header; the middlewares of aiohttp's cookbook refresh a token
or retry a 503 the same way. No signal tells a tracer about the earlier attempts' responses,
and every attempt is the same request, sent with the headers it had. So the request is one
span covering every attempt, with ``retry`` before each new one; each attempt carries the same
B3 ids; the status is the last response's. README and RATIONALE say so; these tests hold it.

A middleware that makes a request of its own (a token fetch) makes a separate span, and the
two never share annotations.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from tests.kit.assertions import assert_propagated, outcome
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Received, start_app

pytestmark = pytest.mark.skipif(
    "middlewares" not in inspect.signature(aiohttp.ClientSession).parameters,
    reason="client middlewares arrived in aiohttp 3.12",
)


class Service:
    """``/digest`` wants Digest authorization (any); ``/flaky`` answers 503 twice, then 200;
    ``/token`` hands out a token that ``/api`` wants; ``/a`` redirects to ``/b``, ``/b`` to
    ``/c``, which answers "landed". Every request is recorded."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.flaky_calls = 0
        self.url = URL()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, request.query_string, request.headers, body)
        )

    async def digest(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.headers.get("Authorization", "").startswith("Digest "):
            return web.Response(text="welcome")
        challenge = 'Digest realm="test", nonce="abc123", qop="auth", algorithm=MD5'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text="who?")

    async def flaky(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.flaky_calls += 1
        return web.Response(status=503 if self.flaky_calls <= 2 else 200, text="flaky")

    async def token(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="t0ken")

    async def api(self, request: web.Request) -> web.Response:
        await self._record(request)
        ok = request.headers.get("Authorization") == "Bearer t0ken"
        return web.Response(status=200 if ok else 401, text="api")

    async def hold(self, request: web.Request) -> web.Response:
        """Answers once ``release`` is set (5 s at most); ``holding`` says it arrived."""
        await self._record(request)
        self.holding.set()
        await asyncio.wait_for(self.release.wait(), 5)
        return web.Response(text="held")

    async def a(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound("/b")

    async def b(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound("/c")

    async def c(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="landed")

    def app(self) -> web.Application:
        app = web.Application()
        for name in ("digest", "flaky", "token", "api", "hold", "a", "b", "c"):
            app.router.add_route("*", f"/{name}", getattr(self, name))
        return app


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    service = Service()
    async with start_app(service.app()) as url:
        service.url = url
        yield service


def values(span: dict[str, Any]) -> list[str]:
    return [annotation["value"] for annotation in span["annotations"]]


async def test_digest_authentication_is_one_span_with_a_retry(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    digest = aiohttp.DigestAuthMiddleware("alice", "hunter2")
    session = make_session(session_kwargs={"middlewares": (digest,)})

    assert await outcome(session, service.url / "digest") == (200, "welcome")

    span = recorder.take_one()
    assert values(span) == [
        "connect.start",
        "connect.end",
        "ws",
        "retry",
        "connection.reuse",
        "ws",
        "wr",
    ]
    assert span["tags"]["http.status_code"] == "200"
    challenged, answered = service.received
    assert "Authorization" not in challenged.headers
    assert answered.headers["Authorization"].startswith("Digest ")
    # Both attempts carry this span's ids: no signal comes between them to change them.
    assert_propagated(challenged, span)
    assert_propagated(answered, span)
    # What the middleware added is never recorded.
    text = json.dumps(span)
    for secret in ("Digest", "alice", "hunter2"):
        assert secret not in text


async def test_a_retry_middleware_attempt_by_attempt(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    async def retry_unavailable(
        request: Any, handler: Any
    ) -> aiohttp.ClientResponse:  # the cookbook's retry
        for _ in range(3):
            response: aiohttp.ClientResponse = await handler(request)
            if response.status != 503:
                break
            response.release()
        return response

    session = make_session(session_kwargs={"middlewares": (retry_unavailable,)})

    assert await outcome(session, service.url / "flaky") == (200, "flaky")

    span = recorder.take_one()
    assert values(span).count("retry") == 2
    assert values(span).count("ws") == 3
    assert values(span)[-1] == "wr"
    assert span["tags"]["http.status_code"] == "200"
    assert len(service.received) == 3
    for received in service.received:
        assert_propagated(received, span)


async def test_a_retry_that_waits_for_a_connection_is_one_retry_then_the_queue(
    tracer: Tracer, service: Service, recorder: SpanRecorder
) -> None:
    """A retry middleware backs off; meanwhile another request takes the only connection
    (``limit=1``), so the next attempt waits in aiohttp's queue. ``retry`` comes once per
    attempt, before that attempt's queueing."""
    others: list[asyncio.Task[tuple[int, str] | tuple[str, str]]] = []
    session: aiohttp.ClientSession

    async def retry_with_backoff(request: Any, handler: Any) -> aiohttp.ClientResponse:
        for attempt in range(3):
            response: aiohttp.ClientResponse = await handler(request)
            if response.status != 503:
                break
            response.release()
            if attempt == 0:
                # The back-off: another request gets the connection in the meantime.
                others.append(asyncio.create_task(outcome(session, service.url / "hold")))
                await asyncio.wait_for(service.holding.wait(), 5)
        return response

    async def queued(session: Any, ctx: Any, params: Any) -> None:
        service.release.set()  # our attempt waits: the other request may now finish

    watcher = aiohttp.TraceConfig()
    watcher.on_connection_queued_start.append(queued)
    configs = [aiozipkin_client.make_trace_config(tracer), watcher]
    async with aiohttp.ClientSession(
        trace_configs=configs,
        connector=aiohttp.TCPConnector(limit=1),
        middlewares=(retry_with_backoff,),
    ) as session:
        assert await outcome(session, service.url / "flaky") == (200, "flaky")
        assert await others[0] == (200, "held")

    spans = {span["tags"]["http.path"]: span for span in recorder.take(2)}
    assert values(spans["/flaky"]) == [
        "connect.start",
        "connect.end",
        "ws",
        "retry",
        "queue.start",
        "queue.end",
        "connection.reuse",
        "ws",
        "retry",
        "connection.reuse",
        "ws",
        "wr",
    ]
    assert values(spans["/hold"]) == ["connection.reuse", "ws", "wr"]
    assert spans["/flaky"]["tags"]["http.status_code"] == "200"


async def test_a_middleware_that_raises_ends_the_span_with_its_error(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    class ChallengeRefused(Exception):
        pass

    async def refuse_challenges(request: Any, handler: Any) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await handler(request)
        if response.status == 401:
            response.release()
            raise ChallengeRefused(
                f"{request.url.path} wants {response.headers['WWW-Authenticate']}"
            )
        return response

    untraced = aiohttp.ClientSession(middlewares=(refuse_challenges,))
    async with untraced:
        expected = await outcome(untraced, service.url / "digest")
    session = make_session(session_kwargs={"middlewares": (refuse_challenges,)})
    got = await outcome(session, service.url / "digest")

    assert got == expected
    assert got[0] == "ChallengeRefused"
    span = recorder.take_one()
    assert span["tags"]["error"] == f"ChallengeRefused: {got[1]}"
    assert "http.status_code" not in span["tags"]  # the 401 never reached a signal
    assert_propagated(service.received[-1], span)


async def test_a_token_fetched_inside_a_middleware_is_a_span_of_its_own(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    session: aiohttp.ClientSession

    async def bearer(request: Any, handler: Any) -> aiohttp.ClientResponse:
        # The cookbook's pattern: fetch the token through the same session, without the
        # middlewares (or it would call itself).
        async with session.post(
            service.url / "token",
            middlewares=(),
        ) as token:
            request.headers["Authorization"] = f"Bearer {await token.text()}"
        response: aiohttp.ClientResponse = await handler(request)
        return response

    session = make_session(session_kwargs={"middlewares": (bearer,)})

    assert await outcome(session, service.url / "api") == (200, "api")

    first, second = recorder.take(2)
    spans = {span["tags"]["http.path"]: span for span in (first, second)}
    token, api = spans["/token"], spans["/api"]
    assert (token["name"], api["name"]) == ("post", "get")
    # Each exchange's annotations are on its own span only: one request written each.
    assert (values(token).count("ws"), values(api).count("ws")) == (1, 1)
    assert "retry" not in values(api)
    token_received, api_received = service.received
    assert_propagated(token_received, token)
    assert_propagated(api_received, api)
    assert "t0ken" not in json.dumps([token, api])


# -- a middleware that answers from a cache ------------------------------------------------------

WIRE = {"connect.start", "connect.end", "connection.reuse", "ws", "retry"}


def caching(paths: set[str]) -> Any:
    """A cache middleware: the responses of ``paths`` are kept, read, and handed out again
    without calling the handler (nothing goes on the wire, no connection signal fires)."""
    cache: dict[str, aiohttp.ClientResponse] = {}

    async def middleware(request: Any, handler: Any) -> aiohttp.ClientResponse:
        path = request.url.path
        if path in cache:
            return cache[path]
        response: aiohttp.ClientResponse = await handler(request)
        if path in paths:
            await response.read()
            cache[path] = response
        return response

    return middleware


async def fill(session: aiohttp.ClientSession, url: URL, recorder: SpanRecorder) -> None:
    """One request that puts ``url``'s response in the cache, its span taken."""
    async with session.get(url, allow_redirects=False) as response:
        await response.read()
    recorder.take_one()


async def test_a_response_from_a_cache_is_a_span_without_the_wire(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    session = make_session(session_kwargs={"middlewares": (caching({"/c"}),)})
    await fill(session, service.url / "c", recorder)

    assert await outcome(session, service.url / "c") == (200, "landed")

    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["http.path"] == "/c"
    assert WIRE.isdisjoint(values(span)), values(span)
    assert len(service.received) == 1  # only the request that filled the cache


async def test_a_cached_redirect_between_two_sent_hops_is_a_span_too(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    """/a is sent, /b's 302 comes from the cache, /c is sent: three hops, three spans, each
    with its own status; only /a and /c reached the service, each with its own span's ids."""
    session = make_session(session_kwargs={"middlewares": (caching({"/b"}),)})
    await fill(session, service.url / "b", recorder)
    del service.received[:]

    assert await outcome(session, service.url / "a") == (200, "landed")

    spans = {span["tags"]["http.path"]: span for span in recorder.take(3)}
    assert sorted(spans) == ["/a", "/b", "/c"]
    assert [spans[path]["tags"]["http.status_code"] for path in ("/a", "/b", "/c")] == [
        "302",
        "302",
        "200",
    ]
    assert WIRE.isdisjoint(values(spans["/b"])), values(spans["/b"])
    assert {span["traceId"] for span in spans.values()} == {spans["/a"]["traceId"]}
    assert len({span["id"] for span in spans.values()}) == 3
    sent_a, sent_c = service.received
    assert (sent_a.path, sent_c.path) == ("/a", "/c")
    assert_propagated(sent_a, spans["/a"])
    assert_propagated(sent_c, spans["/c"])


async def test_a_cached_final_response_after_a_redirect_is_a_span_too(
    make_session: Any, service: Service, recorder: SpanRecorder
) -> None:
    """/b is sent and redirects to /c, whose response comes from the cache: the caller got
    two responses, and sees two spans, as when /c was sent or /b came from the cache."""
    session = make_session(session_kwargs={"middlewares": (caching({"/c"}),)})
    await fill(session, service.url / "c", recorder)
    del service.received[:]

    assert await outcome(session, service.url / "b") == (200, "landed")

    spans = {span["tags"]["http.path"]: span for span in recorder.take(2)}
    assert sorted(spans) == ["/b", "/c"]
    assert spans["/b"]["tags"]["http.status_code"] == "302"
    assert spans["/c"]["tags"]["http.status_code"] == "200"
    assert WIRE.isdisjoint(values(spans["/c"])), values(spans["/c"])
    assert spans["/c"]["traceId"] == spans["/b"]["traceId"]
    assert spans["/c"]["timestamp"] >= spans["/b"]["timestamp"] + spans["/b"]["duration"]
    (sent_b,) = service.received
    assert_propagated(sent_b, spans["/b"])
