"""Handing a finished span to the tracer's transport, once: one path for client and server.

Our instrumentation collects a span's data while the work runs and reports it only when it is
over, so aiozipkin's live ``Span`` (and the tracer's table of unfinished spans it fills) adds
nothing. :class:`SpanSink` writes what a ``Span`` would have written:

* to our own :class:`~aiozipkin_client.reporting.ZipkinTransport`, the values themselves (it
  encodes them without a ``Record``; it declines anything that is not a plain string, and then
  gets the ``Record``);
* to any other transport (aiozipkin's, a user's, a test recorder), an aiozipkin ``Record`` built
  with its own methods and handed over by ``Tracer._send``, which is what ``Span.finish()`` does.

Timestamps are converted exactly as aiozipkin's ``make_timestamp()`` does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from operator import itemgetter
from random import getrandbits
from typing import Final, NamedTuple

from aiozipkin.helpers import Endpoint, TraceContext
from aiozipkin.record import Record
from aiozipkin.tracer import Tracer

from .reporting import ZipkinTransport

__all__ = ("Remote", "SpanSink", "by_timestamp", "micros", "remote_endpoint", "span_id")

#: The sort key of (timestamp, value) annotations (in C, unlike a lambda).
by_timestamp: Final = itemgetter(0)


def span_id() -> str:
    """A new random 64-bit span id, as aiozipkin generates them."""
    return f"{getrandbits(64):016x}"


def micros(seconds: float) -> int:
    """Epoch seconds to microseconds: exactly aiozipkin's ``make_timestamp()``."""
    return int(seconds * 1000 * 1000)


def _fields(endpoint: Endpoint) -> dict[str, str | int]:
    # What Record keeps of an Endpoint: its fields that are not None.
    return {name: value for name, value in endpoint._asdict().items() if value is not None}


class Remote(NamedTuple):
    """A remote endpoint, and the fields a ``Record`` keeps of it."""

    endpoint: Endpoint
    fields: dict[str, str | int]


def remote_endpoint(service: str | None, host: str | None, port: int | None) -> Remote | None:
    """The endpoint of a peer at ``host:port``, with its address when the host is an IP literal.

    An IPv4-mapped IPv6 address is the IPv4 address it maps; an IPv6 zone is dropped (Zipkin has
    no field for it). None when nothing is known.
    """
    ipv4 = ipv6 = None
    if host:
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            pass
        else:
            if not isinstance(address, ipaddress.IPv6Address):
                ipv4 = str(address)
            elif address.ipv4_mapped is not None:
                ipv4 = str(address.ipv4_mapped)
            else:
                ipv6 = str(address)
    if service or ipv4 or ipv6 or port:
        endpoint = Endpoint(service, ipv4, ipv6, port)
        return Remote(endpoint, _fields(endpoint))
    return None


class SpanSink:
    """Reports finished spans of one tracer."""

    __slots__ = ("_direct", "_local_endpoint", "_local_fields", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        # aiozipkin keeps these private, but they are the tracer's own: its service and where
        # its spans go.
        self._local_endpoint = tracer._local_endpoint
        self._local_fields = _fields(tracer._local_endpoint)
        transport = tracer._transport
        self._direct = transport if isinstance(transport, ZipkinTransport) else None

    def report(
        self,
        context: TraceContext,
        kind: str | None,
        name: str | None,
        start: float,
        end: float,
        tags: Mapping[str, str],
        annotations: Sequence[tuple[float, str]],
        remote: Remote | None,
    ) -> None:
        """Report one finished span; ``annotations`` are ``(epoch seconds, value)`` in order."""
        start_us, end_us = micros(start), micros(end)
        direct = self._direct
        if direct is not None and direct._send_span(
            context,
            name,
            kind,
            start_us,
            max(end_us - start_us, 1),  # what Record.finish() computes
            self._local_fields,
            None if remote is None else remote.fields,
            # micros(), inline: this runs for every annotation of every span.
            [(value, int(timestamp * 1000 * 1000)) for timestamp, value in annotations],
            tags,
        ):
            return
        record = Record(context, self._local_endpoint)
        record.start(start_us)
        if kind is not None:
            record.kind(kind)
        if name:
            record.name(name)
        for key, value in tags.items():
            record.set_tag(key, value)
        for timestamp, value in annotations:
            record.annotate(value, micros(timestamp))
        if remote is not None:
            record.remote_endpoint(remote.endpoint)
        record.finish(end_us)
        self._tracer._send(record)
