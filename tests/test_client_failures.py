"""Do no harm: failures, timeouts and cancellation end the span once, and the caller sees
exactly what aiohttp would have given it without tracing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.transport import Transport

import aiozipkin_client
from tests.kit.assertions import assert_propagated
from tests.kit.collector import running_collector
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, b3_headers, raw_server, refused_url, start_app
from tests.kit.signals import gated_body_app


@pytest.fixture
async def session(make_session: Any) -> aiohttp.ClientSession:
    s: aiohttp.ClientSession = make_session()
    return s


async def test_timeout_reaches_caller_and_ends_the_span_with_an_error(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    backend.slow_seconds = 5.0

    with pytest.raises(asyncio.TimeoutError) as raised:
        await session.get(backend.url / "slow", timeout=aiohttp.ClientTimeout(total=0.2))

    span = recorder.take_one()
    assert span["tags"]["error"].startswith(type(raised.value).__name__)
    assert "http.status_code" not in span["tags"]
    assert_propagated(backend.take_one(), span)


async def test_cancellation_is_respected_and_recorded(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> None:
        arrived.set()

    backend.hook = hook
    task = asyncio.create_task(session.get(backend.url / "slow"))
    await asyncio.wait_for(arrived.wait(), 5)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    span = recorder.take_one()
    assert span["tags"]["error"] == "CancelledError"
    assert_propagated(backend.take_one(), span)


async def test_too_many_redirects_is_the_error_of_the_last_redirect(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    with pytest.raises(aiohttp.TooManyRedirects):
        await session.get(backend.url / "redirect" / "5", max_redirects=2)

    first, second = recorder.take(2)
    assert [first["tags"]["http.path"], second["tags"]["http.path"]] == [
        "/redirect/5",
        "/redirect/4",
    ]
    assert "error" not in first["tags"]
    assert second["tags"]["http.status_code"] == "302"
    assert second["tags"]["error"].startswith("TooManyRedirects")
    assert len(backend.received) == 2


async def test_redirect_without_location_is_one_span(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    async with session.get(backend.url / "status" / "302") as resp:
        assert resp.status == 302

    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "302"
    assert "error" not in span["tags"]
    assert_propagated(backend.take_one(), span)


async def test_redirect_to_a_refused_port_fails_on_the_second_hop(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    target = await refused_url()

    with pytest.raises(aiohttp.ClientConnectorError):
        await session.get((backend.url / "redirect-to").with_query(url=str(target)))

    first, second = recorder.take(2)
    assert first["tags"]["http.status_code"] == "302"
    assert "error" not in first["tags"]
    assert second["tags"]["http.url"] == str(target)
    assert second["tags"]["error"].startswith("ClientConnectorError: ")
    assert second["traceId"] == first["traceId"]
    backend.take_one()


class ExplodingTransport(SpanRecorder):
    """A transport whose send() fails: a broken reporter must not break requests."""

    def send(self, record: Record) -> None:
        raise RuntimeError("transport exploded")


async def test_a_failing_reporter_never_changes_the_request(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    transport = ExplodingTransport()
    tracer = aiozipkin.Tracer(transport, Sampler(sample_rate=1.0), aiozipkin.create_endpoint("a"))
    config = aiozipkin_client.make_trace_config(tracer)
    async with aiohttp.ClientSession(trace_configs=[config]) as session:
        async with session.get(backend.url / "redirect" / "1") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(await refused_url())

    assert caplog.text.count("transport exploded") >= 3
    assert len(backend.received) == 2
    # aiozipkin drops the record from its table before calling the transport: nothing leaks.
    assert tracer._records == {}


FIRST, REST = b"a" * 10, b"b" * 10


async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers promising 20 bytes, 10 of them, then the connection closes."""
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + FIRST)
    await writer.drain()
    await asyncio.sleep(0.05)  # after on_request_end: the body's end is watched
    writer.close()


