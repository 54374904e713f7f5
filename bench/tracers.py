"""The configurations the benchmark compares, each reporting to the same local collector.

Every request is the child of its own remote parent (``bench.workloads``: sampled, unsampled or
1% sampled, the same sequence for everyone), given to each configuration in its own form and
made current around the request, and each tracer reports through its own library's standard
path:

* ``none``: no trace config at all;
* ``aiozipkin``: ``aiozipkin.make_trace_config(tracer)`` with ``aiozipkin.create``'s transport;
  the parent is a ``TraceContext`` in aiozipkin's ``zipkin_context`` variable (aiozipkin traces
  a request only when it has a parent);
* ``opentelemetry``: ``create_trace_config`` of opentelemetry-instrumentation-aiohttp-client with
  the SDK's ``TracerProvider``, a ``BatchSpanProcessor`` and the Zipkin JSON exporter; the parent
  is a remote ``NonRecordingSpan`` in a ``Context`` made current with ``context.attach``, and
  the sampler is ``ParentBased`` (whose root sampler is ``ALWAYS_ON``, ``ALWAYS_OFF`` or
  ``TraceIdRatioBased(0.01)`` by mode), so the parent's flag decides;
* ``aiozipkin_client``: this package's ``make_trace_config(tracer)`` with every signal and tag
  (its defaults), reporting through ``aiozipkin_client.create``; the parent is a
  ``TraceContext`` in ``zipkin_context``, the variable ``aiozipkin_client.use_span`` sets;
* ``empty_config``, ``listen_only``, ``bare_recorder`` and ``same_spans``: reference points, not
  tracers (see ``bench.floors``); their parent is in ``bench.floors.PARENT``, except for
  ``same_spans``, which stands for our client and takes it as ``aiozipkin_client`` does.

Sampling: the tracers' own rates (``sample_rate`` of both Zipkin tracers, the OpenTelemetry root
sampler) are set to the mode's rate (1.0, 0.0, 0.01) as a user would, but they are never
consulted: every request has a parent with an explicit decision, and that decision wins in all
three tracers. This is what makes the 1% case deterministic and the same for everyone.

The parents are made, and turned into each configuration's form, before the measured time
(:meth:`Tracing.scope`); what is timed per request is entering and leaving the parent's scope,
the request, and the tracing. Entering a scope costs everyone one small object and one context
variable set and reset (OpenTelemetry: ``attach``/``detach``, its own way of doing that).

Each reporter keeps its own defaults (batch sizes, intervals). :meth:`Tracing.flush` delivers
every span reported so far to the collector and returns once the collector took them; the
benchmark ends every measured slice with it (``bench.run``), so the cost of encoding and posting
the spans is charged to the tracer that made them, in the slice that made them. Only
OpenTelemetry has a public flush (``force_flush``); the two Zipkin reporters are flushed through
their internals (:func:`flush_aiozipkin`, :func:`flush_ours`), which only a benchmark may do.
:meth:`Tracing.close` stops the reporter at the end of a block, outside the measured time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from typing import Any, Final, Generic, TypeVar

import aiohttp
import aiozipkin
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from aiozipkin.transport import Transport as AiozipkinTransport
from opentelemetry import context as otel_context
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import aiozipkin_client
from aiozipkin_client.reporting import ZipkinTransport

from .floors import FLOORS, PARENT, bare_recorder, empty_config, listen_only, same_spans
from .workloads import ONE_PERCENT, SAMPLED, SAMPLING_RATES, UNSAMPLED, Parent, Scope

__all__ = (
    "CONFIGS",
    "SERVICE",
    "TRACERS",
    "Tracing",
    "flush_aiozipkin",
    "flush_ours",
    "start_tracing",
)

SERVICE: Final = "bench-client"
#: In report order; the first is the baseline every overhead is measured against.
TRACERS: Final = ("none", "aiozipkin", "opentelemetry", "aiozipkin_client")
CONFIGS: Final = (*TRACERS, *FLOORS)
#: How long a flush sleeps between two looks at whether its reporter has delivered everything,
#: and how long it waits at most (the collector is local and always answers at once).
FLUSH_POLL: Final = 0.05
FLUSH_TIMEOUT: Final = 30.0

T = TypeVar("T")


class _VarScope(Generic[T]):
    """``value`` in ``var`` for the duration of a ``with`` block."""

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: ContextVar[T], value: T) -> None:
        self._var = var
        self._value = value

    def __enter__(self) -> None:
        self._token: Token[T] = self._var.set(self._value)

    def __exit__(self, *exc_info: object) -> None:
        self._var.reset(self._token)


class _OtelScope:
    """An OpenTelemetry ``Context`` attached for the duration of a ``with`` block."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: otel_context.Context) -> None:
        self._context = context

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._context)

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self._token)


