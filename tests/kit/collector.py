"""A strict, switchable Zipkin collector on 127.0.0.1 for the reporting tests.

It validates *every* body it receives (gunzipped when ``Content-Encoding: gzip``) with
:func:`kit.schema.validate_spans` and answers 400 to an invalid one, as a strict backend does;
invalid bodies are kept in :attr:`Collector.invalid` so that a test can fail on them. Spans are
recorded only when the collector answers 202, so "delivered" means exactly what a client sees.

The collector's behaviour is switched at run time with :meth:`Collector.set_mode`: accept, be
down (port closed), be slow, answer 500, 503, 429 or 400, or reset the connection.

Its port is bound when the object is built, before any event loop runs, so a client can be
configured with :attr:`Collector.url` first; the port stays the same across down/up.
"""

from __future__ import annotations

import asyncio
import enum
import gzip
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from aiozipkin_client.reporting import ZipkinTransport

from .schema import validate_spans

__all__ = (
    "SPANS_PATH",
    "Collector",
    "Mode",
    "ReceivedPost",
    "running_collector",
    "transports_for",
    "wait_until",
)

SPANS_PATH: Final = "/api/v2/spans"


class Mode(enum.Enum):
    """How the collector answers the next POST."""

    OK = "ok"  # 202 Accepted, spans recorded
    DOWN = "down"  # port closed: connection refused
    SLOW = "slow"  # holds the request for Collector.slow_delay seconds, then behaves like OK
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"  # with Collector.retry_after as Retry-After, if set
    TOO_MANY_REQUESTS = "429"  # with Collector.retry_after as Retry-After, if set
    BAD_REQUEST = "400"
    RESET = "reset"  # reads the body, then aborts the connection without answering


_STATUS: Final = {
    Mode.SERVER_ERROR: 500,
    Mode.UNAVAILABLE: 503,
    Mode.TOO_MANY_REQUESTS: 429,
    Mode.BAD_REQUEST: 400,
}


@dataclass(frozen=True)
class ReceivedPost:
    """One POST as the collector saw it, whatever it answered."""

    mode: Mode
    headers: CIMultiDictProxy[str]
    body: bytes  # as received, possibly gzipped
    spans: list[dict[str, Any]]  # decoded; empty when the body was not valid JSON
    status: int | None  # what the collector answered; None for a reset or a client gone


