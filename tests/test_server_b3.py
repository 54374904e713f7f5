"""Incoming B3 on the server: joining the caller's trace, sampling decisions, malformed headers.

The header values are the examples of ``b3-propagation.md`` (and broken variants of them). A
request comes from an untraced session with exactly these headers; the test checks the SERVER
span that was reported and the trace context the handler saw as current.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.helpers import TraceContext
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from multidict import CIMultiDict

from aiozipkin_client._context import current_context
from aiozipkin_client.server import setup
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import start_app

# From the spec's examples.
TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"
SINGLE_TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SINGLE_SPAN = "e457b5a2e4d86bd1"
SINGLE_PARENT = "05e3ac9a4f6e3b90"

Serve = Callable[..., Any]


@pytest.fixture
def never_sampling(recorder: SpanRecorder) -> Tracer:
    """A tracer whose own sampler says no: a recorded span proves the headers decided."""
    return aiozipkin.Tracer(recorder, Sampler(sample_rate=0.0), aiozipkin.create_endpoint("app"))


@asynccontextmanager
async def _serving(tracer: Tracer) -> AsyncIterator[Callable[..., Any]]:
    seen: list[TraceContext | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(current_context())
        return web.Response(text="ok")

    app = setup(web.Application(), tracer)
    app.router.add_get("/ok", handler)
    async with start_app(app) as url, aiohttp.ClientSession() as session:

        async def send(headers: Any) -> TraceContext:
            async with session.get(url / "ok", headers=headers) as response:
                assert response.status == 200
                assert await response.text() == "ok"
            context = seen.pop()
            assert context is not None
            return context

        yield send


@pytest.fixture
async def send(tracer: Tracer) -> AsyncIterator[Callable[..., Any]]:
    """``await send(headers)``: one request; returns the context its handler saw."""
    async with _serving(tracer) as sender:
        yield sender


@pytest.fixture
async def send_unsampling(
    never_sampling: Tracer, recorder: SpanRecorder
) -> AsyncIterator[Callable[..., Any]]:
    async with _serving(never_sampling) as sender:
        yield sender
    recorder.verify(never_sampling)


# -- joining ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "trace_id", "span_id", "parent_id"),
    [
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": PARENT},
            TRACE,
            SPAN,
            PARENT,
            id="multi-deferred",
        ),
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"},
            TRACE,
            SPAN,
            None,
            id="multi-root-accept",
        ),
        pytest.param(
            {"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": SPAN, "x-b3-sampled": "1"},
            "a3ce929d0e0e4736",
            SPAN,
            None,
            id="multi-64-bit-trace-lowercase-names",
        ),
        pytest.param(
            {"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1-{SINGLE_PARENT}"},
            SINGLE_TRACE,
            SINGLE_SPAN,
            SINGLE_PARENT,
            id="single",
        ),
        pytest.param(
            {"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}"},
            SINGLE_TRACE,
            SINGLE_SPAN,
            None,
            id="single-deferred",
        ),
        pytest.param(
            {
                "b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1",
                "X-B3-TraceId": TRACE,
                "X-B3-SpanId": SPAN,
                "X-B3-Sampled": "0",
            },
            SINGLE_TRACE,
            SINGLE_SPAN,
            None,
            id="single-takes-precedence",
        ),
        pytest.param(
            {"b3": "not-b3", "X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"},
            TRACE,
            SPAN,
            None,
            id="malformed-single-falls-back-to-multi",
        ),
    ],
)
async def test_joins_the_callers_span_with_a_shared_server_span(
    send: Serve,
    recorder: SpanRecorder,
    headers: dict[str, str],
    trace_id: str,
    span_id: str,
    parent_id: str | None,
) -> None:
    context = await send(headers)

    span = recorder.take_one()
    assert span["kind"] == "SERVER"
    assert span["traceId"] == trace_id
    assert span["id"] == span_id
    assert span.get("parentId") == parent_id
    assert span["shared"] is True
    assert "debug" not in span
    assert context == TraceContext(trace_id, parent_id, span_id, True, False, True)


async def test_first_value_of_a_repeated_header_wins(send: Serve, recorder: SpanRecorder) -> None:
    headers = CIMultiDict(
        [
            ("X-B3-TraceId", TRACE),
            ("X-B3-TraceId", SINGLE_TRACE),
            ("X-B3-SpanId", SPAN),
            ("X-B3-Sampled", "1"),
        ]
    )

    await send(headers)

    assert recorder.take_one()["traceId"] == TRACE


# -- sampling decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"b3": "1"}, id="single-accept-only"),
        pytest.param({"X-B3-Sampled": "1"}, id="multi-accept-only"),
    ],
)
async def test_sampling_decision_without_ids_starts_a_sampled_trace(
    send_unsampling: Serve, recorder: SpanRecorder, headers: dict[str, str]
) -> None:
    context = await send_unsampling(headers)

    span = recorder.take_one()
    assert "parentId" not in span
    assert "shared" not in span
    assert "debug" not in span
    assert (context.trace_id, context.span_id) == (span["traceId"], span["id"])
    assert context.sampled is True


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"b3": "d"}, id="single-debug-only"),
        pytest.param({"X-B3-Flags": "1"}, id="multi-debug-only"),
    ],
)
async def test_debug_without_ids_starts_a_debug_trace(
    send_unsampling: Serve, recorder: SpanRecorder, headers: dict[str, str]
) -> None:
    context = await send_unsampling(headers)

    span = recorder.take_one()
    assert span["debug"] is True
    assert "parentId" not in span
    assert context.debug is True
    assert context.sampled is True


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-d"}, id="single"),
        pytest.param({"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Flags": "1"}, id="multi"),
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Flags": "1", "X-B3-Sampled": "0"},
            id="multi-debug-implies-accept",
        ),
    ],
)
async def test_debug_with_ids_joins_as_debug(
    send_unsampling: Serve, recorder: SpanRecorder, headers: dict[str, str]
) -> None:
    context = await send_unsampling(headers)

    span = recorder.take_one()
    assert span["debug"] is True
    assert span["shared"] is True
    assert span["id"] in (SPAN, SINGLE_SPAN)
    assert context.debug is True


@pytest.mark.parametrize("flags", ["0", "true", "2", ""])
async def test_other_flags_values_are_ignored(
    send: Serve, recorder: SpanRecorder, flags: str
) -> None:
    await send(
        {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1", "X-B3-Flags": flags}
    )

    span = recorder.take_one()
    assert "debug" not in span
    assert span["id"] == SPAN


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [
        pytest.param({"b3": "0"}, None, id="single-deny-only"),
        pytest.param({"X-B3-Sampled": "0"}, None, id="multi-deny-only"),
        pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-0"}, SINGLE_TRACE, id="single-deny"),
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "0"},
            TRACE,
            id="multi-deny",
        ),
    ],
)
async def test_deny_records_nothing_but_keeps_a_current_context(
    send: Serve, recorder: SpanRecorder, headers: dict[str, str], trace_id: str | None
) -> None:
    context = await send(headers)

    recorder.expect_none()
    assert context.sampled is False
    if trace_id is None:
        assert len(context.trace_id) == 32
        assert context.parent_id is None
    else:
        assert context.trace_id == trace_id
        assert context.span_id in (SPAN, SINGLE_SPAN)


async def test_deferred_ids_are_decided_by_the_tracer(
    send_unsampling: Serve, recorder: SpanRecorder
) -> None:
    context = await send_unsampling({"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN})

    recorder.expect_none()
    # The decision made here is explicit from now on (and travels downstream as such).
    assert context == TraceContext(TRACE, None, SPAN, False, False, True)


# -- malformed headers: discarded, a new trace starts, never a 500 --------------------------------

VALID = {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}


def _with(**changes: str | None) -> dict[str, str]:
    headers = dict(VALID)
    for name, value in changes.items():
        header = {"trace": "X-B3-TraceId", "span": "X-B3-SpanId", "parent": "X-B3-ParentSpanId"}
        key = header.get(name, "X-B3-Sampled")
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    return headers


MALFORMED = [
    # Bad hex.
    pytest.param(_with(trace="463ac35c9f6413ad48485a3953bb612g"), id="trace-not-hex"),
    pytest.param(_with(trace=TRACE.upper()), id="trace-uppercase"),
    pytest.param(_with(span="a2fb4a1d1a96d31z"), id="span-not-hex"),
    pytest.param(_with(parent="0020000000000x01"), id="parent-not-hex"),
    # Wrong length.
    pytest.param(_with(trace=TRACE[:-1]), id="trace-31-chars"),
    pytest.param(_with(trace=TRACE[:20]), id="trace-20-chars"),
    pytest.param(_with(trace=TRACE + "00"), id="trace-34-chars"),
    pytest.param(_with(span=SPAN[:-1]), id="span-15-chars"),
    pytest.param(_with(span=TRACE), id="span-32-chars"),
    pytest.param(_with(parent=PARENT + "0"), id="parent-17-chars"),
    # All zeros.
    pytest.param(_with(trace="0" * 32), id="trace-all-zero"),
    pytest.param(_with(trace="0" * 16), id="trace-64-bit-all-zero"),
    pytest.param(_with(span="0" * 16), id="span-all-zero"),
    pytest.param(_with(parent="0" * 16), id="parent-all-zero"),
    # The spec's examples of malformed data.
    pytest.param(_with(parent="-"), id="parent-hyphen"),
    pytest.param(_with(sampled=""), id="sampled-empty"),
    # Empty values.
    pytest.param(_with(trace=""), id="trace-empty"),
    pytest.param(_with(span=""), id="span-empty"),
    pytest.param(_with(parent=""), id="parent-empty"),
    # Words instead of 1 / 0.
    pytest.param(_with(sampled="true"), id="sampled-true"),
    pytest.param(_with(sampled="false"), id="sampled-false"),
    # Partial identifiers.
    pytest.param(_with(span=None), id="trace-without-span"),
    pytest.param(_with(trace=None), id="span-without-trace"),
    pytest.param({"X-B3-ParentSpanId": PARENT, "X-B3-Sampled": "1"}, id="parent-alone"),
    # The single header.
    pytest.param({"b3": "-"}, id="single-hyphen"),
    pytest.param({"b3": ""}, id="single-empty"),
    pytest.param({"b3": "true"}, id="single-true"),
    pytest.param({"b3": SINGLE_TRACE}, id="single-trace-only"),
    pytest.param({"b3": f"{SINGLE_TRACE}-"}, id="single-empty-span"),
    pytest.param({"b3": f"-{SINGLE_SPAN}-1"}, id="single-empty-trace"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-"}, id="single-empty-state"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-true"}, id="single-state-true"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-x"}, id="single-state-bad"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1-"}, id="single-empty-parent"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1--"}, id="single-parent-hyphen"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1-{SINGLE_PARENT}-x"}, id="single-5-parts"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN.upper()}-1"}, id="single-span-uppercase"),
    pytest.param({"b3": f"{'0' * 32}-{SINGLE_SPAN}-1"}, id="single-trace-all-zero"),
    pytest.param({"b3": f"{SINGLE_TRACE}-{'0' * 16}-1"}, id="single-span-all-zero"),
    pytest.param({"b3": f"{SINGLE_TRACE[:-1]}-{SINGLE_SPAN}-1"}, id="single-trace-31-chars"),
    pytest.param(
        {"b3": f"{SINGLE_TRACE}-{SINGLE_SPAN}-1-{SINGLE_PARENT[:-1]}"}, id="single-parent-15"
    ),
]


@pytest.mark.parametrize("headers", MALFORMED)
async def test_malformed_headers_start_a_new_trace(
    send: Serve, recorder: SpanRecorder, headers: dict[str, str]
) -> None:
    context = await send(headers)

    span = recorder.take_one()
    assert span["kind"] == "SERVER"
    assert len(span["traceId"]) == 32
    given = set(headers.values())
    assert span["traceId"] not in given
    assert span["id"] not in given
    assert "parentId" not in span
    assert "shared" not in span
    assert "debug" not in span
    assert span["tags"]["http.status_code"] == "200"
    assert context == TraceContext(span["traceId"], None, span["id"], True, False, False)


async def test_malformed_headers_are_logged_at_debug_level(
    send: Serve, recorder: SpanRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="aiozipkin_client")

    await send({"b3": "-", "X-B3-TraceId": "-"})

    recorder.take_one()
    messages = [r.getMessage() for r in caplog.records if r.name == "aiozipkin_client"]
    assert messages == ["ignoring malformed b3 header '-'", "ignoring malformed X-B3 headers"]
    assert all(r.levelname == "DEBUG" for r in caplog.records if r.name == "aiozipkin_client")
