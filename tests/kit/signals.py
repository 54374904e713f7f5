"""Test helpers that let a test wait for aiohttp's own events instead of sleeping.

* :class:`Observer`: a second, independent TraceConfig whose signals set events, so a test can
  wait (bounded) until aiohttp really queued a request or joined a DNS lookup.
* :class:`GatedResolver`: resolves with the system resolver (IPv4 only, so ``localhost`` is
  127.0.0.1) once its gate opens, so a test controls when a lookup finishes.
* :func:`gated_body_app`: a server that sends headers and half a body, then waits for a gate.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from tests.kit.harness import SIGNAL_NAMES

__all__ = ("GatedResolver", "Observer", "gated_body_app")


class Observer:
    """Counts every client signal and lets tests wait for the n-th occurrence."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self._changed = asyncio.Event()
        self.config = aiohttp.TraceConfig()
        for name in SIGNAL_NAMES:
            getattr(self.config, name).append(self._receiver(name))

    def _receiver(self, name: str) -> Any:
        async def receive(session: object, ctx: object, params: object) -> None:
            self.counts[name] += 1
            self._changed.set()

        return receive

    async def wait(self, name: str, count: int = 1, timeout: float = 5.0) -> None:
        async def reached() -> None:
            while self.counts[name] < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(reached(), timeout)


class GatedResolver(AbstractResolver):
    """The system resolver, held until :attr:`gate` is set; counts its calls."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.called = asyncio.Event()
        self._real = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        self.called.set()
        await asyncio.wait_for(self.gate.wait(), 5)
        return await self._real.resolve(host, port, socket.AF_INET)

    async def close(self) -> None:
        await self._real.close()


def gated_body_app(gate: asyncio.Event, first: bytes, rest: bytes) -> web.Application:
    """``/body``: headers and ``first`` at once, ``rest`` only after ``gate`` is set."""

    async def body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(first) + len(rest)
        await response.prepare(request)
        await response.write(first)
        try:
            await asyncio.wait_for(gate.wait(), 5)
        except TimeoutError:
            return response
        await response.write(rest)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/body", body)
    return app
