"""How a span ends when the response body does not: the caller's read failed, timed out or was
cancelled (an ``error``), or the caller let go on purpose (a plain ``response.released``).

Every test reads from a real server on 127.0.0.1 that sends the headers and the first part of
the body, then holds the rest until the test opens its gate: the read is certain to be cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import raw_server, start_app
from tests.kit.signals import gated_body_app

FIRST = b"a" * 10
REST = b"b" * 10


def values(span: dict[str, Any]) -> list[str]:
    return [a["value"] for a in span.get("annotations", [])]


@pytest.fixture
async def slow_body() -> AsyncIterator[URL]:
    """``/body`` sends its headers and 10 bytes, then the rest only at the end of the test."""
    gate = asyncio.Event()
    async with start_app(gated_body_app(gate, FIRST, REST)) as url:
        yield url / "body"
        gate.set()


@pytest.fixture
async def session(make_session: Any) -> aiohttp.ClientSession:
    s: aiohttp.ClientSession = make_session()
    return s


def assert_cut_off(span: dict[str, Any], error: str) -> None:
    """The span of a body that stopped early: status kept, ended at the release, with error."""
    assert values(span)[-1] == "response.released"
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["http.response.size"] == str(len(FIRST))
    assert span["tags"]["error"] == error


async def test_total_timeout_while_reading_the_body(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    timeout = aiohttp.ClientTimeout(total=0.15)
    with pytest.raises(asyncio.TimeoutError):
        async with session.get(slow_body, timeout=timeout) as resp:
            await resp.read()

    assert_cut_off(recorder.take_one(), "TimeoutError")


async def test_total_timeout_while_streaming_the_body(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    received: list[bytes] = []

    async def stream() -> None:
        async with session.get(slow_body, timeout=aiohttp.ClientTimeout(total=0.15)) as resp:
            async for chunk in resp.content.iter_any():
                received.append(chunk)

    with pytest.raises(asyncio.TimeoutError):
        await stream()

    assert b"".join(received) == FIRST
    assert_cut_off(recorder.take_one(), "TimeoutError")


async def test_asyncio_timeout_while_reading_the_body(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.15), session.get(slow_body) as resp:
            await resp.read()

    # asyncio.timeout cancels the read and turns the cancellation into TimeoutError only as it
    # leaves its block, after aiohttp released the body: the span sees the cancellation.
    assert_cut_off(recorder.take_one(), "CancelledError")


async def test_cancelled_while_reading_the_body(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    reading = asyncio.Event()

    async def fetch() -> bytes:
        async with session.get(slow_body) as resp:
            reading.set()  # no await between this and read(): the task is in read() next
            return await resp.read()

    task = asyncio.create_task(fetch())
    await asyncio.wait_for(reading.wait(), 5)
    recorder.expect_none()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert_cut_off(recorder.take_one(), "CancelledError")


async def test_an_error_in_the_block_cuts_the_body_off(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    async def check() -> None:
        async with session.get(slow_body) as resp:
            assert await resp.content.readexactly(len(FIRST)) == FIRST
            raise ValueError("not what we wanted")

    with pytest.raises(ValueError, match="not what we wanted"):
        await check()

    assert_cut_off(recorder.take_one(), "ValueError: not what we wanted")


async def test_leaving_the_block_with_the_body_unread_is_a_plain_release(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    async with session.get(slow_body) as resp:
        assert await resp.content.readexactly(len(FIRST)) == FIRST

    span = recorder.take_one()
    assert values(span)[-1] == "response.released"
    assert span["tags"]["http.status_code"] == "200"
    assert "error" not in span["tags"]


async def test_an_async_generator_closed_early_is_a_plain_release(
    session: aiohttp.ClientSession, slow_body: URL, recorder: SpanRecorder
) -> None:
    async def chunks() -> AsyncGenerator[bytes]:
        async with session.get(slow_body) as resp:
            async for chunk in resp.content.iter_any():
                yield chunk

    stream = chunks()
    assert await anext(stream) == FIRST
    await stream.aclose()  # GeneratorExit leaves the block: the consumer is done, not failing

    span = recorder.take_one()
    assert values(span)[-1] == "response.released"
    assert "error" not in span["tags"]


async def test_server_resetting_mid_body_is_a_lost_connection(
    session: aiohttp.ClientSession, recorder: SpanRecorder
) -> None:
    async def half_then_reset(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(FIRST) + len(REST)
        await response.prepare(request)
        await response.write(FIRST)
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/reset", half_then_reset)
    async with start_app(app) as url:

        async def fetch() -> bytes:
            async with session.get(url / "reset") as resp:
                return await resp.read()

        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch()

    span = recorder.take_one()
    assert values(span)[-1] == "connection.lost"
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["error"].startswith("ClientPayloadError: Response payload is not complete")


async def test_a_body_lost_before_our_on_request_end_is_a_lost_connection(
    tracer: Tracer, recorder: SpanRecorder
) -> None:
    """The server sends half the body and closes while another trace config's
    ``on_request_end`` still awaits: by the time ours runs the connection is already gone, so
    there is no closed future to watch and the loss must be learnt at the release."""

    async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + FIRST)
        await writer.drain()
        writer.close()

    closed = asyncio.Event()

    async def slow_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        # Until the client has seen the close (bounded, so a change of order fails, not hangs).
        connection = params.response.connection
        for _ in range(100):
            if connection is None or connection.protocol is None:
                break
            if not connection.protocol.is_connected():
                break
            await asyncio.sleep(0.01)
        closed.set()

    other = aiohttp.TraceConfig()
    other.on_request_end.append(slow_end)
    ours = aiozipkin_client.make_trace_config(tracer)
    async with (
        raw_server(half_then_close) as url,
        aiohttp.ClientSession(trace_configs=[other, ours]) as session,
        session.get(url / "body") as resp,
    ):
        assert closed.is_set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()

    span = recorder.take_one()
    assert values(span)[-1] == "connection.lost"
    assert span["tags"]["http.response.size"] == str(len(FIRST))
    assert span["tags"]["error"].startswith("ClientPayloadError")


@pytest.mark.parametrize("streamed", [False, True], ids=["read", "streamed"])
async def test_a_body_ended_by_the_servers_close_is_complete_not_lost(
    streamed: bool, session: aiohttp.ClientSession, recorder: SpanRecorder
) -> None:
    """No Content-Length, no chunks: the body ends when the server closes the connection
    (HTTP/1.1 allows it). The close is the body's end, not a lost connection, although the
    connection's closed future and the end of file come from the same close."""

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + FIRST)
        await writer.drain()
        await asyncio.sleep(0.05)  # the span must cover the body, its end included
        writer.write(REST)
        writer.close()

    async with raw_server(close_delimited) as url, session.get(url / "old-style") as resp:
        if streamed:
            body = b"".join([chunk async for chunk in resp.content.iter_any()])
        else:
            body = await resp.read()

    assert body == FIRST + REST
    span = recorder.take_one()
    assert values(span)[-1] == "wr"
    assert "error" not in span["tags"]
    assert span["tags"]["http.response.size"] == str(len(FIRST + REST))
    assert span["duration"] >= 45_000  # the 50 ms pause, read on another clock


