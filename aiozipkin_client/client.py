"""Client instrumentation: :func:`make_trace_config` and one thin method per aiohttp signal.

Each signal method finds the request's state on aiohttp's trace context
(:class:`~aiozipkin_client._state.TraceConfigContext`) and delegates; the order of work per hop is fixed: sample, allocate ids, inject,
parse the request; then, at the end, parse the response or error, and report.

Do no harm: every signal method runs inside a guard that logs and swallows exceptions, so a bug
here (or in a user's parser) never changes what the request returns or raises.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import reprlib
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from random import getrandbits
from time import time
from types import SimpleNamespace
from typing import Final, Literal, TypeVar

import aiohttp
from aiohttp import ClientConnectionError, ClientResponse, ClientResponseError, hdrs
from aiohttp.client_proto import ResponseHandler
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import CLIENT, Endpoint, TraceContext
from aiozipkin.tracer import Tracer
from aiozipkin.utils import generate_random_128bit_string
from multidict import CIMultiDict, CIMultiDictProxy, MutableMultiMapping
from yarl import URL

from ._compat import closed_future, has_no_authority, is_connected, sent_bytes
from ._context import current_context, to_context
from ._dispatch import use_direct_signals
from ._duplicates import DuplicateCheck
from ._options import require_callable, require_collection, require_tracer
from ._spans import Remote, SpanSink, remote_endpoint, span_id
from ._state import Hop, TraceConfigContext
from .annotations import (
    BODY_RECEIVED,
    CONNECT,
    CONNECTION_LOST,
    CONNECTION_REUSED,
    DNS,
    DNS_CACHE,
    DNS_CACHE_HIT,
    DNS_CACHE_MISS,
    QUEUE,
    REDIRECT,
    REQUEST_BODY_END,
    REQUEST_BODY_START,
    REQUEST_SIZE,
    RESPONSE_RELEASED,
    RESPONSE_SIZE,
    RETRY,
    REUSED,
    WIRE_RECEIVE,
    WIRE_SEND,
)
from .parsers import (
    ERROR,
    HTTP_STATUS_CODE,
    ErrorTagging,
    HttpRequestParser,
    RequestParser,
    RequestView,
    ResponseParser,
    ResponseView,
    SpanCustomizer,
    default_request_parser,
    default_response_parser,
    redact_url,
    run_response_parser,
    tag_status,
)
from .propagation import B3Format, inject, inject_ids, is_valid_parent, remove_b3_headers
from .reporting._model import in_time_order, span_name
from .sampling import RequestSampler, decide

__all__ = ("make_trace_config",)

log = logging.getLogger("aiozipkin_client")

RemoteServiceName = str | Callable[[URL], str | None]
UrlPattern = str | re.Pattern[str] | Callable[[URL], bool]
HostFilter = Collection[str] | Callable[[URL], bool]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: The Location schemes aiohttp follows; "" is a scheme-relative or relative reference.
_FOLLOWED_SCHEMES: Final = frozenset({"http", "https", ""})
_REMOTE_CACHE_SIZE: Final = 256
_new_tuple: Final = tuple.__new__
#: span_name() of the methods nearly every request has, looked up rather than worked out.
_METHOD_NAMES: Final = {
    method: span_name(method)
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
#: Not in the table of remote endpoints (whose values may be None).
_UNKNOWN: Final = Remote(Endpoint(None, None, None, None), None)

#: Every client signal aiohttp sends (the same 16 in 3.10 to 3.14); ClientTracing has a method
#: of the same name for each.
SIGNALS: Final = (
    "on_request_start",
    "on_request_redirect",
    "on_request_headers_sent",
    "on_request_chunk_sent",
    "on_response_chunk_received",
    "on_request_end",
    "on_request_exception",
    "on_connection_queued_start",
    "on_connection_queued_end",
    "on_connection_create_start",
    "on_connection_create_end",
    "on_connection_reuseconn",
    "on_dns_resolvehost_start",
    "on_dns_resolvehost_end",
    "on_dns_cache_hit",
    "on_dns_cache_miss",
)


#: When a handler has nothing to do, by the request context's state: the signal then answers
#: aiohttp itself (see _dispatch), without calling it.
_IDLE: Final = {
    **{
        name: ("hop", None)
        for name in SIGNALS
        if name
        not in ("on_request_start", "on_request_redirect", "on_request_end", "on_request_exception")
    },
    "on_request_end": ("ended", True),
    "on_request_exception": ("ended", True),
}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Every choice :func:`make_trace_config` takes, fixed once at creation."""

    b3_format: B3Format
    propagate_to: Callable[[URL], bool] | None
    exclude: tuple[Callable[[URL], bool], ...]
    remote_service_name: Callable[[URL], str | None] | None
    sampler: RequestSampler | None
    request_parser: RequestParser
    response_parser: ResponseParser
    connection_phases: Literal["annotations", "spans"]
    #: Never traced, whatever ``exclude`` says (see :class:`Collector`).
    collector: Collector | None = None


_Params = TypeVar("_Params")
_Self = TypeVar("_Self", bound="ClientTracing")


def _signal(
    method: Callable[[_Self, aiohttp.ClientSession, TraceConfigContext, _Params], None],
) -> Callable[[_Self, aiohttp.ClientSession, SimpleNamespace, _Params], None]:
    """Guard a handler: it runs only for our own request contexts, and can never raise."""

    @functools.wraps(method)
    def guarded(
        self: _Self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: _Params
    ) -> None:
        if not isinstance(ctx, TraceConfigContext):
            return
        try:
            method(self, session, ctx, params)
        except Exception:
            _handler_failed(method.__name__)

    return guarded


