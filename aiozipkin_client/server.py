"""Server instrumentation: :func:`setup` / :func:`middleware` for ``aiohttp.web`` applications.

For each request the middleware, in this order: extracts B3 from the headers
(:func:`~aiozipkin_client.propagation.extract`), joins the caller's trace or starts a new one,
parses the request into a name and tags, makes the span current for the handler (so client calls
made by the handler and the tasks it spawns are its children), and when the handler is done
parses the response or error and reports one SERVER span, exactly once.

Like the client, nothing is registered in the tracer's table of unfinished spans while the
handler runs: the span's data is collected on a :class:`ServerSpan` and handed to aiozipkin only
when it ends, so a cancelled or failing request can never leave a record behind.

Do no harm: every tracing step runs inside a guard that logs and swallows exceptions, so a bug
here (or in a user's parser or sampler) never changes the response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiozipkin.helpers import SERVER, TraceContext
from aiozipkin.tracer import Tracer
from aiozipkin.utils import generate_random_64bit_string, generate_random_128bit_string

from ._compat import request_key
from ._context import use_span
from ._options import require_callable, require_collection, require_tracer
from ._spans import SpanSink, remote_endpoint
from .parsers import (
    ERROR,
    HTTP_METHOD,
    HTTP_PATH,
    HTTP_STATUS_CODE,
    ErrorTagging,
    SpanCustomizer,
    run_response_parser,
)
from .propagation import extract
from .reporting._model import annotation_value, annotations_of, span_name, tag_value

__all__ = (
    "HTTP_ROUTE",
    "SPAN_KEY",
    "TRACER_KEY",
    "ServerRequestParser",
    "ServerResponseParser",
    "ServerResponseView",
    "ServerSampler",
    "ServerSpan",
    "default_server_request_parser",
    "default_server_response_parser",
    "middleware",
    "setup",
)

log = logging.getLogger("aiozipkin_client")

#: The tag holding the matched route's pattern, e.g. ``/users/{id}``.
HTTP_ROUTE: Final = "http.route"

SkipRoute = web.AbstractRoute | web.AbstractResource | str


class ServerSpan:
    """The SERVER span of the request being handled, as handlers see it.

    Found at ``request[SPAN_KEY]``. It carries the request's :attr:`context` (also for requests
    that are not sampled, so ids can go into logs) and lets the handler name, tag and annotate
    the span; it cannot finish or report it: the middleware does that, exactly once.

    >>> async def handler(request):                                        # doctest: +SKIP
    ...     span = request[aiozipkin_client.SPAN_KEY]
    ...     span.tag("user.id", request.match_info["id"])
    ...     log.info("serving trace %s", span.context.trace_id)
    """

    __slots__ = ("_annotations", "_context", "_name", "_start", "_tags")

    def __init__(self, context: TraceContext, start: float) -> None:
        self._context = context
        self._start = start
        self._name: str | None = None
        self._tags: dict[str, str] = {}
        self._annotations: list[tuple[float, str]] = []

    @property
    def context(self) -> TraceContext:
        """The trace context of this span: ids, sampling decision, debug and shared flags."""
        return self._context

    # SpanCustomizer
    def name(self, name: str) -> None:
        """Set the span name (keep it low-cardinality: never a raw path); stored lower-case."""
        self._name = span_name(name)

    def tag(self, key: str, value: str) -> None:
        """Set a tag; a later call with the same key replaces the value."""
        tag = tag_value(key, value)
        if tag is not None:
            self._tags[tag[0]] = tag[1]

    def annotate(self, value: str) -> None:
        """Add a timestamped event, stamped now (a blank value adds nothing)."""
        text = annotation_value(value)
        if text is not None:
            self._annotations.append((time(), text))


@dataclass(frozen=True, slots=True)
class ServerResponseView:
    """How the handler ended, as response parsers see it.

    ``status`` is the status sent (or about to be sent): the response's, an ``HTTPException``'s,
    500 for an unhandled exception (504 for a ``TimeoutError``, as aiohttp answers), and None
    when no response is sent (the handler was cancelled). ``error`` is the unhandled exception,
    if any; ``HTTPException`` is a response, not an error, and never appears here.
    """

    request: web.Request
    status: int | None
    error: BaseException | None


#: Decides new traces: True (record), False (don't) or None (the tracer's sampler decides).
ServerSampler = Callable[[web.Request], bool | None]
#: Names and tags the span from the request, when it starts.
ServerRequestParser = Callable[[web.Request, SpanCustomizer], None]
#: Tags the span from how the handler ended.
ServerResponseParser = Callable[[ServerResponseView, SpanCustomizer], None]

#: The tracer given to :func:`setup`, in ``app[TRACER_KEY]``.
TRACER_KEY: Final = web.AppKey("aiozipkin_client.tracer", Tracer)
#: The request's :class:`ServerSpan`, in ``request[SPAN_KEY]`` (absent on skipped routes).
SPAN_KEY: Final = request_key("aiozipkin_client.span", ServerSpan)


def route_of(request: web.Request) -> str | None:
    """The matched route's pattern (``/users/{id}``), or None when no route matched."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return resource.canonical


