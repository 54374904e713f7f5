"""The four configurations the benchmark compares, each reporting to the same local collector.

Every traced configuration samples 100%, makes each request a child of a sampled parent span in
its own tracer's form, and reports through its own library's standard path:

* ``none``: no trace config at all;
* ``aiozipkin``: ``aiozipkin.make_trace_config(tracer)`` with ``aiozipkin.create``'s transport
  (aiozipkin traces a request only when it has a parent, so one is set in its context variable);
* ``opentelemetry``: ``create_trace_config`` of opentelemetry-instrumentation-aiohttp-client with
  the SDK's ``TracerProvider``, a ``BatchSpanProcessor`` and the Zipkin JSON exporter;
* ``aiozipkin_client``: this package's ``make_trace_config(tracer)`` with every signal and tag
  (its defaults), reporting through ``aiozipkin_client.reporting.create``;
* ``listen_only`` and ``bare_recorder``: reference points, not tracers (see ``bench.floors``).

Each reporter keeps its own defaults (batch sizes, intervals). :meth:`Tracing.close` flushes
every span of the block to the collector, and the benchmark counts it inside the measured time,
so the cost of encoding and posting the spans is charged to the tracer that made them.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

import aiohttp
import aiozipkin
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import use_span

import aiozipkin_client
from aiozipkin_client import reporting

from .floors import FLOORS, bare_recorder, listen_only

__all__ = ("CONFIGS", "SERVICE", "TRACERS", "Tracing", "start_tracing")

SERVICE: Final = "bench-client"
#: In report order; the first is the baseline every overhead is measured against.
TRACERS: Final = ("none", "aiozipkin", "opentelemetry", "aiozipkin_client")
CONFIGS: Final = (*TRACERS, *FLOORS)


class Tracing:
    """One configuration, set up for one measured block."""

    def __init__(
        self,
        name: str,
        trace_configs: list[aiohttp.TraceConfig],
        parent: Callable[[], AbstractContextManager[object]],
        close: Callable[[], Awaitable[None]],
        spans_per_request: int,
    ) -> None:
        self.name = name
        self.trace_configs = trace_configs
        #: Enter around the workload: requests made inside are children of a sampled span.
        self.parent = parent
        #: Flush every span of the block to the collector and stop the reporter.
        self.close = close
        #: Spans the collector should receive per request.
        self.spans_per_request = spans_per_request


async def _nothing() -> None:
    return None


def _zipkin_parent() -> TraceContext:
    return TraceContext(
        trace_id=f"{random.getrandbits(128):032x}",
        parent_id=None,
        span_id=f"{random.getrandbits(64):016x}",
        sampled=True,
        debug=False,
        shared=False,
    )


@contextmanager
def _zipkin_scope(context: TraceContext) -> Iterator[TraceContext]:
    token = zipkin_context.set(context)
    try:
        yield context
    finally:
        zipkin_context.reset(token)


async def start_tracing(name: str, collector_url: str) -> Tracing:
    """Build configuration ``name`` (one of :data:`CONFIGS`), reporting to ``collector_url``."""
    endpoint = aiozipkin.create_endpoint(SERVICE, ipv4="127.0.0.1")
    if name == "none":
        return Tracing(name, [], nullcontext, _nothing, 0)
    if name == "aiozipkin":
        tracer = await aiozipkin.create(collector_url, endpoint, sample_rate=1.0)
        parent = _zipkin_parent()
        return Tracing(
            name,
            [aiozipkin.make_trace_config(tracer)],
            lambda: _zipkin_scope(parent),
            tracer.close,
            1,
        )
    if name == "opentelemetry":
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        provider.add_span_processor(BatchSpanProcessor(ZipkinExporter(endpoint=collector_url)))
        root = provider.get_tracer("bench").start_span("parent")

        async def otel_close() -> None:
            # Exports what is queued and joins the exporter thread (whose CPU time is ours).
            provider.shutdown()

        return Tracing(
            name,
            [create_trace_config(tracer_provider=provider)],
            lambda: use_span(root, end_on_exit=False),
            otel_close,
            1,
        )
    if name == "aiozipkin_client":
        tracer = await reporting.create(collector_url, endpoint, sample_rate=1.0)
        parent = _zipkin_parent()
        return Tracing(
            name,
            [aiozipkin_client.make_trace_config(tracer)],
            lambda: aiozipkin_client.use_span(parent),
            tracer.close,
            1,
        )
    if name == "listen_only":
        return Tracing(name, [listen_only()], nullcontext, _nothing, 0)
    if name == "bare_recorder":
        parent = _zipkin_parent()
        spans: list[str] = []
        return Tracing(
            name, [bare_recorder(parent.trace_id, parent.span_id, spans)], nullcontext, _nothing, 0
        )
    raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
