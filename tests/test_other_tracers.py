"""Other tracers on the other side of the wire (OpenTelemetry Python and JS, py_zipkin and
zipkin-js), and OpenTelemetry's aiohttp instrumentation on the same session.

Each is used as its own users use it: OpenTelemetry's B3 propagators with its SDK (and its own
Zipkin JSON v2 encoder for its spans), py_zipkin's header helpers, ``zipkin_client_span`` and
``zipkin_server_span`` (its own v2 JSON for its spans), and in Node.js
(``tests/interop/node/peer.js``) zipkin-js's HTTP client and server instrumentation (its spans
written by zipkin-js's own v2 JSON encoder) and OpenTelemetry JS's B3 propagator with its SDK,
as a service between two of ours. Both directions are tried:

* we call them: what their extraction makes of the headers our client sends, for each B3
  format (both halves of ``BOTH``), each sampling state and both trace id widths, and the
  server spans they record under it;
* they call us: our server middleware joins their trace, and the call our handler makes next
  carries it on. Our tracer's own sampler always says the opposite of the caller, so a
  decision that does not arrive shows.

Where both sides report spans, they are put together as Zipkin would and must make one tree:
the caller's CLIENT span and the callee's SERVER span share an id (B3's shared span), or the
callee's is its child (OpenTelemetry never shares), every parent is in the trace, and the
sampling state arrives as it was sent.

``REQUIRE_NODE_PEERS=1`` (set by ``.ci/run``) turns a missing Node.js or Node package into an
error instead of skipped tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.helpers import TraceContext
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from multidict import CIMultiDict
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.instrumentation.aiohttp_client import (
    AioHttpClientInstrumentor,
    create_trace_config,
)
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from py_zipkin.request_helpers import create_http_headers, extract_zipkin_attrs_from_headers
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_client_span, zipkin_server_span
from yarl import URL

import aiozipkin_client
from aiozipkin_client import B3Format
from tests.kit.mesh import TraceTree, assert_joined
from tests.kit.recorder import SpanRecorder
from tests.kit.schema import validate_spans
from tests.kit.servers import Backend, Received, b3_headers, start_app

#: The parent our client continues, with a 128-bit and a 64-bit trace id.
TRACES = {"128": "463ac35c9f6413ad48485a3953bb6124", "64": "48485a3953bb6124"}
PARENT = "a2fb4a1d1a96d312"

#: The sampling state of the parent our client continues, as a TraceContext holds it.
DECISIONS = {
    "sampled": (True, False),
    "unsampled": (False, False),
    "debug": (True, True),
}

#: py_zipkin's spans, without it looking up this machine's name.
PY_ZIPKIN_HOST = "127.0.0.1"

PEER_DIR = Path(__file__).parent / "interop" / "node"
NODE = shutil.which("node")
NODE_PEERS_MISSING = (
    "the zipkin-js and OpenTelemetry JS tests need Node.js and `npm ci` in tests/interop/node"
    " (make test runs it when npm is installed)"
)
_node_peers_ready = NODE is not None and all(
    (PEER_DIR / "node_modules" / package).is_dir()
    for package in ("zipkin", "@opentelemetry/propagator-b3", "@opentelemetry/sdk-trace-base")
)
if not _node_peers_ready and os.environ.get("REQUIRE_NODE_PEERS") == "1":
    raise RuntimeError(f"REQUIRE_NODE_PEERS=1: {NODE_PEERS_MISSING}")
needs_node = pytest.mark.skipif(not _node_peers_ready, reason=NODE_PEERS_MISSING)
#: Bounds every wait on the Node.js process.
PEER_TIMEOUT = 20.0
#: The same bound for every HTTP exchange with a peer (aiohttp's default is five minutes).
PEER_BOUND = aiohttp.ClientTimeout(total=PEER_TIMEOUT)


# -- helpers ------------------------------------------------------------------------------------


def is_span_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 16 and int(value, 16) != 0


def zipkin_trace_id(trace_id: str) -> str:
    """A trace id as Zipkin stores it: a 128-bit id whose upper half is zero is the 64-bit id
    (OpenTelemetry writes a 64-bit trace id it continued that way)."""
    if len(trace_id) == 32 and trace_id.startswith("0" * 16):
        return trace_id[16:]
    return trace_id


def as_zipkin_stores(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**span, "traceId": zipkin_trace_id(span["traceId"])} for span in spans]


@pytest.fixture
def tracer_sampling(recorder: SpanRecorder) -> Iterator[Callable[[bool], Tracer]]:
    """Tracers for our service whose own sampler says yes to everything, or no."""
    made: list[Tracer] = []

    def make(sample: bool) -> Tracer:
        rate = 1.0 if sample else 0.0
        made.append(
            aiozipkin.Tracer(recorder, Sampler(sample_rate=rate), aiozipkin.create_endpoint("app"))
        )
        return made[-1]

    yield make
    recorder.verify()
    for tracer in made:
        recorder.verify(tracer)


@asynccontextmanager
async def our_service(tracer: Tracer, downstream: URL) -> AsyncIterator[URL]:
    """A service traced by us: ``GET /call`` calls ``downstream`` with a traced session."""
    async with aiohttp.ClientSession(
        trace_configs=[aiozipkin_client.make_trace_config(tracer)], timeout=PEER_BOUND
    ) as session:

        async def call(request: web.Request) -> web.Response:
            async with session.get(downstream) as response:
                return web.Response(text=f"called:{response.status}")

        app = web.Application()
        aiozipkin_client.setup(app, tracer)
        app.router.add_get("/call", call)
        async with start_app(app) as url:
            yield url


async def plain_get(url: URL, headers: dict[str, str]) -> str:
    async with (
        aiohttp.ClientSession(timeout=PEER_BOUND) as session,
        session.get(url, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.text()


def expect_our_service_joined(
    recorder_spans: list[dict[str, Any]],
    caller_spans: list[dict[str, Any]],
    received: Received,
    *,
    outside: tuple[str, ...] = (),
    debug: bool = False,
    parent_sent: bool = True,
) -> None:
    """Their CLIENT span, our SERVER span sharing its id, our CLIENT span under it, and the
    headers our call carried: one trace, as Zipkin would put it together.

    ``parent_sent=False``: the caller sent no parent span id (OpenTelemetry never does), so our
    SERVER span has none; Zipkin fills it in from the CLIENT half when it merges the trace.
    """
    validate_spans(recorder_spans)
    tree = TraceTree(recorder_spans + caller_spans, outside=outside)
    their_client = next(span for span in caller_spans if span.get("kind") == "CLIENT")
    our_server = tree.one("app", "SERVER")
    our_client = tree.one("app", "CLIENT")
    if parent_sent:
        assert_joined(their_client, our_server)
    else:
        assert "parentId" not in our_server
        assert_joined({**their_client, "parentId": None}, {**our_server, "parentId": None})
    assert our_client["parentId"] == our_server["id"]
    for span in recorder_spans:
        assert span.get("debug", False) is debug, span
    expected = {
        "x-b3-traceid": tree.trace_id,
        "x-b3-spanid": our_client["id"],
        "x-b3-parentspanid": our_server["id"],
    }
    # Debug implies sampled: the spec says not to send X-B3-Sampled then.
    expected.update({"x-b3-flags": "1"} if debug else {"x-b3-sampled": "1"})
    assert received.b3() == expected


def expect_unsampled_call(received: Received, trace_id: str, caller_span: str) -> None:
    """Not sampled: no span, but our call carried the caller's trace on, with a deny."""
    b3 = received.b3()
    span_id = b3.pop("x-b3-spanid")
    assert is_span_id(span_id)
    assert span_id != caller_span
    assert b3 == {
        "x-b3-traceid": trace_id,
        "x-b3-parentspanid": caller_span,
        "x-b3-sampled": "0",
    }


