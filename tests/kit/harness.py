"""Run a client request under each kind of parent the conformance tests cover.

* ``none``: no parent: the request starts a new trace.
* ``explicit``: ``trace_request_ctx={"span_context": ctx}``, aiozipkin's per-request form.
* ``implicit``: the request is made inside a handler of a real server that runs aiozipkin's own
  ``aiozipkin.setup`` middleware, so the parent is that handler's SERVER span.
* ``use_span``: inside ``aiozipkin_client.use_span(ctx)``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiozipkin
from aiohttp import web
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from aiozipkin.sampler import Sampler
from aiozipkin.transport import StubTransport
from multidict import CIMultiDictProxy
from yarl import URL

import aiozipkin_client

from .servers import start_app

__all__ = (
    "PARENT_MODES",
    "SIGNAL_NAMES",
    "Harness",
    "Outcome",
    "harness_for",
    "make_context",
)

PARENT_MODES = ("none", "explicit", "implicit", "use_span")

#: The 16 client signals of aiohttp 3.14, read from aiohttp itself rather than typed out.
SIGNAL_NAMES = tuple(sorted(name for name in dir(aiohttp.TraceConfig) if name.startswith("on_")))

_ids = itertools.count(1)


def make_context(
    sampled: bool | None = True, debug: bool = False, parent_id: str | None = None
) -> TraceContext:
    """A distinct, valid parent context (not registered in any tracer)."""
    n = next(_ids)
    return TraceContext(
        trace_id=f"{0x463AC35C9F6413AD48485A3953BB0000 + n:032x}",
        parent_id=parent_id,
        span_id=f"{0xA2FB4A1D1A960000 + n:016x}",
        sampled=sampled,
        debug=debug,
        shared=False,
    )


@dataclass(frozen=True)
class Outcome:
    """What the caller got back: the status, body and headers of the final response."""

    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


Job = Callable[[], Awaitable[Outcome]]


class Harness:
    """Makes requests through one traced session under one parent mode."""

    def __init__(self, mode: str, session: aiohttp.ClientSession) -> None:
        self.mode = mode
        self.session = session
        #: The parent of the last request (None in "none" mode).
        self.parent: TraceContext | None = None
        self._front: URL | None = None
        self._plain: aiohttp.ClientSession | None = None
        self._jobs: dict[str, Job] = {}
        self._results: dict[str, Outcome | BaseException] = {}

    async def request(self, method: str, url: URL | str, **kwargs: Any) -> Outcome:
        """Send one request under this harness's parent mode; body read in full."""

        async def job() -> Outcome:
            async with self.session.request(method, url, **kwargs) as resp:
                body = await resp.read()
                return Outcome(resp.status, body, resp.headers)

        if self.mode == "none":
            self.parent = None
            return await job()
        if self.mode == "explicit":
            self.parent = make_context()
            ctx = dict(kwargs.get("trace_request_ctx") or {})
            ctx.setdefault("span_context", self.parent)
            kwargs["trace_request_ctx"] = ctx
            return await job()
        if self.mode == "use_span":
            self.parent = make_context()
            with aiozipkin_client.use_span(self.parent):
                return await job()
        return await self._inside_handler(job)

    async def _inside_handler(self, job: Job) -> Outcome:
        assert self._front is not None
        assert self._plain is not None
        token = str(next(_ids))
        self._jobs[token] = job
        async with self._plain.get(self._front / "run" / token) as resp:
            assert resp.status == 200, await resp.text()
        result = self._results.pop(token)
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run(self, request: web.Request) -> web.Response:
        job = self._jobs.pop(request.match_info["token"])
        self.parent = zipkin_context.get()
        assert self.parent is not None, "aiozipkin middleware did not set the current span"
        try:
            self._results[request.match_info["token"]] = await job()
        except Exception as exc:
            self._results[request.match_info["token"]] = exc
        return web.Response(text="done")

    @asynccontextmanager
    async def _serving_front(self) -> AsyncIterator[None]:
        front_tracer = aiozipkin.Tracer(
            StubTransport(), Sampler(sample_rate=1.0), aiozipkin.create_endpoint("front")
        )
        app = web.Application()
        aiozipkin.setup(app, front_tracer)
        app.router.add_get("/run/{token}", self._run)
        async with AsyncExitStack() as stack:
            self._front = await stack.enter_async_context(start_app(app))
            self._plain = await stack.enter_async_context(aiohttp.ClientSession())
            yield


@asynccontextmanager
async def harness_for(mode: str, session: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    """A :class:`Harness` for ``mode``; starts the front server the implicit mode needs."""
    harness = Harness(mode, session)
    if mode == "implicit":
        async with harness._serving_front():
            yield harness
    else:
        yield harness
