"""Client instrumentation: :func:`make_trace_config` and one thin method per aiohttp signal.

Each signal method finds the request's :class:`~aiozipkin_client._state.RequestState` on aiohttp's
trace context and delegates; the order of work per hop is fixed: sample, allocate ids, inject,
parse the request; then, at the end, parse the response or error, and report.

Do no harm: every signal method runs inside a guard that logs and swallows exceptions, so a bug
here (or in a user's parser) never changes what the request returns or raises.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from time import time
from types import SimpleNamespace
from typing import Final, TypeVar

import aiohttp
from aiohttp import ClientResponse, ClientResponseError, hdrs
from aiozipkin.helpers import CLIENT, TraceContext
from aiozipkin.tracer import Tracer
from aiozipkin.utils import generate_random_64bit_string, generate_random_128bit_string
from multidict import CIMultiDictProxy, MutableMultiMapping
from yarl import URL

from ._context import current_context, to_context
from ._state import Hop, RequestState, TraceConfigContext
from .parsers import (
    ERROR,
    RequestParser,
    RequestView,
    ResponseParser,
    ResponseView,
    default_request_parser,
    default_response_parser,
    error_value,
    redact_url,
)
from .propagation import B3Format, inject, remove_b3_headers
from .sampling import RequestSampler, decide

__all__ = ("make_trace_config",)

log = logging.getLogger("aiozipkin_client")

RemoteServiceName = str | Callable[[URL], str | None]
UrlPattern = str | re.Pattern[str] | Callable[[URL], bool]
HostFilter = Collection[str] | Callable[[URL], bool]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


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


_Params = TypeVar("_Params")
_Self = TypeVar("_Self", bound="ClientTracing")


def _signal(
    method: Callable[[_Self, TraceConfigContext, _Params], None],
) -> Callable[[_Self, aiohttp.ClientSession, SimpleNamespace, _Params], Awaitable[None]]:
    """Turn a synchronous handler into an aiohttp signal receiver that can never raise."""

    @functools.wraps(method)
    async def receiver(
        self: _Self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: _Params
    ) -> None:
        if not isinstance(ctx, TraceConfigContext):
            return
        try:
            method(self, ctx, params)
        except Exception:
            log.exception("aiozipkin_client: %s failed; the request goes on", method.__name__)

    return receiver


class ClientTracing:
    """The signal handlers of one trace config: one method per aiohttp client signal."""

    def __init__(self, tracer: Tracer, settings: ClientSettings) -> None:
        self._tracer = tracer
        self._settings = settings
        # Read once: aiozipkin keeps its sampler private, but it is the tracer's policy for
        # new traces and we must honour it rather than invent our own.
        self._tracer_sampler = tracer._sampler

    # -- request lifecycle ---------------------------------------------------------------------

    @_signal
    def on_request_start(
        self, ctx: TraceConfigContext, params: aiohttp.TraceRequestStartParams
    ) -> None:
        settings = self._settings
        url = params.url
        if any(matches(url) for matches in settings.exclude):
            return
        explicit_parent, propagate = read_trace_request_ctx(ctx.trace_request_ctx)
        parent = explicit_parent or current_context()
        request = RequestView(params.method, url, CIMultiDictProxy(params.headers))
        trace_id = parent.trace_id if parent is not None else generate_random_128bit_string()
        decision = decide(parent, trace_id, request, settings.sampler, self._tracer_sampler)
        state = RequestState(parent.span_id if parent is not None else None, propagate)
        context = TraceContext(
            trace_id=trace_id,
            parent_id=state.parent_span_id,
            span_id=generate_random_64bit_string(),
            sampled=decision.sampled,
            debug=decision.debug,
            shared=False,
        )
        hop = self._start_hop(context, request, time())
        hop.active = True
        state.hop = hop
        self._inject(state, hop, params.headers)
        ctx.state = state

    @_signal
    def on_request_redirect(
        self, ctx: TraceConfigContext, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        state = ctx.state
        if state is None or state.hop is None:
            return
        now = time()
        ended = state.hop
        self._end_hop(ended, now, params.response, None)
        self._report_previous(state)
        state.previous = ended
        target = redirect_target(params.method, params.url, params.response)
        if target is None:
            # aiohttp will stop here (no Location) or fail; there is no next hop to prepare.
            state.hop = None
            return
        method, url = target
        context = ended.context._replace(span_id=generate_random_64bit_string())
        request = RequestView(method, url, CIMultiDictProxy(params.headers))
        state.hop = self._start_hop(context, request, now)
        self._inject(state, state.hop, params.headers)

    @_signal
    def on_request_headers_sent(
        self, ctx: TraceConfigContext, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        self._activate(ctx.state)

    @_signal
    def on_request_end(
        self, ctx: TraceConfigContext, params: aiohttp.TraceRequestEndParams
    ) -> None:
        state = ctx.state
        if state is None or state.ended:
            return
        state.ended = True
        hop = state.hop
        if hop is not None and hop.active:
            self._end_hop(hop, time(), params.response, None)
            self._report(hop)
        # else: the last redirect had no Location and aiohttp returned that 3xx response: the
        # prepared hop was never sent, and the response belongs to the previous hop.
        self._report_previous(state)
        state.hop = None

    @_signal
    def on_request_exception(
        self, ctx: TraceConfigContext, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        state = ctx.state
        if state is None or state.ended:
            return
        state.ended = True
        now = time()
        hop = state.hop
        if hop is not None and hop.active:
            self._end_hop(hop, now, None, params.exception)
            self._report(hop)
        elif state.previous is not None:
            # Failed between a redirect response and the next hop's first byte (too many
            # redirects, a Location that is not a URL): the error belongs to the redirect.
            self._end_hop(state.previous, now, None, params.exception)
        self._report_previous(state)
        state.hop = None

    # -- connection --------------------------------------------------------------------------

    @_signal
    def on_connection_queued_start(
        self, ctx: TraceConfigContext, params: aiohttp.TraceConnectionQueuedStartParams
    ) -> None:
        self._activate(ctx.state)

    @_signal
    def on_connection_create_start(
        self, ctx: TraceConfigContext, params: aiohttp.TraceConnectionCreateStartParams
    ) -> None:
        self._activate(ctx.state)

    @_signal
    def on_connection_reuseconn(
        self, ctx: TraceConfigContext, params: aiohttp.TraceConnectionReuseconnParams
    ) -> None:
        self._activate(ctx.state)

    # -- hops --------------------------------------------------------------------------------

    def _start_hop(self, context: TraceContext, request: RequestView, now: float) -> Hop:
        hop = Hop(context, request, now)
        if context.sampled:
            try:
                self._settings.request_parser(request, hop)
            except Exception:
                log.exception("request_parser failed; the span keeps what it had")
        return hop

    def _activate(self, state: RequestState | None) -> None:
        """The prepared hop is really being sent: the redirect before it is complete."""
        if state is None or state.ended or state.hop is None or state.hop.active:
            return
        state.hop.active = True
        self._report_previous(state)

    def _end_hop(
        self,
        hop: Hop,
        now: float,
        response: ClientResponse | None,
        error: BaseException | None,
    ) -> None:
        hop.end = now
        if not hop.context.sampled:
            return
        status: int | None = None
        headers: CIMultiDictProxy[str] | None = None
        if response is not None:
            status, headers = response.status, response.headers
        elif isinstance(error, ClientResponseError) and error.status:
            # raise_for_status: the response arrived; keep its status on the span.
            status = error.status
        if error is not None:
            hop.tag(ERROR, error_value(error))
        view = ResponseView(hop.request, status, headers, error)
        try:
            self._settings.response_parser(view, hop)
        except Exception:
            log.exception("response_parser failed; the span keeps what it had")
        if error is not None and not hop.tags.get(ERROR):
            # A parser may add detail, but must not lose an error or leave it empty.
            hop.tag(ERROR, error_value(error))

    def _report_previous(self, state: RequestState) -> None:
        if state.previous is not None:
            previous, state.previous = state.previous, None
            self._report(previous)

    def _report(self, hop: Hop) -> None:
        """Hand a finished hop to aiozipkin as one CLIENT span, exactly once."""
        if not hop.context.sampled or hop.end is None:
            return
        end, hop.end = hop.end, None  # a second call finds nothing to report
        span = self._tracer.to_span(hop.context)
        span.start(hop.start)
        span.kind(CLIENT)
        if hop.span_name:
            span.name(hop.span_name)
        for key, value in hop.tags.items():
            span.tag(key, value)
        for timestamp, value in hop.annotations:
            span.annotate(value, timestamp)
        service, ipv4, ipv6, port = self._remote_endpoint(hop.request.url)
        if service or ipv4 or ipv6 or port:
            span.remote_endpoint(service, ipv4=ipv4, ipv6=ipv6, port=port)
        # finish() hands the record to the transport and drops it from the tracer's table.
        span.finish(end)

    def _remote_endpoint(self, url: URL) -> tuple[str | None, str | None, str | None, int | None]:
        service = None
        if self._settings.remote_service_name is not None:
            try:
                service = self._settings.remote_service_name(url)
            except Exception:
                log.exception("remote_service_name failed for %s", redact_url(url))
        ipv4 = ipv6 = None
        host = url.host
        if host:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                pass
            else:
                if address.version == 4:
                    ipv4 = str(address)
                else:
                    ipv6 = str(address)
        return service, ipv4, ipv6, url.port

    def _inject(self, state: RequestState, hop: Hop, headers: MutableMultiMapping[str]) -> None:
        if not state.propagate:
            return
        allowed = self._settings.propagate_to
        if allowed is None or allowed(hop.request.url):
            inject(headers, hop.context, self._settings.b3_format)
            state.injected = True
        elif state.injected:
            # An earlier hop went to an allowed host; this one must not see our ids.
            remove_b3_headers(headers)
            state.injected = False


def read_trace_request_ctx(value: object) -> tuple[TraceContext | None, bool]:
    """The explicit parent and the ``propagate_headers`` flag from ``trace_request_ctx``.

    Accepts aiozipkin's forms: a mapping or a SimpleNamespace with ``span_context`` (a
    TraceContext or an aiozipkin span) and ``propagate_headers`` (default True).
    """
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


def redirect_target(method: str, url: URL, response: ClientResponse) -> tuple[str, URL] | None:
    """Where aiohttp goes next after ``response``, and with which method.

    Mirrors aiohttp's rules so the next hop's headers can be prepared (and withheld from hosts
    that may not receive them) before aiohttp sends it; None when it will not follow.
    """
    if response.status not in _REDIRECTS:
        return None
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if not location:
        return None
    try:
        target = URL(location)
        if not target.is_absolute():
            target = url.join(target)
    except ValueError:
        return None
    if target.scheme not in ("http", "https") or not target.host:
        return None
    if (response.status == 303 and method != hdrs.METH_HEAD) or (
        response.status in (301, 302) and method == hdrs.METH_POST
    ):
        method = hdrs.METH_GET
    return method, target


def _host_filter(hosts: HostFilter | None) -> Callable[[URL], bool] | None:
    if hosts is None or callable(hosts):
        return hosts
    if isinstance(hosts, str):
        raise TypeError("propagate_to takes a collection of host names, not a single string")
    allowed = frozenset(host.lower().rstrip(".") for host in hosts)

    def host_allowed(url: URL) -> bool:
        host = (url.host or "").lower().rstrip(".")
        return host in allowed or any(host.endswith("." + parent) for parent in allowed)

    return host_allowed


def _url_matcher(pattern: UrlPattern) -> Callable[[URL], bool]:
    if callable(pattern):
        return pattern
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern

    def matches(url: URL) -> bool:
        return regex.search(str(url.with_user(None))) is not None

    return matches


def _collector_matcher(tracer: Tracer) -> Callable[[URL], bool] | None:
    """Never trace the tracer's own posts to its collector (and so never trace a trace)."""
    transport = tracer._transport
    address = getattr(transport, "address", None) or getattr(transport, "_address", None)
    if address is None:
        return None
    collector = URL(str(address))
    origin, path = collector.origin(), collector.path

    def is_collector(url: URL) -> bool:
        return url.is_absolute() and url.origin() == origin and url.path == path

    return is_collector