def _receiver(
    handler: Callable[[aiohttp.ClientSession, SimpleNamespace, _Params], None],
) -> Callable[[aiohttp.ClientSession, SimpleNamespace, _Params], Awaitable[None]]:
    """The aiohttp signal receiver (a coroutine function) that runs ``handler``.

    aiohttp reaches the handler itself through our signals (``_dispatch``); this is for
    aiosignal's own path, taken when a user added receivers of their own beside ours.
    """

    @functools.wraps(handler)
    async def receiver(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: _Params
    ) -> None:
        handler(session, ctx, params)

    return receiver


def _handler_failed(name: str) -> None:
    log.exception("aiozipkin_client: %s failed; the request goes on", name)


class ClientTracing:
    """The signal handlers of one trace config: one method per aiohttp client signal."""

    def __init__(self, tracer: Tracer, settings: ClientSettings) -> None:
        self._tracer = tracer
        self._settings = settings
        self._annotate_phases = settings.connection_phases == "annotations"
        # Read once: aiozipkin keeps its sampler and local endpoint private, but they are the
        # tracer's policy for new traces and its service, which we must honour, not invent.
        self._tracer_sampler = tracer._sampler
        # Like its sampler, the tracer's ignored_exceptions are its policy (aiozipkin's own spans
        # leave them untagged); the request parser's secret names apply to error messages too.
        self._errors = ErrorTagging.create(
            getattr(tracer, "_ignored_exceptions", None), settings.request_parser
        )
        self._sink = SpanSink(tracer)
        # Read on every request: kept as attributes of their own.
        self._exclude = settings.exclude
        self._collector = settings.collector
        self._sampler = settings.sampler
        self._propagate_to = settings.propagate_to
        self._b3_format = settings.b3_format
        self._response_parser = settings.response_parser
        self._service_namer = settings.remote_service_name
        # (service, host, port) -> remote endpoint; bounded, see _remote_endpoint.
        self._remotes: dict[tuple[str | None, str | None, int | None], Remote | None] = {}
        self._warned_parent = False
        #: On a session's first request, warns if another tracing config is on it too.
        self.duplicate_check = DuplicateCheck(settings.b3_format)
        self._valid_parent: TraceContext | None = None
        # Ours, not a subclass: it needs no RequestView, and its name and tags are strings the
        # customizer would take as they are, so they are written to the hop directly.
        parser = settings.request_parser
        self._plain_parser = parser if type(parser) is HttpRequestParser else None

    # -- request lifecycle ---------------------------------------------------------------------

    # Handlers are plain methods: aiohttp reaches them through our signals, which call them
    # and answer aiohttp themselves (see _dispatch). The handlers aiohttp calls for every
    # request are written out rather than wrapped by @_signal: the same guard, without a call
    # more per signal.

    def on_request_start(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if not isinstance(ctx, TraceConfigContext):
            return
        try:
            # The duplicate check looks only at a session other than the last one.
            check = self.duplicate_check
            last = check.last
            if last is None or last() is not session:
                check.check(session)
            url = params.url
            # The collector first, its check written out: it is every tracer's, and one
            # comparison of the raw path rules out nearly every request.
            collector = self._collector
            if collector is not None:
                raw_path = url.raw_path
                if (
                    raw_path == collector.raw_path or collector.escaped or "%" in raw_path
                ) and collector.matches(url):
                    return
            for matches in self._exclude:
                if matches(url):
                    return
            request_ctx = ctx.trace_request_ctx
            if request_ctx is None:
                # _parent(None), written out: this is nearly every request's path.
                parent = zipkin_context.get()
                if parent is not None and parent is not self._valid_parent:
                    # _usable(), written out for a valid parent.
                    if is_valid_parent(parent):
                        self._valid_parent = parent
                    elif not self._usable(parent, "the current span"):
                        parent = None
            else:
                explicit_parent, ctx.propagate = read_trace_request_ctx(request_ctx)
                parent = self._parent(explicit_parent)
            method, headers = params.method, params.headers
            if parent is None:
                trace_id, parent_id = generate_random_128bit_string(), None
            else:
                trace_id, parent_id = parent.trace_id, parent.span_id
            if parent is not None and parent.debug:
                # decide()'s first two rules, written out: a parent's decision is kept, and
                # nearly every request has a parent that made one.
                sampled = debug = True
            elif parent is not None and parent.sampled is not None:
                sampled, debug = parent.sampled, False
            else:
                sampled, debug = self._decide(parent, trace_id, method, url, headers)
            # span_id(), written out: one call less on every request.
            span = getrandbits(64).to_bytes(8, "big").hex()
            if sampled:
                # TraceContext(trace_id, parent_id, span, sampled, debug, shared), made as its
                # own _make() does, without the Python-level __new__ in between.
                context: TraceContext = _new_tuple(
                    TraceContext, (trace_id, parent_id, span, sampled, debug, False)
                )
                # _start_hop(), written out (one call less on every request).
                hop = Hop(context, method, url, headers, time())
                self._parse_request(hop)
                hop.active = True
                ctx.hop = hop
                ctx.ended = False
            else:
                # Nothing to record: the request keeps the ids a redirect's next hop needs
                # (no TraceContext: making one would cost more than the rest of its work), and
                # stays "ended" for every other signal.
                ctx.unsampled = (trace_id, parent_id)
            if ctx.propagate:
                # _inject(), written out for the first hop (nothing injected yet).
                allowed = self._propagate_to
                if allowed is None or allowed(url):
                    inject_ids(headers, trace_id, span, parent_id, sampled, debug, self._b3_format)
                    ctx.injected = True
        except Exception:
            _handler_failed("on_request_start")

    @_signal
    def on_request_redirect(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        ended = ctx.hop
        if ended is None:
            unsampled = ctx.unsampled
            if unsampled is not None:
                # Not recorded: the next hop needs only a new span id, sent where it may go.
                target = self._next_target(session, ctx, params)
                if target is None:
                    ctx.unsampled = None
                else:
                    trace_id, parent_id = unsampled
                    context = TraceContext(trace_id, parent_id, span_id(), False, False, False)
                    self._inject(ctx, context, target[1], params.headers)
            return
        now = time()
        ended.event(WIRE_RECEIVE, now)
        ended.event(REDIRECT, now)
        response = params.response
        self._close_hop(ended, now, response.status, response.headers, None)
        self._report_previous(ctx)
        ctx.previous = ended
        ctx.hop = None
        target = self._next_target(session, ctx, params)
        if target is not None:
            method, url = target
            context = ended.context._replace(span_id=span_id())
            ctx.hop = self._start_hop(context, method, url, params.headers, now)
            self._inject(ctx, context, url, params.headers)

    @staticmethod
    def _next_target(
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> tuple[str, URL] | None:
        """The method and URL of the hop after a redirect; None if aiohttp sends no other."""
        target = redirect_target(
            params.method, params.url, params.response, session.requote_redirect_url
        )
        if target is None and ctx.injected:
            # aiohttp will stop here (no Location) or fail; there is no next hop to prepare.
            # Should it send one all the same, it must not carry this hop's ids anywhere.
            remove_b3_headers(params.headers)
            ctx.injected = False
        return target

    # The four handlers aiohttp calls for every request are written out rather than wrapped
    # by @_signal (the same guard, one call less each).

    def on_request_headers_sent(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        if not isinstance(ctx, TraceConfigContext):
            return
        hop = ctx.hop
        if hop is None or ctx.ended:
            return
        try:
            if not hop.active:
                self._activate(ctx)
            if not hop.closed:
                hop.headers_sent = True
                hop.event(WIRE_SEND)
        except Exception:
            _handler_failed("on_request_headers_sent")

    def on_request_chunk_sent(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        # Runs in aiohttp's body-writer task, which may outlive the response headers; and for
        # every chunk of a streamed body, so live_hop() is written out.
        if not isinstance(ctx, TraceConfigContext):
            return
        hop = ctx.hop
        if hop is None or hop.closed:
            return
        try:
            chunk = params.chunk
            # A streamed body's chunks are bytes: their length without a call. sent_bytes()
            # for whatever else aiohttp passes.
            size = len(chunk) if type(chunk) is bytes else sent_bytes(chunk)
            if size:
                # What the hop keeps of its body (see Hop), written here: a call less a chunk.
                now = time()
                if hop.body_first is None:
                    hop.body_first = now
                hop.body_last = now
                hop.body_bytes += size
        except Exception:
            _handler_failed("on_request_chunk_sent")

    def on_response_chunk_received(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceResponseChunkReceivedParams,
    ) -> None:
        # aiohttp sends this from read() once the whole body is in, which is after the
        # stream's end-of-body callback closed the span: then it is dropped here.
        if not isinstance(ctx, TraceConfigContext) or ctx.hop is None:
            return
        try:
            hop = live_hop(ctx)
            if hop is not None:
                hop.event(BODY_RECEIVED)
        except Exception:
            _handler_failed("on_response_chunk_received")

    def on_request_end(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if not isinstance(ctx, TraceConfigContext) or ctx.ended:
            return
        try:
            ctx.ended = True
            hop = ctx.hop
            if hop is None or not hop.active:
                if hop is None or hop.url != params.url:
                    # aiohttp returned the last redirect's response (its hop is closed, its
                    # span ready): no hop, or one prepared that aiohttp did not send.
                    ctx.hop = None
                    self._report_previous(ctx)
                    return
                # Prepared, and for the URL aiohttp returns, but never sent: a client
                # middleware answered it (a cache). The caller got its response: a hop too.
                hop.active = True
            if ctx.previous is not None:
                self._report_previous(ctx)
            now = time()
            hop.event(WIRE_RECEIVE, now)
            response = params.response
            status, content = response.status, response.content
            if status == 101 or content.is_eof():
                # Nothing more to wait for (no body, or a protocol upgrade handed the
                # connection over to a WebSocket whose lifetime is not this exchange's).
                # _end_body(), written out for this, the common end: nothing is watched yet,
                # and the body did not end early.
                hop.tags[RESPONSE_SIZE] = str(content.total_bytes)
                self._close_hop(hop, now, status, response.headers, None)
                ctx.hop = None
                self._report(hop)
            else:
                self._watch_body(ctx, hop, response)
        except Exception:
            _handler_failed("on_request_end")

    @_signal
    def on_request_exception(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        if ctx.ended:
            return
        ctx.ended = True
        now = time()
        hop = ctx.hop
        ctx.hop = None
        if hop is not None and hop.active:
            self._close_hop(hop, now, None, None, params.exception)
            self._report(hop)
        elif ctx.previous is not None:
            # Failed between a redirect response and the next hop's first byte (too many
            # redirects, a Location that is not a URL): the error belongs to the redirect.
            previous = ctx.previous
            previous.end = now
            value = self._errors.value(params.exception)
            if value is not None:
                previous.tag(ERROR, value)
        self._report_previous(ctx)

    # -- connection --------------------------------------------------------------------------

    @_signal
    def on_connection_queued_start(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceConnectionQueuedStartParams,
    ) -> None:
        hop = self._activate(ctx)
        if hop is not None:
            self._note_attempt(hop)
            hop.phase_start(QUEUE, time(), self._annotate_phases)

    @_signal
    def on_connection_queued_end(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceConnectionQueuedEndParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.phase_end(QUEUE, time(), self._annotate_phases)

    @_signal
    def on_connection_create_start(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceConnectionCreateStartParams,
    ) -> None:
        hop = self._activate(ctx)
        if hop is not None:
            if not hop.phase_starts or QUEUE not in hop.phase_starts:
                self._note_attempt(hop)
            hop.tags[REUSED] = "false"
            hop.phase_start(CONNECT, time(), self._annotate_phases)

    @_signal
    def on_connection_create_end(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceConnectionCreateEndParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.phase_end(CONNECT, time(), self._annotate_phases)

    def on_connection_reuseconn(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceConnectionReuseconnParams,
    ) -> None:
        if not isinstance(ctx, TraceConfigContext):
            return
        hop = ctx.hop
        if hop is None or ctx.ended:
            return
        try:
            if not hop.active:
                self._activate(ctx)
            if not hop.closed:
                if hop.headers_sent:
                    self._note_attempt(hop)
                hop.tags[REUSED] = "true"
                hop.event(CONNECTION_REUSED)
        except Exception:
            _handler_failed("on_connection_reuseconn")

    # -- DNS: these may run in aiohttp's resolver task, even after the request ended ---------

    @_signal
    def on_dns_resolvehost_start(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceDnsResolveHostStartParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.phase_start(DNS, time(), self._annotate_phases)

    @_signal
    def on_dns_resolvehost_end(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceDnsResolveHostEndParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.phase_end(DNS, time(), self._annotate_phases)

    @_signal
    def on_dns_cache_hit(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceDnsCacheHitParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.tags[DNS_CACHE] = "hit"
            hop.event(DNS_CACHE_HIT)

    @_signal
    def on_dns_cache_miss(
        self,
        session: aiohttp.ClientSession,
        ctx: TraceConfigContext,
        params: aiohttp.TraceDnsCacheMissParams,
    ) -> None:
        hop = live_hop(ctx)
        if hop is not None:
            hop.tags[DNS_CACHE] = "miss"
            hop.event(DNS_CACHE_MISS)

    def _decide(
        self,
        parent: TraceContext | None,
        trace_id: str,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
    ) -> tuple[bool, bool]:
        # A method of its own: a closure in on_request_start would put the variables it reads
        # into cells on every request, where only a few requests come here.
        return decide(
            parent,
            trace_id,
            # Made only if a request sampler is asked.
            lambda: RequestView(method, url, CIMultiDictProxy(headers)),
            self._sampler,
            self._tracer_sampler,
        )

    # -- parents -----------------------------------------------------------------------------

    def _parent(self, explicit: TraceContext | None) -> TraceContext | None:
        """The request's parent: the explicit one, else the current span; None for a new trace.

        A parent B3 cannot carry exactly (see ``is_valid_parent``) is treated as absent.
        """
        if explicit is not None and self._usable(explicit, "trace_request_ctx span_context"):
            return explicit
        current = current_context()
        if current is not None and self._usable(current, "the current span"):
            return current
        return None

    def _usable(self, parent: TraceContext, source: str) -> bool:
        # The calls made while one request is handled share its context object: check it once.
        if parent is self._valid_parent or is_valid_parent(parent):
            self._valid_parent = parent
            return True
        # Warn once: bad parents usually come from every request of a misbehaving caller (an
        # aiozipkin middleware passes header values through), and logs must not flood.
        level = logging.DEBUG if self._warned_parent else logging.WARNING
        self._warned_parent = True
        log.log(
            level,
            "aiozipkin_client: ignoring a parent from %s whose ids B3 cannot carry"
            " (trace_id=%s, span_id=%s, sampled=%s, debug=%s); the request starts a new trace."
            " Later ones are logged at debug level.",
            source,
            _short_repr(parent.trace_id),
            _short_repr(parent.span_id),
            _short_repr(parent.sampled),
            _short_repr(parent.debug),
        )
        return False

    # -- hops --------------------------------------------------------------------------------

    def _start_hop(
        self,
        context: TraceContext,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        now: float,
    ) -> Hop:
        hop = Hop(context, method, url, headers, now)
        self._parse_request(hop)
        return hop

    def _parse_request(self, hop: Hop) -> None:
        """Name and tag a recorded hop with the request parser; a parser that fails is logged."""
        try:
            parser = self._plain_parser
            if parser is not None:
                hop.span_name = _METHOD_NAMES.get(hop.method) or span_name(hop.method)
                parser.set_tags(hop.method, hop.url, hop.tags)
            else:
                self._settings.request_parser(hop.request, hop)
        except Exception:
            log.exception("request_parser failed; the span keeps what it had")

    def _activate(self, ctx: TraceConfigContext) -> Hop | None:
        """A connection attempt or the headers show the prepared hop is really being sent.

        Returns the hop while it is open.
        """
        hop = ctx.hop
        if hop is None or ctx.ended:
            return None
        if not hop.active:
            hop.active = True
            self._report_previous(ctx)
        return None if hop.closed else hop

    @staticmethod
    def _note_attempt(hop: Hop) -> None:
        # A new connection attempt after the headers went out: aiohttp is retrying on a fresh
        # connection because the pooled one was dead, or a client middleware sends it again.
        if hop.headers_sent:
            hop.headers_sent = False
            hop.event(RETRY)

    def _watch_body(self, ctx: TraceConfigContext, hop: Hop, response: ClientResponse) -> None:
        """Keep the span open until the response body is complete, released, or lost."""
        status, headers, content = response.status, response.headers, response.content
        connection = response.connection
        protocol = connection.protocol if connection is not None else None
        if connection is None or protocol is None:
            self._end_body(ctx, hop, status, headers, content, RESPONSE_RELEASED)
            return
        lost = closed_future(protocol)
        watch = _BodyWatch(self, ctx, hop, status, headers, content, protocol, lost)
        if lost is not None:
            lost.add_done_callback(watch.lost)
            hop.unwatch = watch.detach
        connection.add_callback(watch)
        content.on_eof(watch.complete)

    def _end_body(
        self,
        ctx: TraceConfigContext,
        hop: Hop,
        status: int,
        headers: CIMultiDictProxy[str],
        content: aiohttp.StreamReader,
        early: str | None,
        cause: BaseException | None = None,
        now: float | None = None,
    ) -> None:
        """The response is over: the body ended, or it never will (released, lost).

        ``cause`` is the exception that stopped the caller reading the body, if one did.
        """
        if hop.closed:
            return
        try:
            if now is None:
                now = time()
            if hop.unwatch is not None:
                hop.unwatch()
                hop.unwatch = None
            hop.tags[RESPONSE_SIZE] = str(content.total_bytes)
            error: BaseException | None = None
            if early is not None:
                hop.event(early, now)
                error = early_end_error(content.exception(), cause, early)
            self._close_hop(hop, now, status, headers, error)
            if ctx.hop is hop:
                ctx.hop = None
            self._report(hop)
        except Exception:
            log.exception("aiozipkin_client: ending the span at the response end failed")

    def _close_hop(
        self,
        hop: Hop,
        now: float,
        status: int | None,
        headers: CIMultiDictProxy[str] | None,
        error: BaseException | None,
    ) -> None:
        if hop.closed:
            return
        hop.closed = True
        hop.end = now
        if error is not None and isinstance(error, ClientResponseError) and error.status:
            # raise_for_status: the response arrived; keep its status on the span.
            status = error.status
        if hop.body_first is not None and hop.body_last is not None:
            hop.event(REQUEST_BODY_START, hop.body_first)
            hop.event(REQUEST_BODY_END, hop.body_last)
            hop.tags[REQUEST_SIZE] = str(hop.body_bytes)
        parser = self._response_parser
        if parser is default_response_parser:
            # Ours reads the status and error only: no views to build for it, and without an
            # error there is nothing for run_response_parser to keep.
            if error is None:
                if status is not None:
                    # tag_status(status, None, hop), written out: every response comes here.
                    code = str(status)
                    hop.tags[HTTP_STATUS_CODE] = code
                    if status >= 400:
                        hop.tags[ERROR] = code
            else:
                run_response_parser(
                    _tag_outcome,
                    (status, error),
                    hop,
                    hop.tags,
                    error,
                    self._errors,
                    "response_parser",
                )
        else:
            view = ResponseView(hop.request, status, headers, error)
            run_response_parser(parser, view, hop, hop.tags, error, self._errors, "response_parser")

    def _report_previous(self, ctx: TraceConfigContext) -> None:
        if ctx.previous is not None:
            previous, ctx.previous = ctx.previous, None
            self._report(previous)

    def _report(self, hop: Hop) -> None:
        """Hand a finished hop to aiozipkin as one CLIENT span (and its phases), once."""
        if hop.reported or hop.end is None:
            return
        hop.reported = True
        if hop.unwatch is not None:
            hop.unwatch()
            hop.unwatch = None
        url = hop.url
        remote: Remote | None = _UNKNOWN
        if self._service_namer is None:
            # _remote_endpoint's table, read here: the same few hosts, request after request.
            remote = self._remotes.get((None, url.host, url.port), _UNKNOWN)
        self._sink.report(
            hop.context,
            CLIENT,
            hop.span_name,
            hop.start,
            hop.end,
            hop.tags,
            in_time_order(hop.annotations) if hop.disordered else hop.annotations,
            self._remote_endpoint(url) if remote is _UNKNOWN else remote,
        )
        if hop.children or (hop.phase_starts and not self._annotate_phases):
            self._report_phases(hop)
        else:
            hop.phase_starts = None

    def _report_phases(self, hop: Hop) -> None:
        """connection_phases="spans": each phase as a child span of the hop's span."""
        assert hop.end is not None
        # A phase cut short (cancelled while resolving, say) ends with the hop.
        starts, hop.phase_starts = hop.phase_starts or {}, None
        unfinished = [(phase, start, hop.end) for phase, start in starts.items()]
        children = hop.children or ()
        for phase, start, end in (*children, *(() if self._annotate_phases else unfinished)):
            context = hop.context._replace(parent_id=hop.context.span_id, span_id=span_id())
            cut_short = (phase, start, end) in unfinished and ERROR in hop.tags
            tags = {ERROR: hop.tags[ERROR]} if cut_short else {}
            self._sink.report(context, None, phase.span_name, start, end, tags, None, None)

    def _remote_endpoint(self, url: URL) -> Remote | None:
        """The remote endpoint, and the fields a Record keeps of it; None when it is empty."""
        service = None
        if self._service_namer is not None:
            try:
                service = self._service_namer(url)
            except Exception:
                log.exception("remote_service_name failed for %s", redact_url(url))
        if service is not None and type(service) is not str:
            return remote_endpoint(service, url.host, url.port)
        key = (service, url.host, url.port)
        try:
            return self._remotes[key]
        except KeyError:
            pass
        # Parsing the host as an IP literal is the costly part, and a client talks to few
        # hosts: keep a bounded table of the answers.
        if len(self._remotes) >= _REMOTE_CACHE_SIZE:
            self._remotes.clear()
        remote = self._remotes[key] = remote_endpoint(*key)
        return remote

    def _inject(
        self,
        ctx: TraceConfigContext,
        context: TraceContext,
        url: URL,
        headers: MutableMultiMapping[str],
    ) -> None:
        if not ctx.propagate:
            return
        allowed = self._propagate_to
        if allowed is None or allowed(url):
            inject(headers, context, self._b3_format)
            ctx.injected = True
        elif ctx.injected:
            # An earlier hop went to an allowed host; this one must not see our ids.
            remove_b3_headers(headers)
            ctx.injected = False


class _BodyWatch:
    """Ends a hop's span when its response body ends: complete, released, or lost.

    One object per watched body, its methods the callbacks (aiohttp's connection calls the
    object itself when the connection is released). It keeps the status, headers and body
    stream, never the response, so a response the caller drops can still be collected (and
    release its connection).
    """

    __slots__ = (
        "content",
        "ctx",
        "headers",
        "hop",
        "lost_future",
        "protocol",
        "status",
        "tracing",
    )

    def __init__(
        self,
        tracing: ClientTracing,
        ctx: TraceConfigContext,
        hop: Hop,
        status: int,
        headers: CIMultiDictProxy[str],
        content: aiohttp.StreamReader,
        protocol: ResponseHandler,
        lost_future: asyncio.Future[None] | None,
    ) -> None:
        self.tracing = tracing
        self.ctx = ctx
        self.hop = hop
        self.status = status
        self.headers = headers
        self.content = content
        self.protocol = protocol
        #: Completes when the connection closes (aiohttp 3.12+; see _compat.closed_future).
        self.lost_future = lost_future

    def complete(self) -> None:
        """The body's end of file."""
        if not self.hop.closed:
            self.tracing._end_body(
                self.ctx, self.hop, self.status, self.headers, self.content, None
            )

    def __call__(self) -> None:
        """The connection was released: by aiohttp at the end of the body, or by the caller."""
        hop = self.hop
        if hop.closed:
            return
        content = self.content
        # aiohttp releases the connection from its own end-of-body callback, which runs before
        # ours: a release at EOF is the body completing, not the caller letting go.
        if content.is_eof():
            self.tracing._end_body(self.ctx, hop, self.status, self.headers, content, None)
            return
        # Where aiohttp cannot tell us when a connection closes, this is where we learn it.
        early = RESPONSE_RELEASED if is_connected(self.protocol) else CONNECTION_LOST
        self.tracing._end_body(
            self.ctx, hop, self.status, self.headers, content, early, interrupted_by()
        )

    def lost(self, _: object) -> None:
        """The connection closed under the body (aiohttp 3.12+)."""
        if not self.hop.closed:
            self.tracing._end_body(
                self.ctx, self.hop, self.status, self.headers, self.content, CONNECTION_LOST
            )

    def detach(self) -> None:
        """A keep-alive connection outlives this request: leave nothing behind on it."""
        lost = self.lost_future
        if lost is not None:
            self.lost_future = None
            lost.remove_done_callback(self.lost)


def _short_repr(value: object) -> str:
    """``repr`` cut to a length fit for a log line (the value may come from any caller)."""
    return reprlib.repr(value)


def _tag_outcome(outcome: tuple[int | None, BaseException | None], span: SpanCustomizer) -> None:
    tag_status(outcome[0], outcome[1], span)


def live_hop(ctx: TraceConfigContext) -> Hop | None:
    """The request's hop while it is open; else None (drop the event)."""
    hop = ctx.hop
    if hop is None or hop.closed:
        return None
    return hop


def is_plain_release(exc: BaseException) -> bool:
    """True for the marker aiohttp puts on a body the caller released before reading it."""
    return type(exc) is ClientConnectionError and str(exc) == "Connection closed"


def interrupted_by() -> BaseException | None:
    """The exception propagating through the caller as it lets go of an unfinished body.

    aiohttp releases the connection synchronously, in the caller's task: from ``read()``'s
    failure handler (which closes the response and re-raises), or from ``async with``'s exit
    or a ``finally`` while an exception unwinds. There the exception being handled is why the
    body stopped: a timeout, a cancellation, a failed read. A deliberate release has none.
    ``GeneratorExit`` is a generator being closed, which is letting go on purpose.
    """
    exc = sys.exc_info()[1]
    return None if isinstance(exc, GeneratorExit) else exc


def early_end_error(
    stream_error: BaseException | None, cause: BaseException | None, early: str
) -> BaseException | None:
    """The ``error`` of a body that ended before it was complete; None for a plain release.

    In order: the body stream's own failure (peer reset, read timeout), what stopped the
    caller's read (``cause``), and for a lost connection with neither, a connection error.
    """
    if stream_error is not None and not is_plain_release(stream_error):
        return stream_error
    if cause is not None:
        return cause
    if early == CONNECTION_LOST:
        return ClientConnectionError("connection lost before the response body was complete")
    return None


def read_trace_request_ctx(value: object) -> tuple[TraceContext | None, bool]:
    """The explicit parent and the ``propagate_headers`` flag from ``trace_request_ctx``.

    Accepts aiozipkin's forms: a mapping or a SimpleNamespace with ``span_context`` (a
    TraceContext or an aiozipkin span) and ``propagate_headers`` (default True).
    """
    if value is None:
        return None, True
    if isinstance(value, Mapping):
        raw_parent = value.get("span_context")
        propagate = value.get("propagate_headers", True)
    elif isinstance(value, SimpleNamespace):
        raw_parent = getattr(value, "span_context", None)
        propagate = getattr(value, "propagate_headers", True)
    else:
        return None, True
    parent = to_context(raw_parent)
    if raw_parent is not None and parent is None:
        log.warning(
            "trace_request_ctx span_context must be an aiozipkin TraceContext or span, not %s;"
            " using the current span instead",
            type(raw_parent).__name__,
        )
    return parent, bool(propagate)


def redirect_target(
    method: str, url: URL, response: ClientResponse, requote: bool = True
) -> tuple[str, URL] | None:
    """Where aiohttp goes next after the redirect ``response`` to ``url``, and with which method.

    Resolves the Location exactly as aiohttp does (``requote`` is the session's
    ``requote_redirect_url``), so that the next hop's ids and headers can be prepared, and
    withheld from hosts that may not receive them, before aiohttp sends it: a path, a query, a
    scheme-relative ``//host/path`` and (on aiohttp 3.14) ``http:/path`` are all resolved against
    ``url``. None when aiohttp will not send another request: no Location, or one it refuses
    (not a URL, not http(s), no host).
    """
    if response.status not in _REDIRECTS:
        return None
    # aiohttp's own expression: an empty Location falls back to URI, then counts as absent.
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if location is None:
        return None
    try:
        target = URL(location, encoded=not requote)
        scheme = target.scheme
        if scheme not in _FOLLOWED_SCHEMES:
            return None
        if not scheme or (scheme == url.scheme and has_no_authority(location, scheme)):
            target = url.join(target)
        target.origin()  # raises for what aiohttp refuses: no host, not absolute
    except ValueError:
        return None
    if (response.status == 303 and method != hdrs.METH_HEAD) or (
        response.status in (301, 302) and method == hdrs.METH_POST
    ):
        method = hdrs.METH_GET
    return method, target


def _host_filter(hosts: HostFilter | None) -> Callable[[URL], bool] | None:
    if hosts is None or callable(hosts):
        return hosts
    require_collection("propagate_to", hosts, "host names")
    allowed = frozenset(_host_name(entry) for entry in hosts)

    def host_allowed(url: URL) -> bool:
        host = (url.host or "").lower().rstrip(".")
        return host in allowed or any(host.endswith("." + parent) for parent in allowed)

    return host_allowed


def _host_name(entry: object) -> str:
    """One ``propagate_to`` entry as the host name it is compared with; raises if it is not one.

    A URL or a ``host:port`` would never equal a request's host, so headers would silently go
    nowhere: refused, naming the host to write instead.
    """
    if isinstance(entry, URL):
        entry = str(entry)
    if not isinstance(entry, str):
        raise TypeError(f"propagate_to takes host names (strings), not {entry!r}")
    name = entry.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]  # an IPv6 literal as written in a URL
    if "/" in name or "@" in name or (":" in name and not _is_ipv6(name)):
        try:
            host = (URL(entry) if "://" in entry else URL("//" + entry)).host
        except ValueError:
            host = None
        hint = f": write {host!r}" if host else ""
        raise ValueError(
            f"propagate_to takes host names such as 'api.example.com', not URLs or host:port,"
            f" and got {entry!r}{hint}"
        )
    if not name:
        raise ValueError("propagate_to contains an empty host name")
    return name


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _url_matcher(pattern: UrlPattern) -> Callable[[URL], bool]:
    if callable(pattern):
        return pattern
    if isinstance(pattern, str):
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"exclude_urls: {pattern!r} is not a valid regular expression ({exc})"
            ) from None
    elif isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        regex = pattern
    else:
        raise TypeError(
            "exclude_urls takes regular expressions (str or re.Pattern) or functions of the"
            f" URL, not {pattern!r}"
        )

    def matches(url: URL) -> bool:
        return regex.search(str(url.with_user(None))) is not None

    return matches


@dataclass(frozen=True, slots=True)
class Collector:
    """The tracer's collector URL, which is never traced (so a trace is never traced)."""

    origin: URL
    raw_path: str
    path: str
    #: The collector's path has escapes: a request's may then mean it written differently.
    escaped: bool

    @classmethod
    def of(cls, tracer: Tracer) -> Collector | None:
        """The collector of ``tracer``'s transport, if it has an address."""
        transport = tracer._transport
        address = getattr(transport, "address", None) or getattr(transport, "_address", None)
        if address is None:
            return None
        url = URL(str(address))
        return cls(url.origin(), url.raw_path, url.path, "%" in url.raw_path)

    def matches(self, url: URL) -> bool:
        """True for a request to the collector: its origin and path, whatever the query.

        Paths are compared as the URLs hold them (decoding every request's path would cost
        more than the rest of the check); only a path with escapes on either side can mean
        the same while written differently, and only then are the decoded paths compared.
        """
        same_path = url.raw_path == self.raw_path or (
            (self.escaped or "%" in url.raw_path) and url.path == self.path
        )
        return same_path and url.is_absolute() and url.origin() == self.origin


def _service_namer(value: RemoteServiceName | None) -> Callable[[URL], str | None] | None:
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise TypeError(
            "remote_service_name takes a service name or a function of the URL returning one,"
            f" not {value!r}"
        )
    fixed = value
    return lambda url: fixed


def make_trace_config(
    tracer: Tracer,
    *,
    b3_format: B3Format = B3Format.MULTI,
    propagate_to: HostFilter | None = None,
    exclude_urls: Iterable[UrlPattern] = (),
    remote_service_name: RemoteServiceName | None = None,
    sampler: RequestSampler | None = None,
    request_parser: RequestParser = default_request_parser,
    response_parser: ResponseParser = default_response_parser,
    connection_phases: Literal["annotations", "spans"] = "annotations",
) -> aiohttp.TraceConfig:
    """Trace every request of a ``ClientSession`` as Zipkin CLIENT spans, with B3 headers.

    >>> import aiohttp, aiozipkin, aiozipkin_client
    >>> async def main():                                                   # doctest: +SKIP
    ...     endpoint = aiozipkin.create_endpoint("checkout")
    ...     async with aiozipkin_client.create(
    ...         "http://zipkin:9411/api/v2/spans", endpoint
    ...     ) as tracer:
    ...         trace_config = aiozipkin_client.make_trace_config(tracer)
    ...         async with aiohttp.ClientSession(trace_configs=[trace_config]) as session:
    ...             await session.get("http://inventory.internal/items")

    Any aiozipkin ``Tracer`` works; build it with :func:`aiozipkin_client.create` (a drop-in for
    ``aiozipkin.create`` whose transport posts spec-valid spans and never lets a failing
    collector hurt the application).

    Options (all keyword-only; see README for the full table):

    * ``b3_format``: :class:`B3Format` ``MULTI`` (default), ``SINGLE`` or ``BOTH``.
    * ``propagate_to``: host names (a host and its subdomains) that may receive B3 headers, or a
      predicate on the URL; None (default) sends them to every host. Requests to other hosts are
      still traced.
    * ``exclude_urls``: regular expressions (searched in the URL without credentials) or
      predicates; matching requests get no span and no headers. The tracer's collector is always
      excluded.
    * ``remote_service_name``: a fixed name, or a function of the URL, for the remote endpoint.
    * ``sampler``: a function of :class:`RequestView` returning True, False or None (defer to
      the tracer) for requests that start a trace or whose parent deferred the decision.
    * ``request_parser`` / ``response_parser``: set the name and tags (see ``parsers``).
    * ``connection_phases``: ``"annotations"`` (default) records waiting for a connection, DNS
      and connecting as start/end annotations on the CLIENT span; ``"spans"`` records each as a
      child span instead, so they show as bars in the Zipkin UI.
    """
    require_tracer(tracer, "make_trace_config")
    require_collection("exclude_urls", exclude_urls, "regular expressions or functions")
    require_callable("sampler", sampler, optional=True)
    require_callable("request_parser", request_parser)
    require_callable("response_parser", response_parser)
    if not isinstance(b3_format, B3Format):
        raise TypeError(f"b3_format must be a B3Format, not {b3_format!r}")
    if connection_phases not in ("annotations", "spans"):
        raise ValueError(
            f'connection_phases must be "annotations" or "spans", not {connection_phases!r}'
        )
    settings = ClientSettings(
        b3_format=b3_format,
        propagate_to=_host_filter(propagate_to),
        exclude=tuple(_url_matcher(pattern) for pattern in exclude_urls),
        collector=Collector.of(tracer),
        remote_service_name=_service_namer(remote_service_name),
        sampler=sampler,
        request_parser=request_parser,
        response_parser=response_parser,
        connection_phases=connection_phases,
    )
    handlers = ClientTracing(tracer, settings)
    trace_config = aiohttp.TraceConfig(trace_config_ctx_factory=TraceConfigContext)
    # aiohttp makes each request's context with trace_config_ctx(trace_request_ctx=...), a
    # method that calls the factory with the same keyword: the factory itself, in its place,
    # does the same with a call less on every request.
    trace_config.trace_config_ctx = TraceConfigContext  # type: ignore[method-assign,assignment]
    # Each handler, and the receiver that runs it on aiosignal's path.
    pairs: dict[str, tuple[Callable[..., Awaitable[None]], Callable[..., None]]] = {}
    for signal_name in SIGNALS:
        handler = getattr(handlers, signal_name)
        pairs[signal_name] = (_receiver(handler), handler)
    use_direct_signals(trace_config, SIGNALS, _IDLE, pairs)
    for signal_name in SIGNALS:
        getattr(trace_config, signal_name).append(pairs[signal_name][0])
    return trace_config