def default_server_request_parser(request: web.Request, span: SpanCustomizer) -> None:
    """Name the span ``"{method} {route}"`` and tag method, path and route.

    The name is lowercase (Zipkin lowercases names anyway, so this is what the UI shows) and is
    built from the route pattern, never the path: ``"get /users/{id}"``; just the method when no
    route matched (404, 405). ``http.path`` holds the path without query string.
    """
    route = route_of(request)
    method = request.method.upper()
    span.name(f"{method} {route}".lower() if route is not None else method.lower())
    span.tag(HTTP_METHOD, method)
    span.tag(HTTP_PATH, request.path or "/")
    if route is not None:
        span.tag(HTTP_ROUTE, route)


def default_server_response_parser(response: ServerResponseView, span: SpanCustomizer) -> None:
    """Tag the status code, and ``error`` with the status for 5xx responses.

    3xx and 4xx are not errors of this server (4xx is the caller's mistake, which the caller's
    CLIENT span already marks). An unhandled exception is tagged by the middleware itself, with
    its type and message, so it is not overwritten here.
    """
    if response.status is None:
        return
    span.tag(HTTP_STATUS_CODE, str(response.status))
    if response.status >= 500 and response.error is None:
        span.tag(ERROR, str(response.status))


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Every choice :func:`middleware` takes, fixed once at creation."""

    skip: Callable[[web.Request], bool]
    sampler: ServerSampler | None
    request_parser: ServerRequestParser
    response_parser: ServerResponseParser


class ServerTracing:
    """The two halves of tracing one request: :meth:`start` and :meth:`finish`; neither raises."""

    def __init__(self, tracer: Tracer, settings: ServerSettings) -> None:
        self._tracer = tracer
        self._settings = settings
        # aiozipkin keeps its sampler private, but it is the tracer's policy for new traces.
        self._tracer_sampler = tracer._sampler
        # Like its sampler, the tracer's ignored_exceptions are its policy: aiozipkin's own spans
        # leave them untagged, and so do ours.
        self._errors = ErrorTagging.create(getattr(tracer, "_ignored_exceptions", None))
        self._sink = SpanSink(tracer)

    def start(self, request: web.Request) -> ServerSpan | None:
        """The request's span, set as ``request[SPAN_KEY]``; None if skipped or on a bug."""
        try:
            if self._settings.skip(request):
                return None
            span = ServerSpan(self._context_for(request), time())
            if span.context.sampled:
                try:
                    self._settings.request_parser(request, span)
                except Exception:
                    log.exception("server request_parser failed; the span keeps what it had")
            request[SPAN_KEY] = span
            return span
        except Exception:
            log.exception("aiozipkin_client: cannot trace %s; the request goes on", request.method)
            return None

    def finish(
        self,
        span: ServerSpan,
        request: web.Request,
        response: web.StreamResponse | None,
        exc: BaseException | None,
    ) -> None:
        """End ``span`` and report it if sampled (the middleware calls this exactly once)."""
        try:
            if span.context.sampled:
                self._report(span, request, response, exc, time())
        except Exception:
            log.exception("aiozipkin_client: cannot report the server span; the response goes on")

    def _context_for(self, request: web.Request) -> TraceContext:
        extracted = extract(request.headers)
        incoming = extracted.context
        if incoming is not None:
            sampled = incoming.sampled
            if sampled is None:
                # Ids without a decision: ours is made here and sent on explicitly downstream.
                sampled = self._decide(request, incoming.trace_id)
            # B3 joins: the server side of an RPC shares the client's span id (and so its
            # parent), and says so with `shared`, so Zipkin merges the two halves of one node.
            return incoming._replace(sampled=sampled, shared=True)
        trace_id = generate_random_128bit_string()
        sampled = True if extracted.debug else extracted.sampled
        if sampled is None:
            sampled = self._decide(request, trace_id)
        return TraceContext(
            trace_id=trace_id,
            parent_id=None,
            span_id=generate_random_64bit_string(),
            sampled=sampled,
            debug=extracted.debug,
            shared=False,
        )

    def _decide(self, request: web.Request, trace_id: str) -> bool:
        sampler = self._settings.sampler
        if sampler is not None:
            try:
                verdict = sampler(request)
            except Exception:
                # A broken sampler must not cost the request its trace: the tracer decides.
                log.exception("server sampler failed; using the tracer's sampler")
                verdict = None
            if verdict is not None:
                return bool(verdict)
        return bool(self._tracer_sampler.is_sampled(trace_id))

    def _report(
        self,
        span: ServerSpan,
        request: web.Request,
        response: web.StreamResponse | None,
        exc: BaseException | None,
        end: float,
    ) -> None:
        unhandled = None if isinstance(exc, web.HTTPException) else exc
        view = ServerResponseView(request, _status(response, exc), unhandled)
        run_response_parser(
            self._settings.response_parser,
            view,
            span,
            span._tags,
            unhandled,
            self._errors,
            "server response_parser",
        )
        self._sink.report(
            span.context,
            SERVER,
            span._name,
            span._start,
            end,
            span._tags,
            annotations_of(span._annotations),
            remote_endpoint(None, request.remote, None),
        )


