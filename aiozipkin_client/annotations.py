"""The annotation values and derived tags this package records, in one table.

Every aiohttp client signal maps to one short, stable annotation value (README lists them with the
signal that produces each). Zipkin's conventional ``ws`` (wire send) and ``wr`` (wire receive)
mark the request headers leaving and the response headers arriving.

Connection phases (waiting for a pooled connection, DNS resolution, opening a connection) have a
start and an end; each gives a duration tag on the CLIENT span and, with
``connection_phases="spans"``, a child span instead of the two annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = (
    "BODY_RECEIVED",
    "CONNECTION_LOST",
    "CONNECTION_REUSED",
    "DNS_CACHE",
    "DNS_CACHE_HIT",
    "DNS_CACHE_MISS",
    "PHASES",
    "REDIRECT",
    "REQUEST_BODY_END",
    "REQUEST_BODY_START",
    "REQUEST_SIZE",
    "RESPONSE_RELEASED",
    "RESPONSE_SIZE",
    "RETRY",
    "REUSED",
    "WIRE_RECEIVE",
    "WIRE_SEND",
    "Phase",
)

# -- annotations ------------------------------------------------------------------------------

#: on_request_headers_sent: the request line and headers were written to the connection.
WIRE_SEND: Final = "ws"
#: on_request_end: the response status line and headers arrived (the span goes on: body next).
WIRE_RECEIVE: Final = "wr"
#: on_request_chunk_sent, first chunk of the request body.
REQUEST_BODY_START: Final = "request.body.start"
#: on_request_chunk_sent, last chunk seen before the span ended (one annotation, not per chunk).
REQUEST_BODY_END: Final = "request.body.end"
#: on_response_chunk_received (fired by ``read()``), while the span is still open.
BODY_RECEIVED: Final = "response.body"
#: on_connection_reuseconn: a pooled keep-alive connection was taken.
CONNECTION_REUSED: Final = "connection.reuse"
#: on_dns_cache_hit / on_dns_cache_miss.
DNS_CACHE_HIT: Final = "dns.cache.hit"
DNS_CACHE_MISS: Final = "dns.cache.miss"
#: on_request_redirect: this hop's response was a redirect that aiohttp follows.
REDIRECT: Final = "redirect"
#: The hop's request is sent again after its headers went out: aiohttp retrying an idempotent
#: request once when a pooled connection turns out to be dead, or a client middleware (aiohttp
#: 3.12+) calling its handler again (digest authentication, retry, token refresh).
RETRY: Final = "retry"
#: The caller released or closed the response before its body was complete.
RESPONSE_RELEASED: Final = "response.released"
#: The connection closed (session closed, peer reset) before the response body was complete.
CONNECTION_LOST: Final = "connection.lost"

# -- derived tags -----------------------------------------------------------------------------

#: "true" when the hop used a pooled connection, "false" when it opened a new one.
REUSED: Final = "connection.reused"
#: "hit" or "miss": whether aiohttp's DNS cache answered (absent when the cache is off or the
#: host is an IP literal).
DNS_CACHE: Final = "dns.cache"
#: Bytes of request body sent, and of response body received (after decompression).
REQUEST_SIZE: Final = "http.request.size"
RESPONSE_SIZE: Final = "http.response.size"


@dataclass(frozen=True, slots=True)
class Phase:
    """A connection phase: its two annotations, its duration tag and its child-span name."""

    start: str
    end: str
    duration_tag: str
    span_name: str


#: on_connection_queued_start / _end: waiting for a free connection (the pool is at its limit).
QUEUE: Final = Phase("queue.start", "queue.end", "connection.queue_ms", "connection queue")
#: on_dns_resolvehost_start / _end: resolving the host name.
DNS: Final = Phase("dns.start", "dns.end", "dns.resolve_ms", "dns resolve")
#: on_connection_create_start / _end: opening a new connection (DNS, TCP and TLS included).
CONNECT: Final = Phase("connect.start", "connect.end", "connection.connect_ms", "connect")

PHASES: Final = (QUEUE, DNS, CONNECT)
