"""Real aiohttp servers on 127.0.0.1 (random ports) that record what actually arrived."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = (
    "Backend",
    "LoopbackResolver",
    "Received",
    "b3_headers",
    "raw_server",
    "refused_url",
    "start_app",
)

#: What a raw server runs for each connection it accepts.
ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    #: Path and query exactly as they arrived on the request line (still percent-encoded).
    raw_path: str = ""

    def b3(self) -> dict[str, str]:
        """The B3 headers that arrived, by lowercase name; repeated headers fail the test."""
        return b3_headers(self.headers)


def b3_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The B3 headers among ``headers`` (any mapping, a multidict too), by lowercase name.

    A name that occurs twice, in any spelling, fails the test: B3 sends each header once.
    """
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key == "b3" or key.startswith("x-b3-"):
            assert key not in found, f"header {name} arrived twice: {headers}"
            found[key] = value
    return found


@asynccontextmanager
async def start_app(
    app: web.Application, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[URL]:
    """Serve ``app`` on a random port of ``host`` (over TLS with ``ssl_context``); yields its
    base URL."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "http" if ssl_context is None else "https"
    try:
        yield URL.build(scheme=scheme, host=host, port=port)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(handler: ConnectionHandler) -> AsyncIterator[URL]:
    """Serve raw bytes: ``handler`` gets each connection's reader and writer, for answers that
    an aiohttp application cannot give (a close mid-body, no answer at all). Yields
    ``http://127.0.0.1:<port>``."""
    open_writers: set[asyncio.StreamWriter] = set()
    closing = False

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            if not closing:
                raise
        finally:
            open_writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield URL.build(scheme="http", host="127.0.0.1", port=port)
    finally:
        # Python 3.12+ waits in wait_closed() for every connection to end: a handler still
        # waiting for a request that never comes is ended here, not by its own timeout.
        closing = True
        server.close()
        for writer in list(open_writers):
            writer.close()
        await server.wait_closed()


@dataclass
class Backend:
    """A server with the routes the conformance tests need; it records every request.

    ``/ok``: 200 "ok". ``/status/{code}``: that status. ``/redirect/{n}``: redirect n more times
    then land on ``/ok``. ``/redirect-to?url=...``: one redirect to an absolute URL.
    ``/location?to=...&status=302``: a redirect whose Location header is ``to`` exactly as given,
    unchecked (hostile servers send anything); 200 "landed" without ``to``. Any other path is
    recorded and answered 404. ``/slow``:
    answers after ``slow_seconds`` or once ``released`` is set. ``/echo``: returns the body.
    """

    url: URL = field(default_factory=lambda: URL("http://127.0.0.1"))
    received: list[Received] = field(default_factory=list)
    slow_seconds: float = 5.0
    hook: Callable[[web.Request], Awaitable[None]] | None = None
    #: Set to let every pending ``/slow`` answer at once (so shutdown never waits).
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/redirect/{n}", self._redirect)
        app.router.add_route("*", "/redirect-to", self._redirect_to)
        app.router.add_route("*", "/location", self._location)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_route("*", "/echo", self._echo)
        # Last: any other path is recorded too, then answered 404.
        app.router.add_route("*", "/{path:.*}", self._not_found)
        return app

    async def _record(self, request: web.Request) -> None:
        body = await request.read()
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        self.received.append(
            Received(
                request.method, request.path, request.query_string, headers, body, request.raw_path
            )
        )
        if self.hook is not None:
            await self.hook(request)

    def take_one(self) -> Received:
        assert len(self.received) == 1, f"expected one request, got {self.received}"
        return self.received.pop()

    async def _ok(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def _redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        remaining = int(request.match_info["n"]) - 1
        target = "/ok" if remaining <= 0 else f"/redirect/{remaining}"
        raise web.HTTPFound(target)

    async def _redirect_to(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound(request.query["url"])

    async def _location(self, request: web.Request) -> web.Response:
        await self._record(request)
        if "to" not in request.query:
            return web.Response(text="landed")
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=404, text="not found")

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        with suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), self.slow_seconds)
        return web.Response(text="slow")

    async def _echo(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=self.received[-1].body)


async def refused_url() -> URL:
    """A 127.0.0.1 URL on a port that was just free: connecting to it is refused."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return URL.build(scheme="http", host="127.0.0.1", port=port, path="/ok")


class LoopbackResolver(AbstractResolver):
    """Resolves ``localhost`` (any case) to 127.0.0.1 and refuses every other name.

    For tests whose URLs come from hostile or fuzzed input: no name they make up can ever be
    looked up outside this machine. The refusal is an ``OSError``, as a failed lookup is.
    """

    def __init__(self, delay: float = 0.0) -> None:
        #: Seconds each lookup takes (a slow resolver, for phases that must last).
        self.delay = delay

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if host.lower().rstrip(".") != "localhost":
            raise OSError(f"LoopbackResolver refuses to look up {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None