def _status(response: web.StreamResponse | None, exc: BaseException | None) -> int | None:
    if response is not None:
        return response.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    if isinstance(exc, TimeoutError):
        return 504  # aiohttp answers an unhandled TimeoutError with 504
    if isinstance(exc, Exception):
        return 500
    return None  # cancelled (or interrupted): no response goes out


def _route_skipper(skip_routes: Iterable[SkipRoute]) -> Callable[[web.Request], bool]:
    require_collection("skip_routes", skip_routes, "routes, resources or route patterns")
    routes: set[web.AbstractRoute] = set()
    resources: set[web.AbstractResource] = set()
    patterns: set[str] = set()
    for item in skip_routes:
        if isinstance(item, str):
            patterns.add(item)
        elif isinstance(item, web.AbstractRoute):
            routes.add(item)
        elif isinstance(item, web.AbstractResource):
            resources.add(item)
        else:
            raise TypeError(
                "skip_routes takes routes, resources or route patterns such as '/health',"
                f" not {type(item).__name__}"
            )

    def skip(request: web.Request) -> bool:
        route = request.match_info.route
        if route in routes:
            return True
        resource = route.resource
        return resource is not None and (resource in resources or resource.canonical in patterns)

    return skip


def middleware(
    tracer: Tracer,
    *,
    skip_routes: Iterable[SkipRoute] = (),
    sampler: ServerSampler | None = None,
    request_parser: ServerRequestParser = default_server_request_parser,
    response_parser: ServerResponseParser = default_server_response_parser,
) -> Middleware:
    """The tracing middleware alone, for applications that compose their own middleware list.

    Put it first, so the span covers the other middlewares and sees the response they make:

    >>> app = web.Application(middlewares=[middleware(tracer), auth])      # doctest: +SKIP

    Options are those of :func:`setup`. Unlike :func:`setup` it does not store the tracer in
    ``app[TRACER_KEY]``.
    """
    require_tracer(tracer, "middleware")
    require_callable("sampler", sampler, optional=True)
    require_callable("request_parser", request_parser)
    require_callable("response_parser", response_parser)
    settings = ServerSettings(
        skip=_route_skipper(skip_routes),
        sampler=sampler,
        request_parser=request_parser,
        response_parser=response_parser,
    )
    tracing = ServerTracing(tracer, settings)

    @web.middleware
    async def zipkin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        span = tracing.start(request)
        if span is None:
            return await handler(request)
        # Current for the handler and the tasks it creates; also when not sampled, so that the
        # ids and the "don't sample" decision still travel to the services it calls.
        with use_span(span.context):
            try:
                response = await handler(request)
            except BaseException as exc:
                # Also CancelledError: the span is finished, the exception goes on unchanged.
                tracing.finish(span, request, None, exc)
                raise
        tracing.finish(span, request, response, None)
        return response

    return zipkin_middleware


def setup(
    app: web.Application,
    tracer: Tracer,
    *,
    skip_routes: Iterable[SkipRoute] = (),
    sampler: ServerSampler | None = None,
    request_parser: ServerRequestParser = default_server_request_parser,
    response_parser: ServerResponseParser = default_server_response_parser,
) -> web.Application:
    """Trace every request ``app`` handles as a Zipkin SERVER span, joining the caller's trace.

    >>> import aiozipkin, aiozipkin_client
    >>> async def make_app():                                               # doctest: +SKIP
    ...     endpoint = aiozipkin.create_endpoint("checkout")
    ...     tracer = await aiozipkin_client.create("http://zipkin:9411/api/v2/spans", endpoint)
    ...     app = web.Application()
    ...     app.router.add_get("/health", health)
    ...     return aiozipkin_client.setup(app, tracer, skip_routes=["/health"])

    The middleware is inserted first in ``app.middlewares`` and the tracer stored in
    ``app[TRACER_KEY]``. The tracer is not closed on cleanup: whoever created it closes it
    (``async with aiozipkin_client.create(...) as tracer``), as it is often shared with client
    sessions. Any aiozipkin ``Tracer`` works; :func:`create` (``aiozipkin.create`` with a
    transport that posts spec-valid spans and never lets a failing collector hurt the
    application) is the one to build.

    Options (all keyword-only; see README for the full table):

    * ``skip_routes``: routes, resources or route patterns (``"/health"``, ``"/users/{id}"``) to
      leave untraced: no span, no current span, no ``request[SPAN_KEY]``.
    * ``sampler``: a function of the request returning True, False or None (defer to the
      tracer's sampler), asked only when the incoming headers carry no decision.
    * ``request_parser`` / ``response_parser``: set the name and tags.
    """
    require_tracer(tracer, "setup")
    if TRACER_KEY in app:
        raise RuntimeError("aiozipkin_client.setup() was already called for this application")
    # Built first: an option error leaves the application untouched.
    tracing = middleware(
        tracer,
        skip_routes=skip_routes,
        sampler=sampler,
        request_parser=request_parser,
        response_parser=response_parser,
    )
    app[TRACER_KEY] = tracer
    app.middlewares.insert(0, tracing)
    return app