async def test_the_body_end_ends_the_span_while_the_upload_writer_still_runs(
    session: aiohttp.ClientSession, recorder: SpanRecorder
) -> None:
    # The server answers before reading the upload. At the end of the response body aiohttp
    # cancels its body writer and releases the connection only once the writer is done, which
    # a body generator's cleanup can put off: the span ends with the body, not the release.
    gate = asyncio.Event()

    async def early_answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=413)
        response.content_length = len(FIRST) + len(REST)
        await response.prepare(request)
        await response.write(FIRST)
        await gate.wait()  # the body ends after on_request_end: it is watched
        await response.write(REST)
        return response

    app = web.Application()
    app.router.add_post("/upload", early_answer)
    writer_cancelled = asyncio.Event()
    cleanup_may_end = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        try:
            await asyncio.Event().wait()  # the rest never comes
        except asyncio.CancelledError:
            writer_cancelled.set()
            await cleanup_may_end.wait()
            raise

    async with start_app(app) as url:
        async with session.post(url / "upload", data=upload()) as resp:
            assert await resp.content.readexactly(len(FIRST)) == FIRST
            gate.set()
            assert b"".join([chunk async for chunk in resp.content.iter_any()]) == REST
            await asyncio.wait_for(writer_cancelled.wait(), 5)
            reported = recorder.take_all()  # before the writer is done and the release comes
            cleanup_may_end.set()
        await session.close()  # the server need not wait for this connection to go idle

    assert len(reported) == 1
    span = reported[0]
    assert values(span)[-1] == "wr"
    assert span["tags"]["http.status_code"] == "413"
    assert span["tags"]["http.response.size"] == str(len(FIRST) + len(REST))
    assert span["tags"]["error"] == "413"
    recorder.expect_none()
