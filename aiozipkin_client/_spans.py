"""Handing a finished span to the tracer's transport, once: one path for client and server.

Our instrumentation collects a span's data while the work runs and reports it only when it is
over, so aiozipkin's live ``Span`` (and the tracer's table of unfinished spans it fills) adds
nothing. :class:`SpanSink` hands over what a ``Span`` would have written:

* to our own :class:`~aiozipkin_client.reporting.ZipkinTransport`, a
  :class:`~aiozipkin_client.reporting._model.Span` built from the values directly: they are valid
  by construction (ids generated or checked where they arrived, names and tags coerced by the
  span customizer, endpoints checked once), so nothing is checked again;
* to any other transport (aiozipkin's, a user's, a test recorder), an aiozipkin ``Record`` built
  with its own methods and handed over by ``Tracer._send``, which is what ``Span.finish()`` does.

Timestamps are converted exactly as aiozipkin's ``make_timestamp()`` does.
"""

from __future__ import annotations

import ipaddress
from random import getrandbits
from typing import NamedTuple

from aiozipkin.helpers import Endpoint, TraceContext
from aiozipkin.record import Record
from aiozipkin.tracer import Tracer

from .reporting import ZipkinTransport
from .reporting._model import Annotation, Span, endpoint, endpoint_from_addresses
from .reporting._model import Endpoint as SpanEndpoint

__all__ = ("Remote", "SpanSink", "remote_endpoint", "span_id")


def span_id() -> str:
    """A new random 64-bit span id: 16 lower-case hex digits, as aiozipkin generates them."""
    # The bytes' hex() costs a third of formatting the integer with "016x".
    return getrandbits(64).to_bytes(8, "big").hex()


class Remote(NamedTuple):
    """A remote endpoint, as aiozipkin's ``Endpoint`` and as our checked span endpoint."""

    endpoint: Endpoint
    checked: SpanEndpoint | None


def remote_endpoint(service: str | None, host: str | None, port: int | None) -> Remote | None:
    """The endpoint of a peer at ``host:port``, with its address when the host is an IP literal.

    An IPv4-mapped IPv6 address is the IPv4 address it maps; an IPv6 zone is dropped (Zipkin has
    no field for it). None when nothing is known.
    """
    address4: ipaddress.IPv4Address | None = None
    address6: ipaddress.IPv6Address | None = None
    if host:
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            pass
        else:
            if isinstance(address, ipaddress.IPv6Address):
                address6 = address
            else:
                address4 = address
    # Parsed once: the checked endpoint applies the mapped-IPv4 rule, aiozipkin's gets its result.
    checked = endpoint_from_addresses(service, address4, address6, port)
    if checked is None and not service:
        return None
    ipv4 = None if checked is None else checked.ipv4
    ipv6 = None if checked is None else checked.ipv6
    return Remote(Endpoint(service, ipv4, ipv6, port), checked)


class SpanSink:
    """Reports finished spans of one tracer."""

    __slots__ = ("_direct", "_local", "_local_endpoint", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        # aiozipkin keeps these private, but they are the tracer's own: its service and where
        # its spans go. The local endpoint is checked here, once, for every span to come.
        local = self._local_endpoint = tracer._local_endpoint
        self._local = endpoint(local.serviceName, local.ipv4, local.ipv6, local.port)
        transport = tracer._transport
        self._direct = transport if isinstance(transport, ZipkinTransport) else None

    def report(
        self,
        context: TraceContext,
        kind: str | None,
        name: str | None,
        start: float,
        end: float,
        tags: dict[str, str],
        annotations: list[Annotation] | None,
        remote: Remote | None,
    ) -> None:
        """Report one finished span; ``annotations`` in time order, each once (or None).

        ``tags`` and ``annotations`` are handed over, not copied: the caller must not change
        them afterwards.
        """
        # aiozipkin's make_timestamp() conversion, as the module says.
        start_us, end_us = int(start * 1000 * 1000), int(end * 1000 * 1000)
        direct = self._direct
        if direct is not None:
            direct._send_span(
                Span(
                    context.trace_id,
                    context.span_id,
                    context.parent_id,
                    kind,
                    name,
                    start_us,
                    max(end_us - start_us, 1),  # what Record.finish() computes
                    self._local,
                    None if remote is None else remote.checked,
                    annotations or None,
                    tags or None,
                    context.debug is True,
                    context.shared is True,
                )
            )
            return
        record = Record(context, self._local_endpoint)
        record.start(start_us)
        if kind is not None:
            record.kind(kind)
        if name:
            record.name(name)
        for key, value in tags.items():
            record.set_tag(key, value)
        for annotation in annotations or ():
            record.annotate(annotation.value, annotation.timestamp)
        if remote is not None:
            record.remote_endpoint(remote.endpoint)
        record.finish(end_us)
        self._tracer._send(record)