def as_zipkin_json(exporter: InMemorySpanExporter, service: str) -> list[dict[str, Any]]:
    """OpenTelemetry's finished spans, as its Zipkin exporter writes them (the service name is
    the provider's resource's, which the exporter copies in the same way)."""
    endpoint = NodeEndpoint()
    endpoint.service_name = service
    finished: Any = exporter.get_finished_spans()  # ReadableSpans, which it encodes
    spans: list[dict[str, Any]] = json.loads(JsonV2Encoder().serialize(finished, endpoint))
    return spans


class _Collected(BaseTransportHandler):
    """py_zipkin's transport: keeps what it would post."""

    def __init__(self) -> None:
        self.payloads: list[bytes | str] = []

    def get_max_payload_bytes(self) -> int | None:
        return None

    def send(self, payload: bytes | str) -> None:
        self.payloads.append(payload)

    def spans(self) -> list[dict[str, Any]]:
        return [span for payload in self.payloads for span in json.loads(payload)]


# -- we call them: what their extraction makes of our headers -----------------------------------


@dataclass
class Extracted:
    """What OpenTelemetry's and py_zipkin's extraction read from one set of headers."""

    otel: otel_trace.SpanContext
    #: ZipkinAttrs; the decision must not depend on py_zipkin's own sample rate.
    py_zipkin: Any


