"""Every aiohttp client signal, provoked for real, lands on its own request's span.

Each test asserts the exact annotation sequence and the derived tags. Tests synchronise on
aiohttp's own signals (through an independent observer TraceConfig) or on gates they control,
never on sleeps.
"""

from __future__ import annotations

import array
import asyncio
import gc
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from aiozipkin_client._compat import SIGNALS_CLOSE
from aiozipkin_client._state import Hop, TraceConfigContext
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, LoopbackResolver, raw_server, refused_url, start_app
from tests.kit.signals import GatedResolver, Observer, gated_body_app

MS = re.compile(r"\d+\.\d{3}")
Factory = Callable[..., aiohttp.ClientSession]


def values(span: dict[str, Any]) -> list[str]:
    """The span's annotation values, in time order (as reported)."""
    stamps = [a["timestamp"] for a in span.get("annotations", [])]
    assert stamps == sorted(stamps)
    return [a["value"] for a in span.get("annotations", [])]


@pytest.fixture
async def sessions(tracer: Tracer) -> AsyncIterator[Factory]:
    """``sessions(connector=..., observer=..., **options)``: traced sessions closed at the end."""
    async with AsyncExitStack() as stack:

        def factory(
            *,
            connector: aiohttp.BaseConnector | None = None,
            observer: Observer | None = None,
            **options: Any,
        ) -> aiohttp.ClientSession:
            configs = [aiozipkin_client.make_trace_config(tracer, **options)]
            if observer is not None:
                configs.append(observer.config)
            session = aiohttp.ClientSession(connector=connector, trace_configs=configs)
            stack.push_async_callback(session.close)
            return session

        yield factory


def ipv4_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    # IPv4 only: "localhost" resolves to 127.0.0.1 and nothing else is ever tried.
    return aiohttp.TCPConnector(family=socket.AF_INET, **kwargs)


def on_localhost(url: URL) -> URL:
    return url.with_host("localhost")