def _var_scopes(var: ContextVar[T], values: Sequence[T]) -> Scope:
    return lambda i: _VarScope(var, values[i])


def _floor_scopes(parents: Sequence[Parent]) -> Scope:
    return _var_scopes(PARENT, list(parents))


def _zipkin_scopes(parents: Sequence[Parent]) -> Scope:
    # trace_id, parent_id, span_id, sampled, debug, shared
    contexts = [TraceContext(p.trace_id, None, p.span_id, p.sampled, False, False) for p in parents]
    return _var_scopes(zipkin_context, contexts)


def _otel_scopes(parents: Sequence[Parent]) -> Scope:
    contexts = [
        set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    trace_id=int(p.trace_id, 16),
                    span_id=int(p.span_id, 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED if p.sampled else TraceFlags.DEFAULT),
                )
            )
        )
        for p in parents
    ]
    return lambda i: _OtelScope(contexts[i])


class Tracing:
    """One configuration, set up for one measured block."""

    def __init__(
        self,
        name: str,
        trace_configs: list[aiohttp.TraceConfig],
        scope: Callable[[Sequence[Parent]], Scope],
        flush: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        spans_per_request: float,
        tracer: aiozipkin.Tracer | None = None,
    ) -> None:
        self.name = name
        self.trace_configs = trace_configs
        #: ``scope(parents)`` turns the block's parents into this configuration's form (do it
        #: before the measured time) and gives the workloads' ``scope(i)`` factory.
        self.scope = scope
        #: Deliver every span reported so far; returns once the collector answered.
        self.flush = flush
        #: Flush and stop the reporter.
        self.close = close
        #: Spans the collector should receive per request, on average (the sampling rate for a
        #: tracer, 0 for the rest).
        self.spans_per_request = spans_per_request
        #: The Zipkin tracer, for the two that have one.
        self.tracer = tracer

    def expected_spans(self, parents: Sequence[Parent]) -> int:
        """Spans the collector should receive for requests made under ``parents``."""
        return sum(p.sampled for p in parents) if self.spans_per_request else 0


async def _nothing() -> None:
    return None


class _Posts:
    """Wakes a flush when its reporter finishes a post, instead of a timer every millisecond.

    A timer wake-up costs this VM about 77 µs of CPU (measured), several times per slice, so
    polling would charge the tracer under test for the benchmark's own waiting. ``wrap`` puts
    a wrapper around the reporter's post coroutine; the flush waits on :attr:`done`, and looks
    again at most every :data:`FLUSH_POLL` seconds in case a post it waited for never came.
    """

    def __init__(self) -> None:
        self.done = asyncio.Event()

    def wrap(self, post: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def post_and_tell(*args: Any) -> T:
            try:
                return await post(*args)
            finally:
                self.done.set()

        return post_and_tell

    async def wait_until(self, finished: Callable[[], bool], nudge: Callable[[], None]) -> None:
        async with asyncio.timeout(FLUSH_TIMEOUT):
            while True:
                self.done.clear()
                if finished():
                    return
                nudge()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLUSH_POLL):
                        await self.done.wait()


def flush_ours(transport: ZipkinTransport) -> Callable[[], Awaitable[None]]:
    """A flush for ``transport``: deliver what it buffers, as if its send interval ended now.

    A batch leaves the buffer only once the collector answered, so an empty buffer means
    delivered. The due time is moved again before every wait, because the sender sets it anew
    after each post, and a partial batch behind a full one would otherwise wait for the
    interval.
    """
    posts = _Posts()
    # An instance attribute: the sender looks the method up on the instance at every post.
    setattr(transport, "_post_oldest_batch", posts.wrap(transport._post_oldest_batch))  # noqa: B010

    def nudge() -> None:
        transport._next_flush = 0.0
        wake = transport._wake
        if wake is not None:
            wake.set()

    def finished() -> bool:
        return not transport.stats().queued

    return lambda: posts.wait_until(finished, nudge)