def extract(headers: Any) -> Extracted:
    context = B3MultiFormat().extract(headers)
    # py_zipkin tosses a coin at its sample rate when no decision arrived: read at 0% and at
    # 100%, a decision that arrived gives the same attributes both times.
    never = extract_zipkin_attrs_from_headers(headers, sample_rate=0.0)
    always = extract_zipkin_attrs_from_headers(headers, sample_rate=100.0)
    assert never == always, f"no decision arrived in {b3_headers(headers)}"
    return Extracted(otel_trace.get_current_span(context).get_span_context(), always)


@dataclass
class Arrival:
    """One request at their server: its B3 headers, read whole and (for ``BOTH``) without
    the single header, so that the ``X-B3-*`` half is read too."""

    b3: dict[str, str]
    whole: Extracted
    multi_only: Extracted | None


@dataclass
class TheirServers:
    """A server whose handler is traced by OpenTelemetry and by py_zipkin, as a service
    traced by either would be: each extracts the incoming B3 headers and records its own
    SERVER span under them (OpenTelemetry with its default ParentBased sampler)."""

    url: URL
    arrivals: list[Arrival]
    otel: InMemorySpanExporter
    py_zipkin: _Collected

    def otel_spans(self) -> list[dict[str, Any]]:
        return as_zipkin_json(self.otel, "otel-server")


@asynccontextmanager
async def their_servers() -> AsyncIterator[TheirServers]:
    arrivals: list[Arrival] = []
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_tracer = provider.get_tracer("otel-server")
    transport = _Collected()

    async def read(request: web.Request) -> web.Response:
        headers = request.headers
        b3 = b3_headers(headers)
        multi_only = None
        if "b3" in b3 and len(b3) > 1:
            multi_only = extract(CIMultiDict((k, v) for k, v in headers.items() if k != "b3"))
        whole = extract(headers)
        arrivals.append(Arrival(b3, whole, multi_only))
        context = B3MultiFormat().extract(headers)
        with otel_tracer.start_as_current_span(
            "read", context=context, kind=otel_trace.SpanKind.SERVER
        ):
            pass
        with zipkin_server_span(
            service_name="py-zipkin-server",
            span_name="read",
            zipkin_attrs=whole.py_zipkin,
            transport_handler=transport,
            host=PY_ZIPKIN_HOST,
        ):
            pass
        return web.Response(text="read")

    app = web.Application()
    app.router.add_get("/read", read)
    async with start_app(app) as url:
        yield TheirServers(url / "read", arrivals, exporter, transport)
    provider.shutdown()


def expect_read(
    extracted: Extracted, trace_id: str, span_id: str, sampled: bool, debug: bool
) -> None:
    """What OpenTelemetry and py_zipkin must read from our headers."""
    otel = extracted.otel
    assert otel.is_valid
    assert otel.is_remote
    # OpenTelemetry keeps trace ids as 128-bit numbers: a 64-bit one is its lower half.
    assert format(otel.trace_id, "032x") == trace_id.rjust(32, "0")
    assert format(otel.span_id, "016x") == span_id
    # It has no debug: debug arrives as sampled.
    assert otel.trace_flags.sampled is sampled
    attrs = extracted.py_zipkin
    assert attrs is not None
    assert (attrs.trace_id, attrs.span_id, attrs.parent_span_id) == (trace_id, span_id, PARENT)
    assert attrs.is_sampled is sampled
    assert attrs.flags == ("1" if debug else "0")


@pytest.mark.parametrize("bits", list(TRACES))
@pytest.mark.parametrize("b3_format", list(B3Format), ids=lambda f: f.name.lower())
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_opentelemetry_and_py_zipkin_servers_join_our_client_span(
    tracer: Tracer, recorder: SpanRecorder, b3_format: B3Format, decision: str, bits: str
) -> None:
    sampled, debug = DECISIONS[decision]
    trace_id = TRACES[bits]
    parent = TraceContext(trace_id, None, PARENT, sampled, debug, False)
    config = aiozipkin_client.make_trace_config(tracer, b3_format=b3_format)
    async with (
        their_servers() as theirs,
        aiohttp.ClientSession(trace_configs=[config], timeout=PEER_BOUND) as session,
    ):
        with aiozipkin_client.use_span(parent):
            async with session.get(theirs.url) as response:
                assert response.status == 200

    (arrival,) = theirs.arrivals
    if sampled:
        ours = recorder.take_one()
        assert (ours["traceId"], ours["parentId"]) == (trace_id, PARENT)
        assert ours.get("debug", False) is debug
        span_id = ours["id"]
    else:
        recorder.expect_none()
        span_id = arrival.b3.get("x-b3-spanid") or arrival.b3["b3"].split("-")[1]
    assert is_span_id(span_id)
    assert span_id != PARENT

    # Both read the single header first, then the multi headers: for BOTH, each half alone.
    expect_read(arrival.whole, trace_id, span_id, sampled, debug)
    assert (arrival.multi_only is not None) is (b3_format is B3Format.BOTH)
    if arrival.multi_only is not None:
        expect_read(arrival.multi_only, trace_id, span_id, sampled, debug)

    otel_spans, py_zipkin_spans = theirs.otel_spans(), theirs.py_zipkin.spans()
    if not sampled:
        # Both follow our "no": neither records anything.
        assert otel_spans == []
        assert py_zipkin_spans == []
        return
    # As Zipkin puts them together: OpenTelemetry's server span is a child of ours (it never
    # shares ids); py_zipkin's shares our span's id.
    (otel_server,) = otel_spans
    (py_zipkin_server,) = py_zipkin_spans
    TraceTree(as_zipkin_stores([ours, otel_server, py_zipkin_server]), outside=[PARENT])
    assert (otel_server["kind"], otel_server["parentId"]) == ("SERVER", span_id)
    assert_joined(ours, py_zipkin_server)
    # Debug, in their spans, is not what arrived (README says so): OpenTelemetry's Zipkin
    # exporter writes "debug": true on every sampled span; py_zipkin's spans have no debug.
    assert otel_server.get("debug") is True
    assert "debug" not in py_zipkin_server


