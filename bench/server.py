"""The other side of the benchmark: the HTTP server under test and a Zipkin collector.

Both run in one child process, pinned to its own CPU when the machine has more than one, so the
client process measures only its own work. The server answers:

* ``GET /items/{id}``: a small body (64 bytes);
* ``GET /blobs/{id}``: 1 MiB;
* ``POST /uploads/{id}``: reads the (streamed) body, answers its size;
* ``POST /api/v2/spans``: the collector; counts spans, tags, annotations and bytes;
* ``GET /_stats``: the collector's counters since the previous call (then resets them).

The collector parses every body it receives (gunzipping when asked), so a tracer whose spans
never arrive, or arrive malformed, shows up in the report as missing spans.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Final

from aiohttp import web

__all__ = ("SPANS_PATH", "CollectorStats", "pin_to_cpu", "serve")

SPANS_PATH: Final = "/api/v2/spans"
SMALL_BODY: Final = b'{"id":42,"name":"widget","price":"9.99","stock":17,"tags":["a","b"]}'[:64]
LARGE_BODY: Final = os.urandom(1024 * 1024)


@dataclass
class CollectorStats:
    """What the collector received since it was last asked."""

    posts: int = 0
    spans: int = 0
    tags: int = 0
    annotations: int = 0
    #: JSON bytes after gunzipping, and bytes as they came over the wire.
    json_bytes: int = 0
    wire_bytes: int = 0
    #: Bodies that were not a JSON list of spans.
    invalid_posts: int = 0


def pin_to_cpu(cpu: int) -> bool:
    """Run this process on ``cpu`` only, when the machine has it; True if pinned."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    available = os.sched_getaffinity(0)
    if cpu not in available or len(available) < 2:
        return False
    os.sched_setaffinity(0, {cpu})
    return True


def make_app(stats: Callable[[], CollectorStats], reset: Callable[[], None]) -> web.Application:
    async def item(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, content_type="application/json")

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=LARGE_BODY, content_type="application/octet-stream")

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(text=str(size))

    async def collect(request: web.Request) -> web.Response:
        wire = await request.read()
        current = stats()
        current.posts += 1
        current.wire_bytes += len(wire)
        try:
            body = (
                gzip.decompress(wire) if request.headers.get("Content-Encoding") == "gzip" else wire
            )
            spans = json.loads(body)
            if not isinstance(spans, list):
                raise ValueError("not a list")
        except ValueError:
            current.invalid_posts += 1
            return web.Response(status=400)
        current.json_bytes += len(body)
        current.spans += len(spans)
        for span in spans:
            current.tags += len(span.get("tags") or ())
            current.annotations += len(span.get("annotations") or ())
        return web.Response(status=202)

    async def read_stats(request: web.Request) -> web.Response:
        answer = web.json_response(asdict(stats()))
        reset()
        return answer

    app = web.Application()
    app.router.add_get("/items/{id}", item)
    app.router.add_get("/blobs/{id}", blob)
    app.router.add_post("/uploads/{id}", upload)
    app.router.add_post(SPANS_PATH, collect)
    app.router.add_get("/_stats", read_stats)
    return app


async def _serve(conn: Connection, cpu: int) -> None:
    pinned = pin_to_cpu(cpu)
    current = CollectorStats()

    def reset() -> None:
        nonlocal current
        current = CollectorStats()

    # auto_decompress=False: count the bytes as posted, and gunzip them here.
    runner = web.AppRunner(make_app(lambda: current, reset), access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    conn.send((port, pinned))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # The parent closes its end of the pipe (or sends anything) to stop us.
    loop.add_reader(conn.fileno(), stop.set)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await runner.cleanup()


def serve(conn: Connection, cpu: int) -> None:
    """Child-process entry point: serve on 127.0.0.1, send ``(port, pinned)`` back, run until
    the parent writes to or closes ``conn``."""
    asyncio.run(_serve(conn, cpu))