async def read(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> bytes:
    async with session.get(url, **kwargs) as resp:
        return await resp.read()


# -- connection create, DNS and reuse ---------------------------------------------------------


async def test_new_connection_with_dns_cache_miss_then_reuse(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session = sessions(connector=ipv4_connector())
    url = on_localhost(backend.url) / "ok"

    await read(session, url)
    await read(session, url)

    first, second = recorder.take(2)
    assert values(first) == [
        "connect.start",
        "dns.cache.miss",
        "dns.start",
        "dns.end",
        "connect.end",
        "ws",
        "wr",
    ]
    assert first["tags"]["connection.reused"] == "false"
    assert first["tags"]["dns.cache"] == "miss"
    assert MS.fullmatch(first["tags"]["dns.resolve_ms"])
    assert MS.fullmatch(first["tags"]["connection.connect_ms"])
    assert float(first["tags"]["dns.resolve_ms"]) <= float(first["tags"]["connection.connect_ms"])
    assert values(second) == ["connection.reuse", "ws", "wr"]
    assert second["tags"]["connection.reused"] == "true"
    for tag in ("dns.cache", "dns.resolve_ms", "connection.connect_ms"):
        assert tag not in second["tags"]
    assert len(backend.received) == 2


async def test_dns_cache_hit_on_a_new_connection(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session = sessions(connector=ipv4_connector(force_close=True))
    url = on_localhost(backend.url) / "ok"

    await read(session, url)
    await read(session, url)

    first, second = recorder.take(2)
    assert first["tags"]["dns.cache"] == "miss"
    assert values(second) == ["connect.start", "dns.cache.hit", "connect.end", "ws", "wr"]
    assert second["tags"]["dns.cache"] == "hit"
    assert "dns.resolve_ms" not in second["tags"]
    assert len(backend.received) == 2


async def test_dns_cache_off_resolves_in_the_request(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session = sessions(connector=ipv4_connector(use_dns_cache=False))

    await read(session, on_localhost(backend.url) / "ok")

    span = recorder.take_one()
    assert values(span) == ["connect.start", "dns.start", "dns.end", "connect.end", "ws", "wr"]
    assert "dns.cache" not in span["tags"]
    assert MS.fullmatch(span["tags"]["dns.resolve_ms"])
    backend.take_one()


async def test_ip_literal_has_no_dns_events(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    await read(sessions(), backend.url / "ok")

    span = recorder.take_one()
    assert values(span) == ["connect.start", "connect.end", "ws", "wr"]
    backend.take_one()


def gated_lookup(
    sessions: Factory, backend: Backend
) -> tuple[aiohttp.ClientSession, GatedResolver, Observer, URL]:
    """A session whose lookups of ``localhost`` wait for the resolver's gate, and its URL."""
    resolver = GatedResolver()
    observer = Observer()
    session = sessions(connector=ipv4_connector(resolver=resolver), observer=observer)
    return session, resolver, observer, on_localhost(backend.url) / "ok"


async def test_concurrent_requests_share_one_resolution(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session, resolver, observer, url = gated_lookup(sessions, backend)

    first = asyncio.create_task(read(session, url))
    await observer.wait("on_dns_resolvehost_start")
    second = asyncio.create_task(read(session, url))
    await observer.wait("on_dns_cache_hit")
    resolver.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)

    assert resolver.calls == 1
    spans = recorder.take(2)
    by_events = sorted((values(s) for s in spans), key=len)
    assert by_events == [
        ["connect.start", "dns.cache.hit", "connect.end", "ws", "wr"],
        ["connect.start", "dns.cache.miss", "dns.start", "dns.end", "connect.end", "ws", "wr"],
    ]
    assert len(backend.received) == 2


async def test_dns_events_after_the_request_was_cancelled_are_dropped(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    # The lookup runs in aiohttp's own task and outlives the request that started it; its end
    # event must neither reopen that request's span nor land on the request that joined it.
    session, resolver, observer, url = gated_lookup(sessions, backend)

    starter = asyncio.create_task(read(session, url))
    await observer.wait("on_dns_resolvehost_start")
    starter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starter
    cancelled = recorder.take_one()
    joiner = asyncio.create_task(read(session, url))
    await observer.wait("on_dns_cache_hit")
    resolver.gate.set()
    await asyncio.wait_for(joiner, 5)
    await observer.wait("on_dns_resolvehost_end")

    assert values(cancelled) == ["connect.start", "dns.cache.miss", "dns.start"]
    assert cancelled["tags"]["error"] == "CancelledError"
    joined = recorder.take_one()
    assert values(joined) == ["connect.start", "dns.cache.hit", "connect.end", "ws", "wr"]
    assert "error" not in joined["tags"]
    backend.take_one()


# -- queueing ---------------------------------------------------------------------------------


async def queued_behind_slow(
    sessions: Factory, backend: Backend
) -> tuple[asyncio.Task[bytes], asyncio.Task[bytes]]:
    """A pool of one: ``/slow`` holds the connection, ``/ok`` waits in aiohttp's queue for it."""
    observer = Observer()
    session = sessions(connector=aiohttp.TCPConnector(limit=1), observer=observer)
    holder = asyncio.create_task(read(session, backend.url / "slow"))
    await observer.wait("on_request_headers_sent")
    waiter = asyncio.create_task(read(session, backend.url / "ok"))
    await observer.wait("on_connection_queued_start")
    return holder, waiter


async def test_waiting_for_a_free_connection_is_recorded(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    holder, waiter = await queued_behind_slow(sessions, backend)
    backend.released.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)

    held, queued = recorder.take(2)
    assert held["tags"]["http.path"] == "/slow"
    assert values(held) == ["connect.start", "connect.end", "ws", "wr"]
    assert values(queued) == ["queue.start", "queue.end", "connection.reuse", "ws", "wr"]
    assert MS.fullmatch(queued["tags"]["connection.queue_ms"])
    assert queued["tags"]["connection.reused"] == "true"
    assert "connection.queue_ms" not in held["tags"]
    assert len(backend.received) == 2


# -- bodies -----------------------------------------------------------------------------------


async def upload_counting_app(sizes: list[int]) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        sizes.append(total)
        return web.Response(text=str(total))

    app = web.Application(client_max_size=0)
    app.router.add_post("/upload", upload)
    return app


@pytest.mark.parametrize(("chunks", "chunk_size"), [(3, 1024), (16_384, 65_536)])
async def test_streamed_upload_is_bounded(
    sessions: Factory, recorder: SpanRecorder, chunks: int, chunk_size: int
) -> None:
    # The large case streams 1 GiB: still four body-related values, whatever the chunk count.
    sizes: list[int] = []
    block = b"x" * chunk_size

    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield block

    async with start_app(await upload_counting_app(sizes)) as url:
        session = sessions()
        async with session.post(url / "upload", data=body()) as resp:
            assert await resp.text() == str(chunks * chunk_size)

    span = recorder.take_one()
    assert sizes == [chunks * chunk_size]
    assert span["tags"]["http.request.size"] == str(chunks * chunk_size)
    assert values(span) == [
        "connect.start",
        "connect.end",
        "ws",
        "request.body.start",
        "request.body.end",
        "wr",
    ]


async def test_request_body_annotations_are_the_first_and_the_last_chunk(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    """``request.body.start`` is when the first chunk went out, ``request.body.end`` the last;
    the pauses of a slow upload fall between them."""
    sizes: list[int] = []
    made: list[int] = []  # when each chunk was made, in the spans' clock (µs)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(3):
            made.append(int(time.time() * 1_000_000))
            yield b"x" * 100
            await asyncio.sleep(0.03)

    async with start_app(await upload_counting_app(sizes)) as url:
        session = sessions()
        async with session.post(url / "upload", data=body()) as resp:
            assert await resp.text() == "300"

    span = recorder.take_one()
    stamps = {a["value"]: a["timestamp"] for a in span["annotations"]}
    # The first chunk went out before the second was made; the last, after it was made.
    assert stamps["request.body.start"] < made[1], (stamps, made)
    assert stamps["request.body.end"] >= made[2], (stamps, made)
    assert stamps["ws"] <= stamps["request.body.start"]
    assert stamps["request.body.end"] <= stamps["wr"]


@pytest.mark.skipif(
    not hasattr(aiohttp, "UploadTracker"), reason="aiohttp's UploadTracker arrived in 3.14"
)
async def test_an_upload_tracker_reads_the_same_with_tracing(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    """aiohttp 3.14's ``upload_tracker`` watches the same body writer our chunk signal does:
    what it reports is unchanged by tracing, and agrees with the span."""
    sizes: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 4096

    async def upload(session: aiohttp.ClientSession) -> tuple[int, int, bool]:
        tracker = aiohttp.UploadTracker()
        async with session.post(url / "upload", data=body(), upload_tracker=tracker) as resp:
            assert await resp.text() == "16384"
        await asyncio.wait_for(tracker.upload_complete, 5)
        return tracker.attempts, tracker.bytes_written, tracker.upload_complete.done()

    async with start_app(await upload_counting_app(sizes)) as url:
        async with aiohttp.ClientSession() as untraced:
            expected = await upload(untraced)
        got = await upload(sessions())

    assert got == expected == (1, 16384, True)
    assert sizes == [16384, 16384]
    assert recorder.take_one()["tags"]["http.request.size"] == "16384"


def wide_view() -> memoryview:
    # 1,000 items of 4 bytes: len() says 1,000, the wire carries 4,000 bytes.
    return memoryview(array.array("I", range(1000)))


async def mixed_chunks() -> AsyncIterator[bytes | bytearray | memoryview]:
    yield wide_view()
    yield bytearray(b"z" * 10)
    yield b"y" * 7


@pytest.mark.parametrize(
    ("make_body", "size"),
    [
        (lambda: b"x" * 5000, 5000),
        (lambda: bytearray(b"x" * 3000), 3000),
        (lambda: memoryview(b"x" * 2000), 2000),
        (wide_view, 4000),
        (mixed_chunks, 4017),
    ],
    ids=["bytes", "bytearray", "memoryview", "wide-memoryview", "streamed-mixed"],
)
async def test_request_size_counts_the_bytes_sent(
    sessions: Factory, recorder: SpanRecorder, make_body: Callable[[], object], size: int
) -> None:
    # aiohttp reports each chunk as the object it wrote: the size is in bytes, whatever its type.
    sizes: list[int] = []
    async with start_app(await upload_counting_app(sizes)) as url:
        resp = await sessions().post(url / "upload", data=make_body())
        assert await resp.text() == str(size)

    span = recorder.take_one()
    assert sizes == [size]
    assert span["tags"]["http.request.size"] == str(size)
    assert "request.body.start" in values(span)
    assert "request.body.end" in values(span)


async def test_large_download_read_at_once(sessions: Factory, recorder: SpanRecorder) -> None:
    payload = b"y" * (8 * 1024 * 1024)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    app = web.Application()
    app.router.add_get("/big", big)
    async with start_app(app) as url:
        body = await read(sessions(), url / "big")

    assert len(body) == len(payload)
    span = recorder.take_one()
    assert span["tags"]["http.response.size"] == str(len(payload))
    # read() reports its chunk only after the body is complete, when the span already ended.
    assert values(span) == ["connect.start", "connect.end", "ws", "wr"]


async def test_streamed_download_span_ends_when_the_body_does(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    gate = asyncio.Event()
    first, rest = b"a" * 1000, b"b" * 250_000
    async with start_app(gated_body_app(gate, first, rest)) as url:
        session = sessions()
        async with session.get(url / "body") as resp:
            received = await resp.content.readexactly(len(first))
            recorder.expect_none()  # headers are in, the body is not: the span is still open
            gate.set()
            async for chunk in resp.content.iter_chunked(4096):
                received += chunk
            span = recorder.take_one()  # the last byte arrived: reported before release
        assert received == first + rest

    assert span["tags"]["http.response.size"] == str(len(first) + len(rest))
    assert values(span) == ["connect.start", "connect.end", "ws", "wr"]
    wr = span["annotations"][-1]["timestamp"]
    assert span["timestamp"] + span["duration"] > wr


async def test_body_released_unread_ends_the_span(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    gate = asyncio.Event()
    async with start_app(gated_body_app(gate, b"a" * 10, b"b" * 10)) as url:
        session = sessions()
        resp = await session.get(url / "body")
        recorder.expect_none()
        resp.release()
        gate.set()

    span = recorder.take_one()
    assert values(span) == ["connect.start", "connect.end", "ws", "wr", "response.released"]
    assert "error" not in span["tags"]
    assert span["tags"]["http.status_code"] == "200"


# Dropping a response without releasing it is a bug aiohttp warns about (ResourceWarning, from
# a finaliser): expected here, where it is the point.
DROPPED = pytest.param(
    "drop",
    marks=[
        pytest.mark.filterwarnings("ignore:Unclosed connection:ResourceWarning"),
        pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    ],
)


@pytest.mark.parametrize("then", ["release", DROPPED])
async def test_unread_body_span_ends_when_the_session_closes(
    tracer: Tracer, recorder: SpanRecorder, then: str
) -> None:
    gate = asyncio.Event()
    async with start_app(gated_body_app(gate, b"a" * 10, b"b" * 10)) as url:
        config = aiozipkin_client.make_trace_config(tracer)
        session = aiohttp.ClientSession(trace_configs=[config])
        resp = await session.get(url / "body")
        recorder.expect_none()
        await session.close()
        gate.set()
        if SIGNALS_CLOSE:
            # aiohttp 3.12+ says when a connection closes: the span ends then.
            await recorder.wait_for(1)
        # Before 3.12 nothing says so; the span ends when the response is let go of, and that
        # is when the closed connection is noticed.
        if then == "release":
            resp.release()
        else:
            del resp
            gc.collect()

    span = recorder.take_one()
    assert values(span)[-1] == "connection.lost"
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["error"].startswith("Client")


async def test_empty_body_ends_at_the_response_headers(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session = sessions()
    resp = await session.head(backend.url / "ok")
    # No body to wait for: reported before the caller does anything else.
    span = recorder.take_one()
    resp.release()

    assert span["name"] == "head"
    assert span["tags"]["http.response.size"] == "0"
    assert values(span) == ["connect.start", "connect.end", "ws", "wr"]
    backend.take_one()


# -- redirects, failures ----------------------------------------------------------------------


async def test_redirect_hops_have_their_own_events(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    await read(sessions(), backend.url / "redirect" / "1")

    first, second = recorder.take(2)
    assert values(first) == ["connect.start", "connect.end", "ws", "wr", "redirect"]
    assert values(second) == ["connection.reuse", "ws", "wr"]
    assert first["tags"]["connection.reused"] == "false"
    assert second["tags"]["connection.reused"] == "true"
    assert len(backend.received) == 2


async def test_refused_connection_events(sessions: Factory, recorder: SpanRecorder) -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        await sessions().get(await refused_url())

    span = recorder.take_one()
    assert values(span) == ["connect.start"]
    assert span["tags"]["connection.reused"] == "false"
    assert "connection.connect_ms" not in span["tags"]


async def test_read_timeout_events(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await sessions().get(backend.url / "slow", timeout=aiohttp.ClientTimeout(sock_read=0.1))

    span = recorder.take_one()
    assert values(span) == ["connect.start", "connect.end", "ws"]
    assert span["tags"]["error"].startswith("SocketTimeoutError")
    backend.take_one()


async def test_cancelled_while_queued(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    holder, waiter = await queued_behind_slow(sessions, backend)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    cancelled = recorder.take_one()
    backend.released.set()
    await asyncio.wait_for(holder, 5)

    assert values(cancelled) == ["queue.start"]
    assert cancelled["tags"]["error"] == "CancelledError"
    assert recorder.take_one()["tags"]["http.path"] == "/slow"
    assert len(backend.received) == 1


async def test_a_dead_pooled_connection_is_retried_within_the_span(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    """aiohttp sends an idempotent request again, on a fresh connection, when the pooled
    connection it took turns out to be closed (here: the server reads the second request on a
    keep-alive connection and hangs up without answering). One span: ``retry`` between the
    attempts, the same ids on both, the answer of the second."""
    arrivals: list[tuple[int, dict[str, str]]] = []
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        try:
            for request in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = dict(line.split(": ", 1) for line in lines if line)
                arrivals.append((number, {k.lower(): v for k, v in headers.items()}))
                if number == 1 and request == 1:
                    return  # the second request on the first connection: hang up
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    async with raw_server(serve) as url:
        session = sessions()
        assert await read(session, url / "first") == b"ok"
        assert await read(session, url / "second") == b"ok"

    first, second = recorder.take(2)
    assert values(first) == ["connect.start", "connect.end", "ws", "wr"]
    assert values(second) == [
        "connection.reuse",
        "ws",
        "retry",
        "connect.start",
        "connect.end",
        "ws",
        "wr",
    ]
    assert second["tags"]["http.status_code"] == "200"
    assert "error" not in second["tags"]
    assert second["tags"]["connection.reused"] == "false"  # the attempt that answered
    # Both attempts of the second request carried its ids; the first request's, its own.
    assert [number for number, _ in arrivals] == [1, 1, 2]
    ids = [(h["x-b3-traceid"], h["x-b3-spanid"]) for _, h in arrivals]
    assert ids == [(first["traceId"], first["id"])] + [(second["traceId"], second["id"])] * 2


async def test_connect_ms_adds_up_every_attempt_in_milliseconds(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    """The server drops the first connection unanswered; aiohttp connects again. Each connect
    takes 30 ms or more (the resolver's delay), and ``connection.connect_ms`` is both together."""
    connections = 0

    async def drop_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if connections > 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        finally:
            writer.close()

    async with raw_server(drop_first) as url:
        session = sessions(
            connector=aiohttp.TCPConnector(
                resolver=LoopbackResolver(delay=0.03), use_dns_cache=False
            )
        )
        assert await read(session, url.with_host("localhost") / "x") == b"ok"

    assert connections == 2
    span = recorder.take_one()
    assert "retry" in values(span)
    starts = [a["timestamp"] for a in span["annotations"] if a["value"] == "connect.start"]
    ends = [a["timestamp"] for a in span["annotations"] if a["value"] == "connect.end"]
    assert len(starts) == len(ends) == 2
    total_ms = sum(end - start for start, end in zip(starts, ends, strict=True)) / 1000
    assert total_ms >= 60
    assert float(span["tags"]["connection.connect_ms"]) == pytest.approx(total_ms, abs=0.05)


async def test_an_annotation_repeated_at_one_instant_is_kept_once(
    tracer: Tracer, backend: Backend, recorder: SpanRecorder
) -> None:
    """Zipkin wants each annotation once: the same value at the same microsecond twice is one."""

    def parser(request: aiozipkin_client.RequestView, span: Any) -> None:
        aiozipkin_client.default_request_parser(request, span)
        span.annotate("cache.lookup", 1_700_000_000.5)
        span.annotate("cache.lookup", 1_700_000_000.5)

    config = aiozipkin_client.make_trace_config(tracer, request_parser=parser)
    async with aiohttp.ClientSession(trace_configs=[config]) as session:
        assert await read(session, backend.url / "ok") == b"ok"

    assert values(recorder.take_one()).count("cache.lookup") == 1
    backend.take_one()


# -- connection phases as child spans ---------------------------------------------------------


async def test_connection_phases_as_child_spans(
    sessions: Factory, backend: Backend, recorder: SpanRecorder
) -> None:
    session = sessions(connector=ipv4_connector(), connection_phases="spans")

    await read(session, on_localhost(backend.url) / "ok")

    client, *children = recorder.take(3)
    assert values(client) == ["dns.cache.miss", "ws", "wr"]
    assert MS.fullmatch(client["tags"]["dns.resolve_ms"])
    names = [child["name"] for child in children]
    assert names == ["dns resolve", "connect"]
    start, end = client["timestamp"], client["timestamp"] + client["duration"]
    for child in children:
        assert child["traceId"] == client["traceId"]
        assert child["parentId"] == client["id"]
        assert "kind" not in child
        assert start <= child["timestamp"] <= child["timestamp"] + child["duration"] <= end
    dns, connect = children
    assert connect["timestamp"] <= dns["timestamp"]
    assert dns["timestamp"] + dns["duration"] <= connect["timestamp"] + connect["duration"]
    backend.take_one()


async def test_a_phase_cut_short_as_a_child_span_carries_the_error(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    """Connecting to a port nobody listens on: the connect phase never ends, so its child span
    ends with the request and says why."""
    session = sessions(connection_phases="spans")

    with pytest.raises(aiohttp.ClientConnectorError):
        await read(session, await refused_url())

    client, connect = recorder.take(2)
    assert connect["name"] == "connect"
    assert connect["parentId"] == client["id"]
    assert client["tags"]["error"].startswith("ClientConnectorError: ")
    assert connect["tags"] == {"error": client["tags"]["error"]}


def test_connection_phases_option_is_checked(tracer: Tracer) -> None:
    with pytest.raises(ValueError, match='connection_phases must be "annotations" or "spans"'):
        aiozipkin_client.make_trace_config(tracer, connection_phases="bars")  # type: ignore[arg-type]


# -- nothing kept -----------------------------------------------------------------------------


async def test_no_request_state_outlives_its_request(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    # Bodies still streaming at the response headers attach callbacks to the keep-alive
    # connection; they must all be gone once each span is reported.
    gate = asyncio.Event()
    async with start_app(gated_body_app(gate, b"a" * 1000, b"b" * 200_000)) as url:
        session = sessions()
        for _ in range(20):
            async with session.get(url / "body") as resp:
                gate.set()
                assert len(await resp.read()) == 201_000
        del resp  # the test's own reference; ours must be gone by themselves
        spans = recorder.take(20)
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Hop)]
        # A request's context may outlive it (aiohttp keeps its traces on the response) but
        # holds no hop once the span is reported.
        holding = [
            o
            for o in gc.get_objects()
            if isinstance(o, TraceConfigContext) and (o.hop is not None or o.previous is not None)
        ]

    assert alive == []
    assert holding == []
    assert [s["tags"]["connection.reused"] for s in spans] == ["false"] + ["true"] * 19
    assert values(spans[0])[-1] == "wr"


# -- protocol upgrade -------------------------------------------------------------------------


async def test_websocket_upgrade_ends_the_span_at_101(
    sessions: Factory, recorder: SpanRecorder
) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    async with start_app(app) as url, sessions().ws_connect(url / "ws") as ws:
        # The exchange was the upgrade: reported now, not when the socket closes.
        span = recorder.take_one()
        await ws.send_str("ping")
        assert (await ws.receive_str()) == "ping"

    assert span["tags"]["http.status_code"] == "101"
    assert values(span) == ["connect.start", "connect.end", "ws", "wr"]
    assert "error" not in span["tags"]
