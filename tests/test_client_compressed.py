"""Compressed response bodies: what ``http.response.size`` counts, and a body aiohttp cannot
decode.

README says the size is the body as received after decompression. aiohttp decompresses before
its body stream counts, so that is what the caller reads: the decoded size by default, the bytes
on the wire with ``auto_decompress=False``. A body that fails to decode fails the caller's read
exactly as without tracing, and its span ends with that error.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.kit.assertions import outcome
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import start_app

BODY = b"the same words again and again; " * 2000
ENCODED = {"gzip": gzip.compress(BODY), "deflate": zlib.compress(BODY)}


@pytest.fixture
async def server() -> AsyncIterator[URL]:
    """``/{encoding}``: BODY in that encoding; ``/{encoding}/broken``: its header and magic,
    then bytes that do not decode."""

    async def encoded(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        return web.Response(body=ENCODED[encoding], headers={"Content-Encoding": encoding})

    async def broken(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        body = ENCODED[encoding][:12] + b"\xff not compressed at all \xff" * 40
        return web.Response(body=body, headers={"Content-Encoding": encoding})

    app = web.Application()
    app.router.add_get("/{encoding}", encoded)
    app.router.add_get("/{encoding}/broken", broken)
    async with start_app(app) as url:
        yield url


async def read_whole(response: aiohttp.ClientResponse) -> int:
    return len(await response.read())


async def read_streamed(response: aiohttp.ClientResponse) -> int:
    size = 0
    async for chunk in response.content.iter_chunked(1000):
        size += len(chunk)
    return size


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("read", [read_whole, read_streamed], ids=["read", "streamed"])
@pytest.mark.parametrize("decompress", [True, False], ids=["decoded", "raw"])
async def test_the_size_is_what_the_caller_reads(
    encoding: str,
    read: Any,
    decompress: bool,
    make_session: Any,
    server: URL,
    recorder: SpanRecorder,
) -> None:
    session = make_session(session_kwargs={"auto_decompress": decompress})
    async with session.get(server / encoding) as response:
        size = await read(response)

    expected = BODY if decompress else ENCODED[encoding]
    assert size == len(expected)
    assert len(ENCODED[encoding]) < len(BODY) // 10  # the two sizes cannot be confused
    span = recorder.take_one()
    assert span["tags"]["http.response.size"] == str(len(expected))
    assert "error" not in span["tags"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_fails_as_without_tracing(
    encoding: str, make_session: Any, server: URL, recorder: SpanRecorder
) -> None:
    url = server / encoding / "broken"
    async with aiohttp.ClientSession() as untraced:
        expected = await outcome(untraced, url)
    got = await outcome(make_session(), url)

    assert got == expected
    assert got[0] == "ClientPayloadError"
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["error"] == f"{got[0]}: {' '.join(got[1].split())}"
    assert span["annotations"][-1]["value"] == "response.released"
