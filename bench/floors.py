"""Four reference points that are not tracers: what any tracer of all 16 signals must pay.

* ``empty_config``: an ``aiohttp.TraceConfig()`` with no handler at all. This is aiohttp's own
  machinery for a session that has a trace config (a trace context per request, a ``Trace``
  object per config, a parameters object per signal sent), before any handler runs. Every
  tracer here pays it; the report subtracts it to show each overhead *above aiohttp's own cost*.
* ``listen_only``: a ``TraceConfig`` with a handler on each of aiohttp's 16 client signals that
  does nothing: the above plus one awaited call per handler, still before a tracer records
  anything.
* ``same_spans``: aiozipkin_client's own output for these workloads (the same B3 headers, and
  the same span with the same tags, annotations and endpoints, reported through the same
  :class:`~aiozipkin_client.reporting.ZipkinTransport` with its defaults), written with the
  least code: one straight function per signal, no options, no do-no-harm guards, no redirects,
  retries, errors or released bodies, no duplicate or collector checks. It shows what our spans
  cost to make and ship, apart from how our instrumentation is built (the first request of a
  block, which opens the connection, gets the same phases but no DNS annotations: there are
  none for 127.0.0.1).
* ``bare_recorder``: the least a tracer recording what aiozipkin_client records could do: a
  span id, B3 headers, a timestamp per signal, the method, path, URL and status, one JSON
  object per span, kept in a list. No validation, no parsers, no privacy, no end-of-body
  tracking, no reporting. It follows the parent's decision as the tracers do: under an
  unsampled parent it only makes a span id and propagates it with ``X-B3-Sampled: 0``. Any real
  tracer of every signal costs at least this much.

The three floors with handlers reach them as aiozipkin_client does (``aiozipkin_client._dispatch``):
plain functions that each signal calls itself, without aiosignal's loop over the receivers or
a coroutine per signal, and not at all for a request that has no span; any tracer can do this,
so they stay floors of our design.

The floors find their parent in :data:`PARENT` (``same_spans`` in the tracers' own variable, in
their form: it stands for our client), which the benchmark sets around each request
exactly as it sets the tracers' own context variables (``bench.tracers``), so every
configuration pays the same for its parent's scope. They show how much of a tracer's overhead
is within its reach at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from random import getrandbits
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from multidict import istr

from aiozipkin_client._dispatch import use_direct_signals
from aiozipkin_client.client import SIGNALS
from aiozipkin_client.parsers import redact_url
from aiozipkin_client.propagation import B3_HEADERS, is_valid_parent
from aiozipkin_client.reporting import ZipkinTransport
from aiozipkin_client.reporting._model import Annotation, Span, endpoint

from .workloads import Parent

__all__ = ("FLOORS", "PARENT", "bare_recorder", "empty_config", "listen_only", "same_spans")

#: In report order; ``empty_config`` is the floor the "above aiohttp's own cost" figures use.
FLOORS: Final = ("empty_config", "listen_only", "bare_recorder", "same_spans")

#: The current request's parent, for the configurations that are not tracers.
PARENT: Final[ContextVar[Parent | None]] = ContextVar("bench_parent", default=None)

# The same 16 signals our instrumentation listens to, so the floors measure the same dispatch.
_SIGNALS: Final = SIGNALS
_quote: Final = json.encoder.encode_basestring


def _nothing(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    return None


def empty_config() -> aiohttp.TraceConfig:
    """A trace config without a single handler."""
    return aiohttp.TraceConfig()


def _config(
    handlers: Mapping[str, Callable[..., None]],
    idle: Mapping[str, tuple[str, object]] | None = None,
) -> aiohttp.TraceConfig:
    """A trace config whose signals reach their handlers as ours do (``_dispatch``): plain
    functions called by the signal, and not called at all where ``idle`` says a request has
    nothing for them; ``_nothing`` for a signal ``handlers`` does not name."""
    config = aiohttp.TraceConfig()
    pairs = {}
    for name in _SIGNALS:
        handler = handlers.get(name, _nothing)
        pairs[name] = (_receiver(handler), handler)
    use_direct_signals(config, _SIGNALS, idle, pairs)
    for name in _SIGNALS:
        getattr(config, name).append(pairs[name][0])
    return config


def _receiver(handler: Callable[..., None]) -> Callable[..., Awaitable[None]]:
    """The coroutine receiver aiosignal's path would await (as the client's ``_receiver``)."""

    async def receiver(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        handler(session, context, params)

    return receiver


def _idle_without(attribute: str) -> dict[str, tuple[str, object]]:
    """Every signal but the request's start has nothing to do without ``attribute``."""
    return {name: (attribute, None) for name in _SIGNALS if name != "on_request_start"}


def listen_only() -> aiohttp.TraceConfig:
    """A handler that does nothing on every signal."""
    return _config({})


