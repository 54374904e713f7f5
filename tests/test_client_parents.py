"""Parents B3 cannot carry are treated as absent: a new trace, spec-exact headers, no harm.

A client span's parent comes from ``trace_request_ctx`` or from the current span, which
aiozipkin's own server middleware sets from header values it never checks, and which users can
build by hand. Whatever it holds, the request must succeed, the headers sent must be what the B3
spec allows, and a parent is continued exactly when its ids are valid.

The oracle here is written from the spec, apart from the package's own checks: trace ids are 16
or 32 lower-hex characters, span ids 16, never all zeros; the sampling state is accept, deny or
defer, and debug a yes or no.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import StubTransport

import aiozipkin_client
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, Received, start_app

_LOWER_HEX = re.compile(r"[0-9a-f]+")
WARNING_TEXT = "ignoring a parent"


def spec_id(value: object, lengths: tuple[int, ...]) -> bool:
    return (
        isinstance(value, str)
        and len(value) in lengths
        and _LOWER_HEX.fullmatch(value) is not None
        and set(value) != {"0"}
    )


def spec_parent(context: TraceContext | None) -> bool:
    """Could B3 carry ``context`` as a parent as it is?"""
    return (
        context is not None
        and spec_id(context.trace_id, (16, 32))
        and spec_id(context.span_id, (16,))
        and (context.sampled is None or type(context.sampled) is bool)
        and type(context.debug) is bool
    )


def check_sent(received: Received, parent: TraceContext | None) -> dict[str, str]:
    """The B3 headers that arrived are spec-exact and continue ``parent`` iff it is valid."""
    b3 = received.b3()
    assert spec_id(b3.get("x-b3-traceid"), (16, 32)), b3
    assert spec_id(b3.get("x-b3-spanid"), (16,)), b3
    assert b3.get("x-b3-sampled") in ("0", "1", None), b3
    assert b3.get("x-b3-flags") in ("1", None), b3
    assert not ("x-b3-flags" in b3 and "x-b3-sampled" in b3), b3
    if spec_parent(parent):
        assert parent is not None
        assert b3["x-b3-traceid"] == parent.trace_id, (b3, parent)
        assert b3["x-b3-parentspanid"] == parent.span_id, (b3, parent)
        if parent.debug:
            assert b3.get("x-b3-flags") == "1", (b3, parent)
        elif parent.sampled is not None:
            assert b3.get("x-b3-sampled") == ("1" if parent.sampled else "0"), (b3, parent)
    else:
        # A new root: nothing of the invalid parent travels on.
        assert "x-b3-parentspanid" not in b3, (b3, parent)
        assert len(b3["x-b3-traceid"]) == 32, b3
        if parent is not None:
            assert b3["x-b3-traceid"] != parent.trace_id, (b3, parent)
    return b3


def check_recorded(recorder: SpanRecorder, b3: dict[str, str]) -> None:
    """The span recorded (if sampled) is the one whose ids were sent."""
    spans = recorder.take_all()
    recorded = b3.get("x-b3-sampled") == "1" or b3.get("x-b3-flags") == "1"
    assert len(spans) == (1 if recorded else 0), (spans, b3)
    if spans:
        (span,) = spans
        assert span["traceId"] == b3["x-b3-traceid"]
        assert span["id"] == b3["x-b3-spanid"]
        assert span.get("parentId") == b3.get("x-b3-parentspanid")


# -- fuzzed parent contexts ------------------------------------------------------------------

_GOOD_TRACE = ("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312")
_GOOD_SPAN = ("a2fb4a1d1a96d312", "0000000000000001")
_BAD_IDS: tuple[object, ...] = (
    "463AC35C9F6413AD48485A3953BB6124",  # upper case
    "A2FB4A1D1A96D312",
    "a2fb4a1d1a96d31",  # 15
    "a2fb4a1d1a96d3121",  # 17
    "463ac35c9f6413ad48485a3953bb6124a2fb4a1d1a96d312",  # 48: a multiple of 16, but not 16 or 32
    "0" * 16,
    "0" * 32,
    "",
    "abc",
    "def",
    "g" * 16,
    "a2fb4a1d1a96d3\r\n",
    "a2fb4a1d\r\nX-Evil: 1",
    "a2fb4a1d 1a96d31",
    "é" * 16,
    "a2fb4a1d1a96d312\x00",
    0xA2FB4A1D1A96D312,
    0,
    None,
    b"a2fb4a1d1a96d312",
    1.5,
    ["a2fb4a1d1a96d312"],
)
_SAMPLED: tuple[object, ...] = (True, False, None, 1, 0, "1", "0", "yes")
_DEBUG: tuple[object, ...] = (False, True, None, 1, 0, "d")
FUZZ_CASES = 2000


def fuzzed_contexts(seed: int, count: int) -> Iterator[TraceContext]:
    """Parents built by hand: mostly one bad field at a time, some entirely valid."""
    rng = random.Random(seed)
    for _ in range(count):
        fields: dict[str, Any] = {
            "trace_id": rng.choice(_GOOD_TRACE),
            "parent_id": rng.choice((None, "b7ad6b7169203331", "bad")),
            "span_id": rng.choice(_GOOD_SPAN),
            "sampled": rng.choice((True, False, None)),
            "debug": rng.random() < 0.1,
            "shared": False,
        }
        roll = rng.random()
        if roll < 0.3:
            fields["trace_id"] = rng.choice(_BAD_IDS)
        elif roll < 0.6:
            fields["span_id"] = rng.choice(_BAD_IDS)
        elif roll < 0.7:
            fields["sampled"] = rng.choice(_SAMPLED)
        elif roll < 0.8:
            fields["debug"] = rng.choice(_DEBUG)
        # else: a valid parent, which must be continued exactly.
        yield TraceContext(**fields)


async def test_fuzzed_explicit_parents_are_continued_iff_valid(
    make_session: Any,
    backend: Backend,
    recorder: SpanRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    session: aiohttp.ClientSession = make_session()
    caplog.set_level(logging.DEBUG, logger="aiozipkin_client")
    invalid = 0
    for parent in fuzzed_contexts(seed=9, count=FUZZ_CASES):
        invalid += not spec_parent(parent)

        async with session.get(
            backend.url / "ok", trace_request_ctx={"span_context": parent}
        ) as response:
            assert response.status == 200
            assert await response.read() == b"ok"

        b3 = check_sent(backend.take_one(), parent)
        check_recorded(recorder, b3)

    # The fuzz must have tried both kinds in earnest.
    assert FUZZ_CASES * 0.5 < invalid < FUZZ_CASES * 0.95
    ignored = [r for r in caplog.records if WARNING_TEXT in r.getMessage()]
    assert len(ignored) == invalid
    assert [r.levelno for r in ignored].count(logging.WARNING) == 1
    assert ignored[0].levelno == logging.WARNING


@pytest.mark.parametrize(
    "parent",
    [
        pytest.param(TraceContext("abc", None, "def", True, False, False), id="short-ids"),
        pytest.param(TraceContext("0" * 32, None, "0" * 16, True, False, False), id="all-zeros"),
        pytest.param(TraceContext(1, None, 2, True, False, False), id="int-ids"),  # type: ignore[arg-type]
        pytest.param(
            TraceContext(
                "463ac35c9f6413ad48485a3953bb6124", None, "a2fb\r\nX: 1", True, False, False
            ),
            id="crlf-in-id",
        ),
    ],
)
async def test_named_bad_parents_from_the_issue(
    make_session: Any, backend: Backend, recorder: SpanRecorder, parent: TraceContext
) -> None:
    session: aiohttp.ClientSession = make_session()

    async with session.get(
        backend.url / "ok", trace_request_ctx={"span_context": parent}
    ) as response:
        assert response.status == 200

    check_recorded(recorder, check_sent(backend.take_one(), parent))


async def test_invalid_explicit_parent_falls_back_to_the_current_span(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session: aiohttp.ClientSession = make_session()
    current = TraceContext(
        "463ac35c9f6413ad48485a3953bb6124", None, "a2fb4a1d1a96d312", True, False, False
    )
    bad = current._replace(span_id="not-an-id")

    with aiozipkin_client.use_span(current):
        await session.get(backend.url / "ok", trace_request_ctx={"span_context": bad})

    check_recorded(recorder, check_sent(backend.take_one(), current))


async def test_invalid_current_span_starts_a_new_trace(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session: aiohttp.ClientSession = make_session()
    bad = TraceContext("463ac35c9f6413ad", None, "A2FB4A1D1A96D312", True, False, False)

    with aiozipkin_client.use_span(bad):
        await session.get(backend.url / "ok")

    check_recorded(recorder, check_sent(backend.take_one(), bad))


# -- fuzzed incoming headers, through both server middlewares ---------------------------------

_HEADER_IDS = (
    "463ac35c9f6413ad48485a3953bb6124",
    "a2fb4a1d1a96d312",
    "463AC35C9F6413AD48485A3953BB6124",
    "A2FB4A1D1A96D312",
    "abc",
    "def",
    "0" * 16,
    "0" * 32,
    "",
    "a2fb4a1d1a96d3121",
    "463ac35c9f6413ad48485a3953bb6124a2fb4a1d1a96d312",
    "a2fb4a1d-1a96d312",
    "zzzzzzzzzzzzzzzz",
    " a2fb4a1d1a96d312",
)
_HEADER_STATES = ("", "0", "1", "d", "true", "2")
HEADER_CASES = 600


def fuzzed_headers(seed: int, count: int) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    for _ in range(count):
        trace_id, span_id, parent_id = (rng.choice(_HEADER_IDS) for _ in range(3))
        state = rng.choice(_HEADER_STATES)
        if rng.random() < 0.5:
            parts = (
                [trace_id, span_id] + ([state] if state else []) + [parent_id][: rng.randint(0, 1)]
            )
            yield {"b3": "-".join(parts)}
        else:
            headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id}
            if state:
                headers["X-B3-Sampled"] = state
            if rng.random() < 0.3:
                headers["X-B3-ParentSpanId"] = parent_id
            if rng.random() < 0.2:
                headers["X-B3-Flags"] = rng.choice(("0", "1", "x"))
            yield headers


@asynccontextmanager
async def front_server(
    middleware: str, client: aiohttp.ClientSession, target: Any
) -> AsyncIterator[tuple[Any, list[TraceContext | None]]]:
    """A server whose handler calls ``target`` through ``client``; yields its URL and parents."""
    parents: list[TraceContext | None] = []
    front_tracer = Tracer(
        StubTransport(), Sampler(sample_rate=1.0), aiozipkin.create_endpoint("front")
    )

    async def handler(request: web.Request) -> web.Response:
        parents.append(zipkin_context.get())
        async with client.get(target) as response:
            await response.read()
        return web.Response(text="front")

    app = web.Application()
    app.router.add_get("/front", handler)
    if middleware == "aiozipkin":
        aiozipkin.setup(app, front_tracer)
    else:
        aiozipkin_client.setup(app, front_tracer)
    async with start_app(app) as url:
        yield url, parents


@pytest.mark.parametrize("middleware", ["aiozipkin", "aiozipkin_client"])
async def test_fuzzed_incoming_headers_under_either_middleware(
    make_session: Any, backend: Backend, recorder: SpanRecorder, middleware: str
) -> None:
    client: aiohttp.ClientSession = make_session()
    async with AsyncExitStack() as stack:
        url, parents = await stack.enter_async_context(
            front_server(middleware, client, backend.url / "ok")
        )
        caller = await stack.enter_async_context(aiohttp.ClientSession())
        joined = 0
        for headers in fuzzed_headers(seed=10, count=HEADER_CASES):
            async with caller.get(url / "front", headers=headers) as response:
                assert response.status == 200, headers
                assert await response.read() == b"front"

            (parent,) = parents
            parents.clear()
            if middleware == "aiozipkin_client":
                # Ours checks what arrives: the handler's span is always one B3 can carry.
                assert spec_parent(parent), (headers, parent)
            sent_trace_id = headers.get("X-B3-TraceId", headers.get("b3", "").split("-")[0])
            joined += parent is not None and parent.trace_id == sent_trace_id
            b3 = check_sent(backend.take_one(), parent)
            check_recorded(recorder, b3)
        # The front joined some callers and refused others: both paths were exercised.
        assert 0 < joined < HEADER_CASES