def _service_namer(value: RemoteServiceName | None) -> Callable[[URL], str | None] | None:
    if value is None or callable(value):
        return value
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
) -> aiohttp.TraceConfig:
    """Trace every request of a ``ClientSession`` as Zipkin CLIENT spans, with B3 headers.

    >>> import aiohttp, aiozipkin, aiozipkin_client
    >>> async def main():                                                   # doctest: +SKIP
    ...     endpoint = aiozipkin.create_endpoint("checkout")
    ...     async with aiozipkin.create("http://zipkin:9411/api/v2/spans", endpoint) as tracer:
    ...         trace_config = aiozipkin_client.make_trace_config(tracer)
    ...         async with aiohttp.ClientSession(trace_configs=[trace_config]) as session:
    ...             await session.get("http://inventory.internal/items")

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
    """
    if not isinstance(b3_format, B3Format):
        raise TypeError(f"b3_format must be a B3Format, not {b3_format!r}")
    exclude = [_url_matcher(pattern) for pattern in exclude_urls]
    collector = _collector_matcher(tracer)
    if collector is not None:
        exclude.append(collector)
    settings = ClientSettings(
        b3_format=b3_format,
        propagate_to=_host_filter(propagate_to),
        exclude=tuple(exclude),
        remote_service_name=_service_namer(remote_service_name),
        sampler=sampler,
        request_parser=request_parser,
        response_parser=response_parser,
    )
    handlers = ClientTracing(tracer, settings)
    trace_config = aiohttp.TraceConfig(trace_config_ctx_factory=TraceConfigContext)
    trace_config.on_request_start.append(handlers.on_request_start)
    trace_config.on_request_redirect.append(handlers.on_request_redirect)
    trace_config.on_request_headers_sent.append(handlers.on_request_headers_sent)
    trace_config.on_request_end.append(handlers.on_request_end)
    trace_config.on_request_exception.append(handlers.on_request_exception)
    trace_config.on_connection_queued_start.append(handlers.on_connection_queued_start)
    trace_config.on_connection_create_start.append(handlers.on_connection_create_start)
    trace_config.on_connection_reuseconn.append(handlers.on_connection_reuseconn)
    return trace_config