@pytest.mark.parametrize("end", ["complete", "released", "lost"])
async def test_a_failing_reporter_at_the_body_end_is_logged_by_us(
    end: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The span ends in one of aiohttp's callbacks (end of body, release, closed connection),
    whose own guards would swallow our error without a word or blame aiohttp for it: we log
    it, once, and the caller gets what it would have got."""
    tracer = aiozipkin.Tracer(
        ExplodingTransport(), Sampler(sample_rate=1.0), aiozipkin.create_endpoint("a")
    )
    config = aiozipkin_client.make_trace_config(tracer)
    gate = asyncio.Event()
    async with AsyncExitStack() as stack:
        if end == "lost":
            url = await stack.enter_async_context(raw_server(half_then_close))
        else:
            url = await stack.enter_async_context(start_app(gated_body_app(gate, FIRST, REST)))
        session = await stack.enter_async_context(aiohttp.ClientSession(trace_configs=[config]))
        async with session.get(url / "body") as resp:
            assert await resp.content.readexactly(len(FIRST)) == FIRST
            if end == "complete":
                gate.set()
                assert await resp.read() == REST
            elif end == "lost":
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        gate.set()

    ours = [record for record in caplog.records if record.name == "aiozipkin_client"]
    assert [record.getMessage() for record in ours] == [
        "aiozipkin_client: ending the span at the response end failed"
    ]
    assert ours[0].exc_info is not None
    assert str(ours[0].exc_info[1]) == "transport exploded"
    assert tracer._records == {}


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Any, list[tuple[dict[str, str], bytes]]]]:
    posts: list[tuple[dict[str, str], bytes]] = []

    async def spans(request: web.Request) -> web.Response:
        posts.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/v2/spans", spans)
    async with start_app(app) as url:
        yield url / "api" / "v2" / "spans", posts


@pytest.mark.parametrize(
    ("reporter", "spelled"),
    [
        ("aiozipkin", None),
        ("aiozipkin_client", None),
        # The check compares paths as URLs hold them (raw), and decodes only when an escape is
        # in play: the same path spelled with needless escapes is still the tracer's collector.
        ("aiozipkin_client", "/api/v2/%73pans"),
        ("aiozipkin_client", "/api/%76%32/spans"),
    ],
)
async def test_requests_to_the_tracers_collector_are_never_traced(
    collector: tuple[Any, list[tuple[dict[str, str], bytes]]], reporter: str, spelled: str | None
) -> None:
    url, posts = collector
    endpoint = aiozipkin.create_endpoint("a")
    tracer: aiozipkin.Tracer
    if reporter == "aiozipkin":
        transport = Transport(str(url), send_interval=0.01)
        tracer = aiozipkin.Tracer(transport, Sampler(sample_rate=1.0), endpoint)
    else:
        tracer = await aiozipkin_client.create(str(url), endpoint, sample_rate=1.0)
    config = aiozipkin_client.make_trace_config(tracer)
    target = url
    if spelled is not None:
        target = url.with_path(spelled, encoded=True)
        assert target.raw_path != url.raw_path
        assert target.path == url.path
    try:
        async with (
            aiohttp.ClientSession(trace_configs=[config]) as session,
            session.post(target, json=[]) as resp,
        ):
            assert resp.status == 202
    finally:
        await tracer.close()

    # Our own post arrived with no trace headers, and no span about it was ever posted.
    headers, body = posts[0]
    assert body == b"[]"
    assert not any(name.lower().startswith("x-b3-") for name in headers)
    assert [body for _, body in posts] == [b"[]"]


@pytest.mark.parametrize(
    ("route", "address_path"),
    [
        ("/api/v2/spans", "/api/v2/spans"),
        # An address whose path keeps an escape (yarl keeps %2B as written): requests spelling
        # it with a plain "+" are the collector's too, as its server sees the same path.
        ("/api/v2/sp+ans", "/api/v2/sp%2Bans"),
    ],
)
async def test_only_the_collectors_own_origin_and_path_are_left_untraced(
    route: str, address_path: str
) -> None:
    posts: list[tuple[dict[str, str], bytes]] = []
    elsewhere: list[dict[str, str]] = []

    async def spans(request: web.Request) -> web.Response:
        posts.append((b3_headers(request.headers), await request.read()))
        return web.Response(status=202)

    async def same_path(request: web.Request) -> web.Response:
        elsewhere.append(b3_headers(request.headers))
        return web.Response(status=202)

    collector_app, other_app = web.Application(), web.Application()
    collector_app.router.add_post(route, spans)
    other_app.router.add_post(route, same_path)
    async with start_app(collector_app) as url, start_app(other_app) as other_url:
        address = url.with_path(address_path, encoded=True)
        assert address.raw_path == address_path
        tracer = await aiozipkin_client.create(
            str(address), aiozipkin.create_endpoint("a"), sample_rate=1.0, send_interval=60
        )
        config = aiozipkin_client.make_trace_config(tracer)
        try:
            async with aiohttp.ClientSession(trace_configs=[config]) as session:
                # The collector, spelled plainly and with a query: still the collector.
                async with session.post(url.with_path(route).with_query(x="1"), json=[]) as resp:
                    assert resp.status == 202
                # Its path on another server, and another path on the collector's server.
                async with session.post(other_url.with_path(route), json=[]) as resp:
                    assert resp.status == 202
                async with session.post(url.with_path(route + "x"), json=[]) as resp:
                    assert resp.status == 404
        finally:
            await tracer.close()

    assert posts[0] == ({}, b"[]")
    assert len(elsewhere) == 1
    assert elsewhere[0]["x-b3-sampled"] == "1"
    # The tracer's one post: the spans of the two requests that were not the collector's.
    assert len(posts) == 2
    reported = json.loads(posts[1][1])
    assert sorted(span["tags"]["http.path"] for span in reported) == [route, route + "x"]
    assert {span["remoteEndpoint"]["port"] for span in reported} == {url.port, other_url.port}


async def test_a_customizer_kept_past_the_report_changes_nothing(backend: Backend) -> None:
    # A parser may keep the customizer it was given; once the span is reported, its tags and
    # annotations are the transport's, and calls made later must not reach the queued span.
    kept: list[Any] = []  # the hop itself: annotate() also takes a timestamp

    def keeping(request: aiozipkin_client.RequestView, span: Any) -> None:
        aiozipkin_client.default_request_parser(request, span)
        kept.append(span)

    async with running_collector() as spans_collector:
        async with aiozipkin_client.create(
            str(spans_collector.url),
            aiozipkin.create_endpoint("app"),
            sample_rate=1.0,
            send_interval=60,
        ) as tracer:
            config = aiozipkin_client.make_trace_config(tracer, request_parser=keeping)
            async with (
                aiohttp.ClientSession(trace_configs=[config]) as session,
                session.get(backend.url / "ok") as response,
            ):
                assert await response.text() == "ok"
            (span,) = kept
            span.annotate("late", 1.0)
            span.tag("late", "x")
            span.name("late")
        (posted,) = await spans_collector.wait_for_spans(1)

    assert posted["name"] == "get"
    assert "late" not in posted["tags"]
    assert "late" not in [annotation["value"] for annotation in posted["annotations"]]
