"""Three reference points that are not tracers: what any tracer of all 16 signals must pay.

* ``empty_config``: an ``aiohttp.TraceConfig()`` with no handler at all. This is aiohttp's own
  machinery for a session that has a trace config (a trace context per request, a ``Trace``
  object per config, a parameters object per signal sent), before any handler runs. Every
  tracer here pays it; the report subtracts it to show each overhead *above aiohttp's own cost*.
* ``listen_only``: a ``TraceConfig`` with a handler on each of aiohttp's 16 client signals that
  does nothing: the above plus one awaited call per handler, still before a tracer records
  anything.
* ``bare_recorder``: the least a tracer recording what aiozipkin_client records could do: a
  span id, B3 headers, a timestamp per signal, the method, path, URL and status, one JSON
  object per span, kept in a list. No validation, no parsers, no privacy, no end-of-body
  tracking, no reporting. It follows the parent's decision as the tracers do: under an
  unsampled parent it only makes a span id and propagates it with ``X-B3-Sampled: 0``. Any real
  tracer of every signal costs at least this much.

The floors find their parent in :data:`PARENT`, which the benchmark sets around each request
exactly as it sets the tracers' own context variables (``bench.tracers``), so every
configuration pays the same for its parent's scope. They show how much of a tracer's overhead
is within its reach at all.
"""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from random import getrandbits
from types import SimpleNamespace
from typing import Any, Final

import aiohttp

from aiozipkin_client.client import SIGNALS

from .workloads import Parent

__all__ = ("FLOORS", "PARENT", "bare_recorder", "empty_config", "listen_only")

#: In report order; ``empty_config`` is the floor the "above aiohttp's own cost" figures use.
FLOORS: Final = ("empty_config", "listen_only", "bare_recorder")

#: The current request's parent, for the configurations that are not tracers.
PARENT: Final[ContextVar[Parent | None]] = ContextVar("bench_parent", default=None)

# The same 16 signals our instrumentation listens to, so the floors measure the same dispatch.
_SIGNALS: Final = SIGNALS
_quote: Final = json.encoder.encode_basestring


async def _nothing(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    return None


def empty_config() -> aiohttp.TraceConfig:
    """A trace config without a single handler."""
    return aiohttp.TraceConfig()


def listen_only() -> aiohttp.TraceConfig:
    """A handler that does nothing on every signal."""
    config = aiohttp.TraceConfig()
    for name in _SIGNALS:
        getattr(config, name).append(_nothing)
    return config


def bare_recorder(spans: list[str]) -> aiohttp.TraceConfig:
    """The minimum recording of every signal under the parent in :data:`PARENT`; finished
    spans' JSON is appended to ``spans``."""

    async def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        parent = PARENT.get()
        if parent is None:
            return
        trace_id, parent_id, sampled = parent
        span_id = f"{getrandbits(64):016x}"
        headers = params.headers
        headers["X-B3-TraceId"] = trace_id
        headers["X-B3-SpanId"] = span_id
        headers["X-B3-ParentSpanId"] = parent_id
        if not sampled:
            headers["X-B3-Sampled"] = "0"
            return
        headers["X-B3-Sampled"] = "1"
        context.span = (trace_id, parent_id, span_id, params.method, params.url, time.time(), [])

    async def event(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            span[6].append(time.time())

    async def end(
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

    config = aiohttp.TraceConfig()
    for name in _SIGNALS:
        handler = (
            start if name == "on_request_start" else end if name == "on_request_end" else event
        )
        getattr(config, name).append(handler)
    return config