# -- they call us: OpenTelemetry and py_zipkin callers ------------------------------------------

#: How OpenTelemetry's users propagate to B3 services: ``OTEL_PROPAGATORS=b3multi``, ``b3``, or
#: ``tracecontext,b3multi`` to keep W3C ``traceparent`` for other OpenTelemetry services too.
CALLER_PROPAGATORS: dict[str, Callable[[], TextMapPropagator]] = {
    "multi": B3MultiFormat,
    "single": B3SingleFormat,
    "tracecontext+multi": lambda: CompositePropagator(
        [TraceContextTextMapPropagator(), B3MultiFormat()]
    ),
}
with_caller_propagators = pytest.mark.parametrize(
    "propagator", list(CALLER_PROPAGATORS.values()), ids=list(CALLER_PROPAGATORS)
)


@pytest.mark.parametrize("caller_parent", [False, True], ids=["root", "under-a-server-span"])
@with_caller_propagators
async def test_opentelemetry_caller_is_joined_by_our_server(
    tracer_sampling: Callable[[bool], Tracer],
    recorder: SpanRecorder,
    backend: Backend,
    propagator: Callable[[], TextMapPropagator],
    caller_parent: bool,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caller = provider.get_tracer("otel-caller")

    async def call(ours: URL) -> None:
        with caller.start_as_current_span("call", kind=otel_trace.SpanKind.CLIENT):
            headers: dict[str, str] = {}
            propagator().inject(headers)
            assert await plain_get(ours / "call", headers) == "called:200"

    # Our tracer would sample nothing: only the caller's "yes" can make our spans.
    async with our_service(tracer_sampling(False), backend.url / "ok") as ours:
        if caller_parent:
            # The usual shape: a service traced by OpenTelemetry calls us while serving.
            with caller.start_as_current_span("serve", kind=otel_trace.SpanKind.SERVER):
                await call(ours)
        else:
            await call(ours)
        await recorder.wait_for(2)
    provider.shutdown()

    theirs = as_zipkin_json(exporter, "otel-caller")
    assert len(theirs) == (2 if caller_parent else 1)
    # It sends no parent span id, ever: with a parent, our SERVER span cannot name it.
    expect_our_service_joined(
        recorder.take(2), theirs, backend.take_one(), parent_sent=not caller_parent
    )


@with_caller_propagators
async def test_opentelemetry_unsampled_caller_is_carried_on_unsampled(
    tracer_sampling: Callable[[bool], Tracer],
    recorder: SpanRecorder,
    backend: Backend,
    propagator: Callable[[], TextMapPropagator],
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    caller = provider.get_tracer("otel-caller")
    # Our tracer would sample everything: only the caller's "no" keeps our spans out.
    async with our_service(tracer_sampling(True), backend.url / "ok") as ours:
        with caller.start_as_current_span("call") as span:
            headers: dict[str, str] = {}
            propagator().inject(headers)
            assert await plain_get(ours / "call", headers) == "called:200"
    context = span.get_span_context()
    assert not context.trace_flags.sampled
    recorder.expect_none()
    expect_unsampled_call(
        backend.take_one(), format(context.trace_id, "032x"), format(context.span_id, "016x")
    )


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled"])
async def test_py_zipkin_caller_is_joined_by_our_server(
    tracer_sampling: Callable[[bool], Tracer],
    recorder: SpanRecorder,
    backend: Backend,
    sampled: bool,
) -> None:
    transport = _Collected()
    # Our tracer's own sampler says the opposite of the caller.
    async with our_service(tracer_sampling(not sampled), backend.url / "ok") as ours:
        with zipkin_client_span(
            service_name="py-zipkin-caller",
            span_name="call",
            transport_handler=transport,
            sample_rate=100.0 if sampled else 0.0,
            use_128bit_trace_id=True,
            host=PY_ZIPKIN_HOST,
        ):
            # As py_zipkin's users send them: it writes None for a root's parent, and always
            # "X-B3-Flags: 0", which is not debug (it cannot propagate debug).
            headers = {name: value for name, value in create_http_headers().items() if value}
            assert headers["X-B3-Flags"] == "0"
            assert await plain_get(ours / "call", headers) == "called:200"
        if sampled:
            await recorder.wait_for(2)

    received = backend.take_one()
    if not sampled:
        assert transport.payloads == []
        recorder.expect_none()
        expect_unsampled_call(received, headers["X-B3-TraceId"], headers["X-B3-SpanId"])
        return
    theirs = transport.spans()
    assert [span["id"] for span in theirs] == [headers["X-B3-SpanId"]]
    expect_our_service_joined(recorder.take(2), theirs, received)


# -- zipkin-js, in Node.js ----------------------------------------------------------------------


@dataclass
class JsPeer:
    """``peer.js server``: zipkin-js's HttpServer instrumentation on a port of 127.0.0.1."""

    url: URL

    async def spans(self) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession(timeout=PEER_BOUND) as session,
            session.get(self.url / "spans") as response,
        ):
            spans: list[dict[str, Any]] = await response.json()
            return spans


async def _end(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` unless it has ended, and reap it."""
    if process.returncode is None:
        process.kill()
    await process.wait()


@asynccontextmanager
async def node_server(mode: str) -> AsyncIterator[URL]:
    """``peer.js MODE``, serving 127.0.0.1 until the block ends; yields its base URL."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(PEER_DIR / "peer.js"),
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), PEER_TIMEOUT)
        if not line:
            assert process.stderr is not None
            error = await asyncio.wait_for(process.stderr.read(), PEER_TIMEOUT)
            pytest.fail(f"peer.js {mode} ended before listening: {error.decode()}")
        port = json.loads(line)["port"]
        yield URL.build(scheme="http", host="127.0.0.1", port=port)
        # Closing its stdin ends it.
        process.stdin.close()
        await asyncio.wait_for(process.wait(), PEER_TIMEOUT)
    finally:
        await _end(process)


@pytest.fixture
async def js_server() -> AsyncIterator[JsPeer]:
    async with node_server("server") as url:
        yield JsPeer(url)


async def js_client(url: URL, sampled: bool, debug: bool, bits: str) -> dict[str, Any]:
    """``peer.js client``: one GET of ``url`` through zipkin-js's HttpClient instrumentation."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(PEER_DIR / "peer.js"),
        "client",
        str(url),
        "1" if sampled else "0",
        "1" if debug else "0",
        bits,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), PEER_TIMEOUT)
    finally:
        await _end(process)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


@needs_node
@pytest.mark.parametrize("b3_format", list(B3Format), ids=lambda f: f.name.lower())
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_zipkin_js_server_joins_our_client_span(
    tracer: Tracer,
    recorder: SpanRecorder,
    js_server: JsPeer,
    b3_format: B3Format,
    decision: str,
) -> None:
    sampled, debug = DECISIONS[decision]
    trace_id = TRACES["128"]
    parent = TraceContext(trace_id, None, PARENT, sampled, debug, False)
    config = aiozipkin_client.make_trace_config(tracer, b3_format=b3_format)
    async with aiohttp.ClientSession(trace_configs=[config], timeout=PEER_BOUND) as session:
        with aiozipkin_client.use_span(parent):
            async with session.get(js_server.url / "joined") as response:
                answer = await response.json()
    joined = answer["id"]
    theirs = await js_server.spans()

    if b3_format is B3Format.SINGLE:
        # zipkin-js 0.22 reads only the multi headers: it starts a trace of its own. This is
        # what B3Format.BOTH is for.
        assert set(answer["headers"]) == {"b3"}
        assert joined["traceId"] != trace_id
        if sampled:
            recorder.take_one()
        return

    if not sampled:
        recorder.expect_none()
        assert theirs == []
        assert (joined["traceId"], joined["parentSpanId"]) == (trace_id, PARENT)
        assert is_span_id(joined["spanId"])
        assert joined["spanId"] != PARENT
        assert joined["sampled"] is False
        assert joined["debug"] is False
        return

    ours = recorder.take_one()
    assert (joined["traceId"], joined["spanId"], joined["parentSpanId"]) == (
        trace_id,
        ours["id"],
        PARENT,
    )
    assert joined["sampled"] is True
    assert joined["debug"] is debug
    (their_server,) = theirs
    assert their_server.get("debug", False) is debug
    tree = TraceTree([ours, their_server], outside=[PARENT])
    assert_joined(tree.one("app", "CLIENT"), tree.one("zipkin-js-server", "SERVER"))


@needs_node
@pytest.mark.parametrize("bits", list(TRACES))
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_zipkin_js_caller_is_joined_by_our_server(
    tracer_sampling: Callable[[bool], Tracer],
    recorder: SpanRecorder,
    backend: Backend,
    bits: str,
    decision: str,
) -> None:
    sampled, debug = DECISIONS[decision]
    # Our tracer's own sampler says the opposite of the caller.
    async with our_service(tracer_sampling(not sampled), backend.url / "ok") as ours:
        result = await js_client(ours / "call", sampled, debug, bits)
        if sampled:
            await recorder.wait_for(2, about=result)
    assert (result["status"], result["body"]) == (200, "called:200")
    root, sent = result["root"], result["headers"]
    # zipkin-js makes 64-bit trace ids unless told otherwise: they must go on as they came.
    assert len(root["traceId"]) == int(bits) // 4
    if debug:
        # zipkin-js sends both for debug: the flag and "sampled".
        assert (sent["X-B3-Flags"], sent["X-B3-Sampled"]) == ("1", "1")
    received = backend.take_one()
    if not sampled:
        recorder.expect_none()
        assert result["spans"] == []
        expect_unsampled_call(received, root["traceId"], sent["X-B3-SpanId"])
        return
    expect_our_service_joined(
        recorder.take(2), result["spans"], received, outside=(root["spanId"],), debug=debug
    )


# -- OpenTelemetry JS, in Node.js, between two of our services ------------------------------------


async def answer_ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@needs_node
@pytest.mark.parametrize("inject", ["single", "multi"])
@pytest.mark.parametrize("b3_format", list(B3Format), ids=lambda f: f.name.lower())
@pytest.mark.parametrize("decision", list(DECISIONS))
async def test_opentelemetry_js_between_our_services(
    tracer_sampling: Callable[[bool], Tracer],
    recorder: SpanRecorder,
    b3_format: B3Format,
    decision: str,
    inject: str,
) -> None:
    """Our client calls a service traced by OpenTelemetry JS, which calls our server while
    serving (``peer.js otel-relay``): one trace through all three, the decision kept, and
    debug kept where OpenTelemetry JS keeps it."""
    sampled, debug = DECISIONS[decision]
    # Our tracer's own sampler says the opposite of the decision that travels.
    tracer = tracer_sampling(not sampled)
    app = web.Application()
    aiozipkin_client.setup(app, tracer)
    app.router.add_get("/ok", answer_ok)
    config = aiozipkin_client.make_trace_config(tracer, b3_format=b3_format)
    parent = TraceContext(TRACES["128"], None, PARENT, sampled, debug, False)
    async with (
        start_app(app) as ours,
        node_server("otel-relay") as relay,
        aiohttp.ClientSession(trace_configs=[config], timeout=PEER_BOUND) as session,
    ):
        url = (relay / "relay").with_query(inject=inject, to=str(ours / "ok"))
        with aiozipkin_client.use_span(parent):
            async with session.get(url) as response:
                answer = await response.json()
        if sampled:
            await recorder.wait_for(2, about=answer)
    assert answer["status"] == 200, answer
    sent = b3_headers(answer["sent"])
    if not sampled:
        # It records nothing and passes the "no" on, in the trace our client started.
        assert answer["spans"] == []
        recorder.expect_none()
        if inject == "single":
            assert sent["b3"].startswith(TRACES["128"] + "-")
            assert sent["b3"].endswith("-0")
        else:
            assert (sent["x-b3-traceid"], sent["x-b3-sampled"]) == (TRACES["128"], "0")
        return

    relay_server, relay_client = (
        next(span for span in answer["spans"] if span["name"] == name) for name in ("relay", "call")
    )
    assert relay_client["parentSpanId"] == relay_server["spanId"]
    for span in (relay_server, relay_client):
        assert span["traceId"] == TRACES["128"]
        assert span["sampled"] is True

    # It reads the single header when there is one, and keeps debug only when it writes the
    # same format as it read: "d" read from b3 is not written as X-B3-Flags, nor the other way.
    read_single = b3_format is not B3Format.MULTI
    kept_debug = debug and read_single is (inject == "single")
    spans = recorder.take(2)
    validate_spans(spans)
    our_client = next(span for span in spans if span["kind"] == "CLIENT")
    our_server = next(span for span in spans if span["kind"] == "SERVER")
    assert our_client["parentId"] == PARENT
    assert our_client.get("debug", False) is debug
    assert relay_server["parentSpanId"] == our_client["id"]
    # Our server joined its CLIENT span: same trace, shared id. It sends no parent span id.
    assert (our_server["traceId"], our_server["id"]) == (TRACES["128"], relay_client["spanId"])
    assert our_server["shared"] is True
    assert "parentId" not in our_server
    assert our_server.get("debug", False) is kept_debug


# -- OpenTelemetry's aiohttp client instrumentation on the same session -------------------------

B3_CONFLICT = (
    "this ClientSession also has OpenTelemetry's aiohttp client instrumentation, whose"
    " propagator writes B3 headers too (x-b3-sampled, x-b3-spanid, x-b3-traceid): {outcome}."
    " Trace the session with one of them, or give OpenTelemetry a propagator without B3."
)
SCOPE = (
    "on every request OpenTelemetry traces (sampled or not: an unsampled one tells the"
    " services called not to record)"
)
OTEL_WINS = (
    f"OpenTelemetry's runs later and overwrites ours, so {SCOPE} the services called"
    " join OpenTelemetry's trace and our CLIENT spans have no children"
)
OURS_WIN = (
    f"ours runs later and replaces OpenTelemetry's, so {SCOPE} the services called"
    " join our trace and OpenTelemetry's CLIENT spans have no children"
)
MIXED = (
    "OpenTelemetry's runs later but writes only some of the encodings ours wrote, so"
    f" {SCOPE} the request carries both traces: services that read the single b3"
    " header first (as ours, OpenTelemetry's and py_zipkin's do) join {single} trace,"
    " those that read only X-B3-* (zipkin-js) join {multi} trace"
)


@pytest.fixture
def b3_everywhere() -> Iterator[None]:
    """OpenTelemetry's global propagator set to B3 (as its users do for Zipkin), then back."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(B3MultiFormat())
    yield
    propagate.set_global_textmap(before)


def b3_conflicts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "aiozipkin_client" and "OpenTelemetry" in record.getMessage()
    ]


@pytest.mark.usefixtures("b3_everywhere")
@pytest.mark.parametrize("otel_last", [True, False], ids=["otel-last", "ours-last"])
async def test_opentelemetry_writing_b3_on_the_same_session_is_warned_about(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    otel_last: bool,
) -> None:
    provider = TracerProvider()
    otel = create_trace_config(tracer_provider=provider)
    ours = aiozipkin_client.make_trace_config(tracer)
    configs = [ours, otel] if otel_last else [otel, ours]
    with caplog.at_level(logging.WARNING, "aiozipkin_client"):
        async with aiohttp.ClientSession(trace_configs=configs) as session:
            for _ in range(3):
                async with session.get(backend.url / "ok") as response:
                    assert await response.text() == "ok"
    provider.shutdown()

    # Once per session, naming the trace the services called join.
    assert b3_conflicts(caplog) == [
        B3_CONFLICT.format(outcome=OTEL_WINS if otel_last else OURS_WIN)
    ]
    # And that is what happened: the server got the later config's span ids.
    ours_ids = {span["id"] for span in recorder.take(3)}
    sent_ids = {received.b3()["x-b3-spanid"] for received in backend.received}
    assert len(sent_ids) == 3
    if otel_last:
        assert sent_ids.isdisjoint(ours_ids)
    else:
        assert sent_ids == ours_ids


@pytest.mark.parametrize(
    ("ours", "theirs", "single", "multi"),
    [
        (B3Format.BOTH, B3MultiFormat, "our", "OpenTelemetry's"),
        (B3Format.SINGLE, B3MultiFormat, "our", "OpenTelemetry's"),
        (B3Format.MULTI, B3SingleFormat, "OpenTelemetry's", "our"),
        (B3Format.BOTH, B3SingleFormat, "OpenTelemetry's", "our"),
    ],
)
async def test_opentelemetry_writing_another_b3_encoding_leaves_both_traces(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    ours: B3Format,
    theirs: type[TextMapPropagator],
    single: str,
    multi: str,
) -> None:
    """OpenTelemetry running later sets only its own encoding: whatever of ours it does not
    write stays, so the request carries both traces, and the warning says which is which."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(theirs())
    provider = TracerProvider()
    try:
        configs = [
            aiozipkin_client.make_trace_config(tracer, b3_format=ours),
            create_trace_config(tracer_provider=provider),
        ]
        with caplog.at_level(logging.WARNING, "aiozipkin_client"):
            async with (
                aiohttp.ClientSession(trace_configs=configs) as session,
                session.get(backend.url / "ok") as response,
            ):
                assert response.status == 200
    finally:
        provider.shutdown()
        propagate.set_global_textmap(before)

    fields = ", ".join(_otel_fields(theirs()))
    message = B3_CONFLICT.replace("x-b3-sampled, x-b3-spanid, x-b3-traceid", fields).format(
        outcome=MIXED.format(single=single, multi=multi)
    )
    assert b3_conflicts(caplog) == [message]
    # What arrived is what the warning says: each encoding from the tracer it names.
    span = recorder.take_one()
    b3 = backend.take_one().b3()
    single_is_ours = b3["b3"].split("-")[1] == span["id"]
    multi_is_ours = b3["x-b3-spanid"] == span["id"]
    assert (single_is_ours, multi_is_ours) == (single == "our", multi == "our")


@pytest.mark.usefixtures("b3_everywhere")
async def test_opentelemetry_twice_on_a_session_is_judged_by_its_later_config(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """``instrument()`` plus an explicit ``create_trace_config`` puts OpenTelemetry on a session
    twice; its config after ours is the one that writes last."""
    provider = TracerProvider()
    configs = [
        create_trace_config(tracer_provider=provider),
        aiozipkin_client.make_trace_config(tracer),
        create_trace_config(tracer_provider=provider),
    ]
    with caplog.at_level(logging.WARNING, "aiozipkin_client"):
        async with (
            aiohttp.ClientSession(trace_configs=configs) as session,
            session.get(backend.url / "ok") as response,
        ):
            assert response.status == 200
    provider.shutdown()
    assert b3_conflicts(caplog) == [B3_CONFLICT.format(outcome=OTEL_WINS)]
    assert backend.take_one().b3()["x-b3-spanid"] != recorder.take_one()["id"]


class _BrokenPropagator(B3MultiFormat):
    """A propagator whose ``fields`` fails, as a user's own propagator might."""

    @property
    def fields(self) -> set[str]:
        raise RuntimeError("broken fields")


async def test_a_failing_opentelemetry_propagator_leaves_the_duplicate_warning(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading OpenTelemetry's propagator fails: that is logged, the request is untouched, and
    the warning about our two configs on the session still comes."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_BrokenPropagator())
    provider = TracerProvider()
    try:
        configs = [
            aiozipkin_client.make_trace_config(tracer),
            aiozipkin_client.make_trace_config(tracer),
            create_trace_config(tracer_provider=provider),
        ]
        with caplog.at_level(logging.WARNING, "aiozipkin_client"):
            async with (
                aiohttp.ClientSession(trace_configs=configs) as session,
                session.get(backend.url / "ok") as response,
            ):
                assert await response.text() == "ok"
    finally:
        provider.shutdown()
        propagate.set_global_textmap(before)
    messages = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [(level, text) for level, text, _ in messages] == [
        ("ERROR", "aiozipkin_client: reading OpenTelemetry's propagator failed"),
        (
            "WARNING",
            "this ClientSession has 2 aiozipkin_client trace configs: each traces every"
            " request, so every request is reported 2 times. Give a session one tracing"
            " config: one make_trace_config(tracer).",
        ),
    ]
    error = messages[0][2]
    assert error is not None
    assert str(error[1]) == "broken fields"
    assert len(recorder.take(2)) == 2
    backend.take_one()


def _otel_fields(propagator: TextMapPropagator) -> list[str]:
    return sorted(name for name in propagator.fields if name.lower().startswith(("b3", "x-b3-")))


@pytest.mark.usefixtures("b3_everywhere")
async def test_opentelemetry_instrumenting_every_session_is_found_too(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """``AioHttpClientInstrumentor().instrument()`` adds its config to every new session,
    after the session's own."""
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument()
    try:
        with caplog.at_level(logging.WARNING, "aiozipkin_client"):
            async with aiohttp.ClientSession(
                trace_configs=[aiozipkin_client.make_trace_config(tracer)]
            ) as session:
                assert len(session.trace_configs) == 2
                async with session.get(backend.url / "ok") as response:
                    assert response.status == 200
    finally:
        instrumentor.uninstrument()
    assert b3_conflicts(caplog) == [B3_CONFLICT.format(outcome=OTEL_WINS)]
    recorder.take_one()


async def test_opentelemetry_with_its_own_headers_is_left_alone(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """With its default propagator (W3C ``traceparent``) OpenTelemetry does not touch our
    headers: both traces go on, and nothing is said."""
    provider = TracerProvider()
    configs = [
        aiozipkin_client.make_trace_config(tracer),
        create_trace_config(tracer_provider=provider),
    ]
    with caplog.at_level(logging.DEBUG, "aiozipkin_client"):
        async with (
            aiohttp.ClientSession(trace_configs=configs) as session,
            session.get(backend.url / "ok") as response,
        ):
            assert response.status == 200
    provider.shutdown()
    assert [record.getMessage() for record in caplog.records] == []
    ours = recorder.take_one()
    received = backend.take_one()
    assert received.b3()["x-b3-spanid"] == ours["id"]
    assert received.headers["traceparent"].startswith("00-")