def flush_aiozipkin(tracer: aiozipkin.Tracer) -> Callable[[], Awaitable[None]]:
    """A flush for aiozipkin's tracer: deliver what its batch manager holds, and wait for a post
    its own loop had started.

    ``_send`` posts the open batch and the full ones. The manager's own loop takes full batches
    too (a full batch cancels its timer); it is idle again once it waits on a new timer, which
    it starts in the same step as its last post returns.
    """
    manager = _transport(tracer, AiozipkinTransport)._batch_manager
    posts = _Posts()
    manager._send_data = posts.wrap(manager._send_data)

    def finished() -> bool:
        timer = manager._timer
        return (
            not manager._active_batch
            and not manager._sending_batches
            and timer is not None
            and not timer.done()
        )

    async def flush() -> None:
        await manager._send()
        await posts.wait_until(finished, lambda: None)

    return flush


def _transport(tracer: aiozipkin.Tracer, kind: type[T]) -> T:
    """The tracer's transport, which must be a ``kind``."""
    transport = tracer._transport
    if not isinstance(transport, kind):
        raise TypeError(f"expected a {kind.__name__} transport, got {transport!r}")
    return transport


def _otel_root_sampler(sampling: str) -> Sampler:
    if sampling == SAMPLED:
        return ALWAYS_ON
    if sampling == UNSAMPLED:
        return ALWAYS_OFF
    if sampling == ONE_PERCENT:
        return TraceIdRatioBased(SAMPLING_RATES[ONE_PERCENT])
    raise ValueError(f"unknown sampling mode {sampling!r}")


async def start_tracing(name: str, collector_url: str, sampling: str = SAMPLED) -> Tracing:
    """Build configuration ``name`` (one of :data:`CONFIGS`), reporting to ``collector_url``,
    for requests whose parents are sampled as ``sampling`` says (``bench.workloads``)."""
    rate = SAMPLING_RATES[sampling]
    endpoint = aiozipkin.create_endpoint(SERVICE, ipv4="127.0.0.1")
    if name == "aiozipkin":
        tracer = await aiozipkin.create(collector_url, endpoint, sample_rate=rate)
        return Tracing(
            name,
            [aiozipkin.make_trace_config(tracer)],
            _zipkin_scopes,
            flush_aiozipkin(tracer),
            tracer.close,
            rate,
            tracer,
        )
    if name == "opentelemetry":
        provider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE}),
            sampler=ParentBased(_otel_root_sampler(sampling)),
        )
        provider.add_span_processor(BatchSpanProcessor(ZipkinExporter(endpoint=collector_url)))

        async def otel_flush() -> None:
            # Exports what is queued, in this thread (the SDK's force_flush does the export
            # itself, waiting for an export the worker thread may have under way).
            provider.force_flush()

        async def otel_close() -> None:
            # Exports what is queued and joins the exporter thread.
            provider.shutdown()

        return Tracing(
            name,
            [create_trace_config(tracer_provider=provider)],
            _otel_scopes,
            otel_flush,
            otel_close,
            rate,
        )
    if name == "aiozipkin_client":
        tracer = await aiozipkin_client.create(collector_url, endpoint, sample_rate=rate)
        ours = _transport(tracer, ZipkinTransport)
        return Tracing(
            name,
            [aiozipkin_client.make_trace_config(tracer)],
            _zipkin_scopes,
            flush_ours(ours),
            tracer.close,
            rate,
            tracer,
        )
    if name == "same_spans":
        transport = ZipkinTransport(collector_url)
        return Tracing(
            name,
            [same_spans(transport, SERVICE, "127.0.0.1")],
            _zipkin_scopes,
            flush_ours(transport),
            transport.close,
            rate,
        )
    floors: dict[str, Callable[[], aiohttp.TraceConfig]] = {
        "empty_config": empty_config,
        "listen_only": listen_only,
        "bare_recorder": lambda: bare_recorder([]),
    }
    if name == "none":
        return Tracing(name, [], _floor_scopes, _nothing, _nothing, 0.0)
    if name in floors:
        return Tracing(name, [floors[name]()], _floor_scopes, _nothing, _nothing, 0.0)
    raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
