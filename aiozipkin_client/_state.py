"""The typed state one traced request keeps on aiohttp's trace context.

A request is one call to ``session.request()``; it has one or more *hops* (HTTP exchanges: the
first request and one per followed redirect). Each hop of a sampled request becomes one CLIENT
span. Hops collect their data here and are turned into a span only when they end, so nothing is
ever registered in the tracer's table of unfinished spans while the request is in flight. A
request that is not sampled has no hop: it keeps only its ids (``TraceConfigContext.unsampled``),
which a redirect's next hop needs.

The request itself keeps its state on the trace context aiohttp makes for it anyway
(:class:`TraceConfigContext`), and a hop records its events directly as the span's annotations
(epoch microseconds, as aiozipkin converts them), so the common request allocates no more than
it reports.

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
from .reporting._model import Annotation, annotation_value, span_name, tag_value

__all__ = ("Hop", "TraceConfigContext")


class Hop:
    """One recorded HTTP exchange: its identifiers, timing and the span data parsers give it.

    It is also the :class:`~aiozipkin_client.parsers.SpanCustomizer` handed to parsers.
    """

    # Slots, set in __init__: CPython reads and writes a slot with one specialised
    # instruction, where a default kept on the class sends every read through the type.
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
        "disordered",
        "end",
        "headers_sent",
        "method",
        "phase_starts",
        "phase_totals",
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
        self.start = start
        #: A redirect hop is prepared (ids allocated, headers injected) before aiohttp sends
        #: it; it becomes active once aiohttp starts connecting for it.
        self.active = False
        #: The exchange is over (``end`` is set).
        self.closed = False
        self.end: float | None = None
        self.tags: dict[str, str] = {}
        #: In the order recorded (see ``disordered``).
        self.annotations: list[Annotation] = []
        #: Handed to the tracer.
        self.reported = False
        self.headers_sent = False
        self.span_name: str | None = None
        #: True once an annotation was not later than the one before it (an explicit
        #: timestamp, a clock step, two in one microsecond): then they are put in time order,
        #: each once, when the span is reported.
        self.disordered = False
        self._view: RequestView | None = None
        #: Connection phases: made at the first one (a request on a pooled connection has
        #: none).
        self.phase_starts: dict[Phase, float] | None = None
        self.phase_totals: dict[Phase, float] | None = None
        #: (phase, start, end) for connection_phases="spans".
        self.children: list[tuple[Phase, float, float]] | None = None
        #: Request body bytes sent, and when the first and last chunk went (written by
        #: ClientTracing.on_request_chunk_sent, which runs for every chunk).
        self.body_bytes = 0
        self.body_first: float | None = None
        self.body_last: float | None = None
        #: Detaches the callbacks that wait for the response body to end.
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
        # aiozipkin's make_timestamp() conversion, so our timestamps match its spans' exactly.
        at = int((time() if timestamp is None else timestamp) * 1000 * 1000)
        annotations = self.annotations
        if annotations and at <= annotations[-1].timestamp:
            self.disordered = True
        annotations.append(Annotation(at, value))

    # SpanCustomizer, for parsers. Their values are checked here, as they enter, and never again.
    # Once the span is reported its tags and annotations belong to the transport's buffer: a
    # parser that kept the customizer and calls it later changes nothing.
    def name(self, name: str) -> None:
        if not self.reported:
            self.span_name = span_name(name)

    def tag(self, key: str, value: str) -> None:
        if self.reported:
            return
        if type(key) is str and type(value) is str and key:
            self.tags[key] = value  # what tag_value() would keep, without the tuple
            return
        tag = tag_value(key, value)
        if tag is not None:
            self.tags[tag[0]] = tag[1]

    def annotate(self, value: str, timestamp: float | None = None) -> None:
        text = annotation_value(value)
        if text is not None and not self.reported:
            self.event(text, timestamp)

    # Connection phases
    def phase_start(self, phase: Phase, now: float, as_annotations: bool) -> None:
        starts = self.phase_starts
        if starts is None:
            starts = self.phase_starts = {}
        starts[phase] = now
        if as_annotations:
            self.event(phase.start, now)

    def phase_end(self, phase: Phase, now: float, as_annotations: bool) -> None:
        starts = self.phase_starts
        started = None if starts is None else starts.pop(phase, None)
        if started is None:
            return  # an end without its start: nothing to measure
        totals = self.phase_totals
        if totals is None:
            totals = self.phase_totals = {}
        total = totals[phase] = totals.get(phase, 0.0) + (now - started)
        self.tags[phase.duration_tag] = f"{total * 1000:.3f}"
        if as_annotations:
            self.event(phase.end, now)
        elif self.children is None:
            self.children = [(phase, started, now)]
        else:
            self.children.append((phase, started, now))


class TraceConfigContext(SimpleNamespace):
    """aiohttp's per-request trace context, which also keeps what one traced request needs
    between aiohttp's signals.

    The class attributes are the state of a request this trace config does not record
    (excluded, not sampled, or ``on_request_start`` never ran): ``ended`` is True until
    ``on_request_start`` starts a recorded hop.
    """

    #: What the caller passed to ``session.request(trace_request_ctx=...)``.
    trace_request_ctx: object = None
    #: Nothing (more) to record: not recorded, or aiohttp sent on_request_end or
    #: on_request_exception.
    ended: bool = True
    #: The hop in flight, prepared (after a redirect) or waiting for its response body.
    hop: Hop | None = None
    #: (trace id, parent span id) of a request that is not sampled (it has no hop), while a
    #: redirect may need them: the next hop gets a new span id under the same parent.
    unsampled: tuple[str, str | None] | None = None
    #: A redirected hop whose span waits for the next hop to start: if the request fails before
    #: that (too many redirects, a bad Location), the error belongs to it.
    previous: Hop | None = None
    #: The caller's ``propagate_headers`` (aiozipkin's ``trace_request_ctx`` option).
    propagate: bool = True
    #: True once this package wrote B3 headers into the request's headers.
    injected: bool = False

    # No __init__ of its own: aiohttp makes one of these for every request, as
    # ``factory(trace_request_ctx=...)``, and SimpleNamespace's keyword handling (in C) costs
    # half what a Python-level __init__ would.
