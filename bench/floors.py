"""Two reference points that are not tracers: what any tracer of all 16 signals must pay.

* ``listen_only``: a ``TraceConfig`` with a handler on each of aiohttp's 16 client signals that
  does nothing. This is aiohttp's own price for tracing (a trace context and a parameters object
  per signal, one awaited call per handler), paid before a tracer records anything.
* ``bare_recorder``: the least a tracer recording what aiozipkin_client records could do: a
  span id, B3 headers, a timestamp per signal, the method, path, URL and status, one JSON
  object per span, kept in a list. No validation, no parsers, no privacy, no end-of-body
  tracking, no reporting. Any real tracer of every signal costs at least this much.

They show how much of a tracer's overhead is within its reach at all.
"""

from __future__ import annotations

import json
import time
from random import getrandbits
from types import SimpleNamespace
from typing import Any, Final

import aiohttp

from aiozipkin_client.client import SIGNALS

__all__ = ("FLOORS", "bare_recorder", "listen_only")

FLOORS: Final = ("listen_only", "bare_recorder")

# The same 16 signals our instrumentation listens to, so the floors measure the same dispatch.
_SIGNALS: Final = SIGNALS
_quote: Final = json.encoder.encode_basestring


async def _nothing(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    return None


def listen_only() -> aiohttp.TraceConfig:
    """A handler that does nothing on every signal."""
    config = aiohttp.TraceConfig()
    for name in _SIGNALS:
        getattr(config, name).append(_nothing)
    return config


def bare_recorder(trace_id: str, parent_id: str, spans: list[str]) -> aiohttp.TraceConfig:
    """The minimum recording of every signal; finished spans' JSON is appended to ``spans``."""

    async def start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        span_id = f"{getrandbits(64):016x}"
        headers = params.headers
        headers["X-B3-TraceId"] = trace_id
        headers["X-B3-SpanId"] = span_id
        headers["X-B3-ParentSpanId"] = parent_id
        headers["X-B3-Sampled"] = "1"
        context.span = (span_id, params.method, params.url, time.time(), [])

    async def event(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        span = getattr(context, "span", None)
        if span is not None:
            span[4].append(time.time())

    async def end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = getattr(context, "span", None)
        if span is None:
            return
        span_id, method, url, started, events = span
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
