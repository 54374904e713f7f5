"""Fixtures shared by the test modules: a strict recorder, a tracer, local servers, sessions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer

import aiozipkin_client
from tests.kit.harness import PARENT_MODES, Harness, harness_for
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, start_app

SessionFactory = Callable[..., aiohttp.ClientSession]


@pytest.fixture
def recorder() -> SpanRecorder:
    return SpanRecorder()


@pytest.fixture
def tracer(recorder: SpanRecorder) -> Iterator[Tracer]:
    """A tracer that samples everything and reports to the strict recorder."""
    tracer = aiozipkin.Tracer(recorder, Sampler(sample_rate=1.0), aiozipkin.create_endpoint("app"))
    yield tracer
    recorder.verify(tracer)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = Backend()
    async with start_app(backend.app()) as url:
        backend.url = url
        yield backend
        backend.released.set()


@pytest.fixture
async def make_session(tracer: Tracer) -> AsyncIterator[SessionFactory]:
    """Build traced sessions: ``make_session(**make_trace_config options)``; closed at the end."""
    async with AsyncExitStack() as stack:

        def factory(
            *, session_kwargs: dict[str, Any] | None = None, **options: Any
        ) -> aiohttp.ClientSession:
            config = aiozipkin_client.make_trace_config(tracer, **options)
            session = aiohttp.ClientSession(trace_configs=[config], **(session_kwargs or {}))
            stack.push_async_callback(session.close)
            return session

        yield factory


@pytest.fixture(params=PARENT_MODES)
def parent_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
async def make_harness(
    parent_mode: str, make_session: SessionFactory
) -> AsyncIterator[Callable[..., Any]]:
    """``await make_harness(**options)``: a Harness for this test's parent mode."""
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> Harness:
            return await stack.enter_async_context(
                harness_for(parent_mode, make_session(**options))
            )

        yield factory


@pytest.fixture
async def harness(make_harness: Callable[..., Any]) -> Harness:
    h: Harness = await make_harness()
    return h


#: The event loop every test runs on: asyncio's own, or uvloop's (`make test` runs the suite on
#: both; many aiohttp services run on uvloop, whose transports are not asyncio's).
TEST_LOOP = os.environ.get("AIOZIPKIN_CLIENT_TEST_LOOP", "asyncio")
if TEST_LOOP not in ("asyncio", "uvloop"):
    raise pytest.UsageError(
        f"AIOZIPKIN_CLIENT_TEST_LOOP={TEST_LOOP!r}: use 'asyncio' (the default) or 'uvloop'"
    )

if TEST_LOOP == "uvloop":
    import uvloop  # a missing uvloop fails the run: asked for, it must not quietly not run

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Every test on a uvloop event loop (pytest-asyncio's hook for the loop's factory)."""
        return {"uvloop": uvloop.new_event_loop}
