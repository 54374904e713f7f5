"""The typed state one traced request keeps on aiohttp's trace context.

A request is one call to ``session.request()``; it has one or more *hops* (HTTP exchanges: the
first request and one per followed redirect). Each recorded hop becomes one CLIENT span. Hops
collect their data here and are turned into an aiozipkin span only when they end, so nothing is
ever registered in the tracer's table of unfinished spans while the request is in flight.
"""

from __future__ import annotations

from time import time
from types import SimpleNamespace

from aiozipkin.helpers import TraceContext

from .parsers import RequestView

__all__ = ("Hop", "RequestState", "TraceConfigContext")


class Hop:
    """One HTTP exchange: its identifiers, timing and the span data parsers give it.

    It is also the :class:`~aiozipkin_client.parsers.SpanCustomizer` handed to parsers.
    """

    __slots__ = (
        "active",
        "annotations",
        "context",
        "end",
        "request",
        "span_name",
        "start",
        "tags",
    )

    def __init__(self, context: TraceContext, request: RequestView, start: float) -> None:
        self.context = context
        self.request = request
        self.start = start
        self.end: float | None = None
        # A redirect hop is prepared (ids allocated, headers injected) before aiohttp sends it;
        # it becomes active once aiohttp starts connecting for it.
        self.active = False
        self.span_name: str | None = None
        self.tags: dict[str, str] = {}
        self.annotations: list[tuple[float, str]] = []

    # SpanCustomizer
    def name(self, name: str) -> None:
        self.span_name = name

    def tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def annotate(self, value: str) -> None:
        self.annotations.append((time(), value))


class RequestState:
    """What one traced request needs between aiohttp's signals."""

    __slots__ = ("ended", "hop", "injected", "parent_span_id", "previous", "propagate")

    def __init__(self, parent_span_id: str | None, propagate: bool) -> None:
        self.parent_span_id = parent_span_id
        self.propagate = propagate
        # True once this package wrote B3 headers into the request's headers.
        self.injected = False
        # The hop in flight (or prepared, after a redirect).
        self.hop: Hop | None = None
        # A redirected hop whose span waits for the next hop to start: if the request fails
        # before that (too many redirects, a bad Location), the error belongs to it.
        self.previous: Hop | None = None
        self.ended = False


class TraceConfigContext(SimpleNamespace):
    """aiohttp's per-request trace context, with our state as one typed attribute."""

    trace_request_ctx: object
    state: RequestState | None

    def __init__(self, trace_request_ctx: object = None) -> None:
        super().__init__(trace_request_ctx=trace_request_ctx)
        self.state = None