def bare_recorder(spans: list[str]) -> aiohttp.TraceConfig:
    """The minimum recording of every signal under the parent in :data:`PARENT`; finished
    spans' JSON is appended to ``spans``."""

    def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        parent = PARENT.get()
        if parent is None:
            return
        trace_id, parent_id, sampled = parent
        span_id = getrandbits(64).to_bytes(8, "big").hex()
        headers = params.headers
        headers["X-B3-TraceId"] = trace_id
        headers["X-B3-SpanId"] = span_id
        headers["X-B3-ParentSpanId"] = parent_id
        if not sampled:
            headers["X-B3-Sampled"] = "0"
            return
        headers["X-B3-Sampled"] = "1"
        context.span = (trace_id, parent_id, span_id, params.method, params.url, time.time(), [])

    def event(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            span[6].append(time.time())

    def end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = getattr(context, "span", None)
        if span is None:
            return
        trace_id, parent_id, span_id, method, url, started, events = span
        now = time.time()
        annotations = ",".join(f'{{"timestamp":{int(at * 1e6)},"value":"e"}}' for at in events)
        spans.append(
            f'{{"traceId":"{trace_id}","parentId":"{parent_id}","id":"{span_id}",'
            f'"kind":"CLIENT","name":"{method.lower()}","timestamp":{int(started * 1e6)},'
            f'"duration":{int((now - started) * 1e6)},"annotations":[{annotations}],'
            f'"tags":{{"http.method":"{method}","http.path":{_quote(url.path)},'
            f'"http.url":{_quote(str(url))},'
            f'"http.status_code":"{params.response.status}"}}}}'
        )

    handlers = {name: event for name in _SIGNALS}
    handlers.update(on_request_start=start, on_request_end=end)
    return _config(handlers, _idle_without("span"))


_TRACE_ID: Final = istr("X-B3-TraceId")
_SPAN_ID: Final = istr("X-B3-SpanId")
_PARENT_SPAN_ID: Final = istr("X-B3-ParentSpanId")
_SAMPLED: Final = istr("X-B3-Sampled")


def _micros(seconds: float) -> int:
    return int(seconds * 1000 * 1000)


class _Span:
    """What ``same_spans`` keeps of one request between signals."""

    __slots__ = (
        "annotations",
        "body",
        "connect",
        "name",
        "parent",
        "span_id",
        "start",
        "tags",
        "url",
    )

    def __init__(self, parent: TraceContext, span_id: str, method: str, url: Any) -> None:
        self.parent = parent
        self.span_id = span_id
        self.start = time.time()
        self.name = method.lower()
        self.tags = {
            "http.method": method.upper(),
            "http.path": url.path or "/",
            "http.url": str(redact_url(url)),
        }
        self.annotations: list[Annotation] = []
        self.url = url
        self.body: list[float] | None = None  # first chunk, last chunk, bytes
        self.connect = 0.0


def same_spans(transport: ZipkinTransport, service: str, ipv4: str) -> aiohttp.TraceConfig:
    """aiozipkin_client's headers and spans for these workloads with the least code (see the
    module's docstring), reported through ``transport``."""
    local = endpoint(service, ipv4, None, None)
    remotes: dict[tuple[str | None, int | None], Any] = {}

    def event(span: _Span, value: str, at: float | None = None) -> None:
        span.annotations.append(Annotation(_micros(time.time() if at is None else at), value))

    def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        # The tracers' parent, in the same variable, checked as our client checks it.
        parent = zipkin_context.get()
        if parent is None or not is_valid_parent(parent):
            return
        trace_id, parent_id, sampled = parent.trace_id, parent.span_id, parent.sampled
        headers = params.headers
        if headers:
            for name in B3_HEADERS:
                if name in headers:
                    headers.popall(name)
        span_id = getrandbits(64).to_bytes(8, "big").hex()
        headers.add(_TRACE_ID, trace_id)
        headers.add(_SPAN_ID, span_id)
        headers.add(_PARENT_SPAN_ID, parent_id)
        headers.add(_SAMPLED, "1" if sampled else "0")
        if sampled:
            context.span = _Span(parent, span_id, params.method, params.url)

    def reused(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            span.tags["connection.reused"] = "true"
            event(span, "connection.reuse")

    def connect_start(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            span.tags["connection.reused"] = "false"
            span.connect = time.time()
            event(span, "connect.start", span.connect)

    def connect_end(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            now = time.time()
            span.tags["connection.connect_ms"] = f"{(now - span.connect) * 1000:.3f}"
            event(span, "connect.end", now)

    def headers_sent(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            event(span, "ws")

    def chunk_sent(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        span = getattr(context, "span", None)
        if span is not None and params.chunk:
            now = time.time()
            if span.body is None:
                span.body = [now, now, float(len(params.chunk))]
            else:
                span.body[1] = now
                span.body[2] += len(params.chunk)

    def finish(span: _Span, status: int, size: int) -> None:
        now = time.time()
        tags = span.tags
        if span.body is not None:
            first, last, sent = span.body
            event(span, "request.body.start", first)
            event(span, "request.body.end", last)
            tags["http.request.size"] = str(int(sent))
            span.annotations.sort(key=lambda annotation: annotation.timestamp)
        tags["http.response.size"] = str(size)
        tags["http.status_code"] = str(status)
        url = span.url
        key = (url.host, url.port)
        remote = remotes.get(key)
        if remote is None:
            remote = remotes[key] = endpoint(None, url.host, None, url.port)
        start_us = _micros(span.start)
        transport._send_span(
            Span(
                span.parent.trace_id,
                span.span_id,
                span.parent.span_id,
                "CLIENT",
                span.name,
                start_us,
                max(_micros(now) - start_us, 1),
                local,
                remote,
                span.annotations,
                tags,
            )
        )

    def end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = getattr(context, "span", None)
        if span is None:
            return
        context.span = None
        event(span, "wr")
        response = params.response
        status, content = response.status, response.content
        if content.is_eof():
            finish(span, status, content.total_bytes)
        else:
            content.on_eof(lambda: finish(span, status, content.total_bytes))

    handlers: dict[str, Any] = {
        "on_request_start": start,
        "on_connection_reuseconn": reused,
        "on_connection_create_start": connect_start,
        "on_connection_create_end": connect_end,
        "on_request_headers_sent": headers_sent,
        "on_request_chunk_sent": chunk_sent,
        "on_request_end": end,
    }
    return _config(handlers, _idle_without("span"))