class Collector:
    """The collector: build, ``await start()``, use :attr:`url`, ``await stop()``."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = _bound_socket(0)
        self.port: int = self._sock.getsockname()[1]
        self.url: URL = URL.build(scheme="http", host="127.0.0.1", port=self.port, path=SPANS_PATH)
        self.mode = Mode.OK
        #: Seconds a SLOW answer is held (cut short by set_mode() and stop()).
        self.slow_delay = 30.0
        #: Retry-After sent with 429 and 503, when not None.
        self.retry_after: str | None = None
        #: POSTs whose body was read, answered or not yet (a SLOW one is held before its answer).
        self.arrived = 0
        #: Every POST once answered (or abandoned), in that order.
        self.posts: list[ReceivedPost] = []
        #: Spans of the accepted POSTs, in arrival order.
        self.spans: list[dict[str, Any]] = []
        #: Why each invalid body was refused; a test should end with this empty.
        self.invalid: list[str] = []
        self._runner: web.AppRunner | None = None
        #: SLOW requests being held right now.
        self._held: list[web.Request] = []
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()

    async def start(self) -> None:
        """Listen (again) on :attr:`port`."""
        if self._runner is not None:
            return
        sock = self._sock or _bound_socket(self.port)
        self._sock = None  # the server owns it from now on
        app = web.Application()
        app.router.add_post(SPANS_PATH, self._handle_post)
        app.router.add_get("/ping", self._handle_ping)
        # auto_decompress=False: see the body exactly as it was sent, and gunzip it here.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, auto_decompress=False)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Close the port and every open connection; idempotent."""
        self._release_held()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; held SLOW requests are released, DOWN closes the port."""
        self.mode = mode
        self._release_held()
        if mode is Mode.DOWN:
            await self.stop()
        else:
            await self.start()

    async def wait_for_spans(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The accepted spans once there are at least ``count``; fails after ``within`` s."""
        await self._wait(lambda: len(self.spans) >= count, within)
        return list(self.spans)

    async def wait_for_posts(self, count: int, within: float = 10.0) -> list[ReceivedPost]:
        """The answered POSTs once there are at least ``count``; fails after ``within`` s."""
        await self._wait(lambda: len(self.posts) >= count, within)
        return list(self.posts)

    async def wait_for_arrivals(self, count: int, within: float = 10.0) -> None:
        """Until ``count`` POST bodies were read (SLOW ones are then being held)."""
        await self._wait(lambda: self.arrived >= count, within)

    def held_abandoned(self) -> int:
        """How many held SLOW requests the client has already given up on (closed)."""
        return sum(1 for r in self._held if r.transport is None or r.transport.is_closing())

    def ping_url(self) -> URL:
        """A URL the collector always answers at once with 200 (while not DOWN)."""
        return self.url.with_path("/ping")

    async def _wait(self, ready: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(ready)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _release_held(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    async def _handle_ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        body = await request.read()
        self.arrived += 1
        await self._notify()
        spans, problem = _decode(request, body)
        if problem is not None:
            self.invalid.append(problem)
            return await self._answer(request, mode, body, spans, 400)
        if mode is Mode.SLOW:
            release = self._release
            self._held.append(request)
            try:
                async with asyncio.timeout(self.slow_delay):
                    await release.wait()
            except TimeoutError:
                pass
            finally:
                self._held.remove(request)
            if request.transport is None or request.transport.is_closing():
                # The client gave up: as far as it knows, nothing was delivered.
                return await self._answer(request, mode, body, spans, None)
            return await self._answer(request, mode, body, spans, 202)
        if mode is Mode.RESET:
            if request.transport is not None:
                request.transport.abort()
            return await self._answer(request, mode, body, spans, None)
        return await self._answer(request, mode, body, spans, _STATUS.get(mode, 202))

    async def _answer(
        self,
        request: web.Request,
        mode: Mode,
        body: bytes,
        spans: list[dict[str, Any]],
        status: int | None,
    ) -> web.StreamResponse:
        self.posts.append(ReceivedPost(mode, request.headers, body, spans, status))
        if status == 202:
            self.spans.extend(spans)
        await self._notify()
        if status is None:
            # No answer: the connection is gone; aiohttp just closes this handler's request.
            raise web.HTTPServiceUnavailable()
        headers = {}
        if status in (429, 503) and self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.Response(
            status=status, headers=headers, text="" if status == 202 else mode.value
        )


@asynccontextmanager
async def running_collector() -> AsyncIterator[Collector]:
    """A started :class:`Collector`, stopped on exit; fails if it received an invalid body."""
    collector = Collector()
    await collector.start()
    try:
        yield collector
    finally:
        await collector.stop()
    assert collector.invalid == [], collector.invalid


def _decode(request: web.Request, body: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The spans in ``body`` and, when the body is not acceptable, why."""
    if request.content_type != "application/json":
        return [], f"Content-Type is {request.content_type!r}, not application/json"
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding != "identity":
            return [], f"unexpected Content-Encoding {encoding!r}"
        decoded = json.loads(body.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        return [], f"undecodable body ({exc!r}): {body[:200]!r}"
    try:
        validate_spans(decoded)
    except AssertionError as exc:
        return [], str(exc)
    return decoded, None


def _bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Lets the port be bound again right after DOWN, despite connections in TIME_WAIT.
        # Not listening yet: until start(), connecting is refused, as when DOWN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms until true; fails after ``within`` s.

    For state with no event to wait on (a transport's counters); bounded in count and time.
    """
    for _ in range(max(1, round(within / 0.01))):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition(), f"condition still false after {within} s"


@asynccontextmanager
async def transports_for(
    collector: Collector, *, send_timeout: float, close_timeout: float
) -> AsyncIterator[Callable[..., ZipkinTransport]]:
    """A factory of transports posting to ``collector`` with test-friendly delays.

    ``make(**options)`` overrides any default; every transport made is closed (bounded) on exit.
    """
    made: list[ZipkinTransport] = []

    def make(**options: Any) -> ZipkinTransport:
        settings: dict[str, Any] = {
            "send_interval": 0.05,
            "send_timeout": send_timeout,
            "close_timeout": close_timeout,
            "retry_delay": 0.01,
            "retry_max_delay": 0.05,
        }
        settings.update(options)
        transport = ZipkinTransport(collector.url, **settings)
        made.append(transport)
        return transport

    try:
        yield make
    finally:
        for transport in made:
            await asyncio.wait_for(transport.close(), 10)
