"""The typed state one traced request keeps on aiohttp's trace context.

A request is one call to ``session.request()``; it has one or more *hops* (HTTP exchanges: the
first request and one per followed redirect). Each recorded hop becomes one CLIENT span. Hops
collect their data here and are turned into an aiozipkin span only when they end, so nothing is
ever registered in the tracer's table of unfinished spans while the request is in flight.

Everything a hop keeps is bounded: a fixed set of fields, one annotation per event kind (a
connection phase can repeat only as often as aiohttp retries it), and counters instead of
per-chunk records.
"""

from __future__ import annotations

from collections.abc import Callable
from time import time
from types import SimpleNamespace

from aiozipkin.helpers import TraceContext
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .annotations import Phase
from .parsers import RequestView
from .reporting._model import annotation_value, span_name, tag_value

__all__ = ("Hop", "RequestState", "TraceConfigContext")


class Hop:
    """One HTTP exchange: its identifiers, timing and the span data parsers give it.

    It is also the :class:`~aiozipkin_client.parsers.SpanCustomizer` handed to parsers.
    """

    __slots__ = (
        "_headers",
        "_view",
        "active",
        "annotations",
        "body_bytes",
        "body_first",
        "body_last",
        "children",
        "closed",
        "context",
        "end",
        "headers_sent",
        "method",
        "phase_starts",
        "phase_totals",
        "recording",
        "reported",
        "span_name",
        "start",
        "tags",
        "unwatch",
        "url",
    )

    def __init__(
        self,
        context: TraceContext,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        start: float,
    ) -> None:
        self.context = context
        self.method = method
        self.url = url
        self._headers = headers
        self._view: RequestView | None = None
        self.start = start
        self.recording = bool(context.sampled)
        # A redirect hop is prepared (ids allocated, headers injected) before aiohttp sends it;
        # it becomes active once aiohttp starts connecting for it.
        self.active = False
        self.headers_sent = False
        # closed: the exchange is over (end is set); reported: handed to the tracer.
        self.closed = False
        self.reported = False
        self.end: float | None = None
        if not self.recording:
            # Not sampled: ids and headers only. The fields below are read only for hops that
            # record (every handler checks ``recording`` first), so they are not even set.
            return
        self.span_name: str | None = None
        self.tags: dict[str, str] = {}
        self.annotations: list[tuple[float, str]] = []
        self.phase_starts: dict[Phase, float] = {}
        self.phase_totals: dict[Phase, float] = {}
        # (phase, start, end) for connection_phases="spans".
        self.children: list[tuple[Phase, float, float]] = []
        self.body_bytes = 0
        self.body_first: float | None = None
        self.body_last: float | None = None
        # Detaches the callbacks that wait for the response body to end.
        self.unwatch: Callable[[], None] | None = None

    @property
    def request(self) -> RequestView:
        """The request as parsers and samplers see it; made on first use only."""
        view = self._view
        if view is None:
            view = self._view = RequestView(self.method, self.url, CIMultiDictProxy(self._headers))
        return view

    def event(self, value: str, timestamp: float | None = None) -> None:
        """Record one of our own events (a non-empty constant: nothing to check)."""
        self.annotations.append((time() if timestamp is None else timestamp, value))

    # SpanCustomizer, for parsers. Their values are checked here, as they enter, and never again.
    def name(self, name: str) -> None:
        self.span_name = span_name(name)

    def tag(self, key: str, value: str) -> None:
        tag = tag_value(key, value)
        if tag is not None:
            self.tags[tag[0]] = tag[1]

    def annotate(self, value: str, timestamp: float | None = None) -> None:
        text = annotation_value(value)
        if text is not None:
            self.annotations.append((time() if timestamp is None else timestamp, text))

    # Connection phases
    def phase_start(self, phase: Phase, now: float, as_annotations: bool) -> None:
        self.phase_starts[phase] = now
        if as_annotations:
            self.event(phase.start, now)

    def phase_end(self, phase: Phase, now: float, as_annotations: bool) -> None:
        started = self.phase_starts.pop(phase, None)
        if started is None:
            return  # an end without its start: nothing to measure
        total = self.phase_totals.get(phase, 0.0) + (now - started)
        self.phase_totals[phase] = total
        self.tags[phase.duration_tag] = f"{total * 1000:.3f}"
        if as_annotations:
            self.event(phase.end, now)
        else:
            self.children.append((phase, started, now))

    def body_chunk(self, size: int, now: float) -> None:
        if self.body_first is None:
            self.body_first = now
        self.body_last = now
        self.body_bytes += size


class RequestState:
    """What one traced request needs between aiohttp's signals."""

    __slots__ = ("ended", "hop", "injected", "parent_span_id", "previous", "propagate")

    def __init__(self, parent_span_id: str | None, propagate: bool) -> None:
        self.parent_span_id = parent_span_id
        self.propagate = propagate
        # True once this package wrote B3 headers into the request's headers.
        self.injected = False
        # The hop in flight, prepared (after a redirect) or waiting for its response body.
        self.hop: Hop | None = None
        # A redirected hop whose span waits for the next hop to start: if the request fails
        # before that (too many redirects, a bad Location), the error belongs to it.
        self.previous: Hop | None = None
        # aiohttp sent on_request_end or on_request_exception.
        self.ended = False


class TraceConfigContext(SimpleNamespace):
    """aiohttp's per-request trace context, with our state as one typed attribute."""

    trace_request_ctx: object
    state: RequestState | None

    def __init__(self, trace_request_ctx: object = None) -> None:
        # What SimpleNamespace(trace_request_ctx=...) does, without its keyword handling:
        # aiohttp makes one of these for every request.
        self.trace_request_ctx = trace_request_ctx
        self.state = None
