"""Reporting spans to a Zipkin collector: strict v2 encoding and a transport that does no harm.

Two concerns live here, in this order:

* **Encoding** (:func:`encode_span`): an aiozipkin ``Record`` becomes a span that validates against
  ``zipkin2-api.yaml``. No JSON ``null`` anywhere: what is absent is omitted. Identifiers are
  lower-hex of the right length and never all zeros; a record that breaks this is refused with
  :class:`InvalidSpanError`, because a strict collector rejects the *whole batch* for one bad span.
* **Transport** (:class:`ZipkinTransport`): ``send()`` encodes the record and appends it to a
  bounded buffer, nothing else; one background task posts batches and retries with backoff. The
  application never waits for, nor sees an error from, the collector.

:func:`create` is a drop-in for ``aiozipkin.create`` that reports through this transport.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import itertools
import json
import logging
import math
import random
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from aiozipkin.context_managers import _ContextManager
from aiozipkin.helpers import Endpoint, TraceContext
from aiozipkin.record import Annotation, Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import TransportABC
from yarl import URL

from .propagation import is_valid_span_id, is_valid_trace_id

__all__ = (
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_GZIP_THRESHOLD",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_RETRY_MAX_DELAY",
    "DEFAULT_SEND_INTERVAL",
    "DEFAULT_SEND_TIMEOUT",
    "InvalidSpanError",
    "ReportingStats",
    "ZipkinTransport",
    "create",
    "encode_span",
)

log = logging.getLogger("aiozipkin_client.reporting")

#: Zipkin's v2 span endpoint: an address with no path (``http://zipkin:9411``) gets this one.
_SPANS_PATH: Final = "/api/v2/spans"
#: Seconds between two posts of a batch that is not full yet (aiozipkin's default).
DEFAULT_SEND_INTERVAL: Final = 5.0
#: Spans per POST at most.
DEFAULT_BATCH_SIZE: Final = 100
#: Spans the buffer holds at most, including the batch being posted; the oldest go first.
DEFAULT_MAX_QUEUE_SIZE: Final = 10_000
#: Seconds one POST may take, connection included, before it counts as failed.
DEFAULT_SEND_TIMEOUT: Final = 10.0
#: Seconds ``close()`` keeps trying to deliver what is buffered before it gives up.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
#: Bodies longer than this many bytes are gzip-compressed; None never compresses.
DEFAULT_GZIP_THRESHOLD: Final = 1024
#: Seconds before the first retry; each further failure doubles it, up to the maximum.
DEFAULT_RETRY_DELAY: Final = 1.0
#: Upper bound of the delay between two attempts, ``Retry-After`` included.
DEFAULT_RETRY_MAX_DELAY: Final = 30.0

# aiozipkin names every record "unknown" until told otherwise: that means "not set".
_PLACEHOLDER_NAME: Final = "unknown"
_KINDS: Final = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
# 408 and 429 say "try again later"; every other 4xx says the request itself is wrong.
_RETRYABLE_4XX: Final = frozenset({408, 429})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
# Enough of an error answer to explain it in a log line.
_ERROR_EXCERPT_BYTES: Final = 512
# The b3-propagation spec asks reporters to send an explicit deny, so that a proxy in between
# does not start a trace of the reporting traffic itself. Only the single header: see the spec.
_REQUEST_HEADERS: Final = {"Content-Type": "application/json", "b3": "0"}


class InvalidSpanError(ValueError):
    """A record that cannot become a valid Zipkin span (a missing or malformed identifier)."""


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def encode_span(record: Record) -> dict[str, Any]:
    """The Zipkin v2 span for ``record``: a dict ready for ``json.dumps``, never holding None.

    The record is read through its public ``asdict()`` and nothing else, and that output is
    treated as untrusted input: every field is re-checked and normalised. Absent or empty values
    are omitted, names and service names are lower-cased, the placeholder name ``"unknown"`` is
    dropped, durations are at least one microsecond, annotations without a value are dropped and
    repeated ones kept once, ``debug``/``shared`` appear only when true.

    Raises :class:`InvalidSpanError` when an identifier is missing, is not lower-hex of the
    right length (16 or 32 for ``traceId``, 16 for ``id`` and ``parentId``) or is all zeros.
    Upper-case hex is the same number and is lower-cased rather than refused.

    >>> from aiozipkin.helpers import TraceContext, create_endpoint
    >>> context = TraceContext("4e441824ec2b6a44ffdc9bb9a6453df3", None, "ffdc9bb9a6453df3",
    ...                        sampled=True, debug=False, shared=False)
    >>> record = Record(context, create_endpoint("Checkout")).name("GET").start(1502787600000000)
    >>> encode_span(record)  # doctest: +NORMALIZE_WHITESPACE
    {'traceId': '4e441824ec2b6a44ffdc9bb9a6453df3', 'id': 'ffdc9bb9a6453df3', 'name': 'get',
     'timestamp': 1502787600000000, 'localEndpoint': {'serviceName': 'checkout'}}
    """
    raw = record.asdict()
    span: dict[str, Any] = {"traceId": _identifier(raw.get("traceId"), "traceId")}
    if raw.get("parentId") is not None:
        span["parentId"] = _identifier(raw["parentId"], "parentId")
    span["id"] = _identifier(raw.get("id"), "id")
    optional: dict[str, Any] = {
        "kind": _kind(raw.get("kind")),
        "name": _name(raw.get("name")),
        "timestamp": _epoch_micros(raw.get("timestamp")),
        "duration": _duration(raw.get("duration")),
        "localEndpoint": _endpoint(raw.get("localEndpoint")),
        "remoteEndpoint": _endpoint(raw.get("remoteEndpoint")),
        "annotations": _annotations(raw.get("annotations")),
        "tags": _tags(raw.get("tags")),
        "debug": True if raw.get("debug") is True else None,
        "shared": True if raw.get("shared") is True else None,
    }
    span.update((key, value) for key, value in optional.items() if value is not None)
    return span


def _identifier(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidSpanError(f"{field} is {_show(value)}, not a hex string")
    lowered = value.lower()
    valid = is_valid_trace_id(lowered) if field == "traceId" else is_valid_span_id(lowered)
    if not valid:
        size = "16 or 32" if field == "traceId" else "16"
        raise InvalidSpanError(
            f"{field} {_show(value)} is not {size} hex characters with one non-zero"
        )
    return lowered


def _show(value: object) -> str:
    # Identifiers come from the network (B3 headers): keep log lines short whatever arrived.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    kind = value.upper()
    return kind if kind in _KINDS else None


def _name(value: object) -> str | None:
    if value is None:
        return None
    name = str(value).lower()
    if not name.strip() or name == _PLACEHOLDER_NAME:
        return None
    return name


def _epoch_micros(value: object) -> int | None:
    # bool is an int subclass; True is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    micros = int(value)
    return micros if micros > 0 else None


def _duration(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    # The spec: "Durations of less than one are rounded up."
    return max(int(value), 1)


def _endpoint(value: object) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    endpoint: dict[str, Any] = {}
    service_name = value.get("serviceName")
    if isinstance(service_name, str) and service_name.strip():
        endpoint["serviceName"] = service_name.lower()
    ipv4 = _ipv4(value.get("ipv4"))
    ipv6 = _ipv6(value.get("ipv6"))
    # The spec prefers the ipv4 field for IPv4-mapped IPv6 addresses.
    if ipv6 is not None and ipv6.ipv4_mapped is not None:
        ipv4 = ipv4 or ipv6.ipv4_mapped
        ipv6 = None
    if ipv4 is not None:
        endpoint["ipv4"] = str(ipv4)
    if ipv6 is not None:
        endpoint["ipv6"] = str(ipv6)
    port = value.get("port")
    # "Absent if unknown. Please don't set to zero."
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port <= 65535:
        endpoint["port"] = port
    return endpoint or None


def _ipv4(value: object) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


def _ipv6(value: object) -> ipaddress.IPv6Address | None:
    if not isinstance(value, str):
        return None
    # A zone ("fe80::1%eth0") is local to the host that wrote it and not a valid ipv6 format.
    try:
        return ipaddress.IPv6Address(value.partition("%")[0])
    except ValueError:
        return None


def _annotations(value: object) -> list[dict[str, Any]] | None:
    if not isinstance(value, list | tuple):
        return None
    annotations: list[dict[str, Any]] = []
    seen: set[tuple[str, int]] = set()
    for item in value:
        if not isinstance(item, Mapping) or item.get("value") is None:
            continue
        text = str(item["value"])
        timestamp = _epoch_micros(item.get("timestamp"))
        # The schema requires both fields and unique items: a repeated annotation would make
        # a strict collector refuse the whole batch.
        if not text.strip() or timestamp is None or (text, timestamp) in seen:
            continue
        seen.add((text, timestamp))
        annotations.append({"timestamp": timestamp, "value": text})
    return annotations or None


def _tags(value: object) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    tags = {
        str(key): tag if isinstance(tag, str) else str(tag)
        for key, tag in value.items()
        if key is not None and str(key) and tag is not None
    }
    return tags or None


def _to_json(span: dict[str, Any]) -> bytes:
    # Compact UTF-8 rather than \u escapes: smaller bodies for non-ASCII tags. A lone surrogate
    # (possible in a Python str, never valid UTF-8) can only sit inside a JSON string, so
    # replacing it with "?" keeps the document valid instead of failing the whole batch.
    return _JSON.encode(span).encode("utf-8", "replace")


# What json.dumps(span, ensure_ascii=False, separators=(",", ":")) builds on every call.
_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The string encoder _JSON uses (C-accelerated): '"' + the escaped text + '"'.
_quote: Final = json.encoder.encode_basestring
_RECORD_ASDICT: Final = Record.asdict
# Distinct endpoints whose JSON a transport keeps; a process talks to few, so this is plenty.
_ENDPOINT_CACHE_SIZE: Final = 256


_UNSET: Final = object()


class _NotPlain(Exception):
    """The record holds something aiozipkin's own methods would not store: use encode_span."""


class _SpanEncoder:
    """``_to_json(encode_span(record))``, the same bytes, written directly for plain records.

    Encoding is most of what reporting costs per span, and nearly all of it is spent building
    and re-checking intermediate dicts. A record whose class keeps aiozipkin's own ``asdict()``
    holds exactly the fields ``asdict()`` would copy; when they have the types aiozipkin's own
    methods store (str ids, names and tags, int timestamps, ``Annotation`` tuples), the JSON
    is written from them directly by :meth:`span`, applying :func:`encode_span`'s rules field by
    field, in its order. Anything else (an overridden ``asdict()``, a caller's odd types) takes
    :func:`encode_span`'s path. Validated endpoints are cached: a process reports from one local
    endpoint to a few remote ones, and parsing their addresses was the largest single cost.
    """

    __slots__ = ("_endpoints", "_parent_id", "_trace_id")

    def __init__(self) -> None:
        self._endpoints: dict[tuple[str | None, str | None, str | None, int | None], str] = {}
        # The last trace and parent ids found valid, as (the object checked, its value): the
        # spans of one trace share them, and a str that passed the check once passes it again.
        self._trace_id: tuple[object, str] = (_UNSET, "")
        self._parent_id: tuple[object, str] = (_UNSET, "")

    def __call__(self, record: Record) -> bytes:
        if type(record).asdict is _RECORD_ASDICT:
            annotations = record._annotations
            # Where asdict() itself would fail (an item that is not an Annotation), encode_span
            # fails before it checks any identifier: leave that to it.
            if type(annotations) is list and all(type(a) is Annotation for a in annotations):
                try:
                    return self.span(
                        record._context,
                        record._name,
                        record._kind,
                        record._timestamp,
                        record._duration,
                        record._local_endpoint,
                        record._remote_endpoint,
                        annotations,
                        record._tags,
                    )
                except _NotPlain:
                    pass
        return _to_json(encode_span(record))

    def span(
        self,
        context: TraceContext,
        name: object,
        kind: object,
        timestamp: object,
        duration: object,
        local_endpoint: object,
        remote_endpoint: object,
        annotations: Iterable[tuple[object, object]],
        tags: object,
    ) -> bytes:
        """The span holding these Record fields, as encode_span would make it, in JSON.

        Raises :class:`InvalidSpanError` as encode_span does, and ``_NotPlain`` for values of
        other types than aiozipkin's methods store, which encode_span must handle instead.
        """
        # Annotations, tags and name first: a value only encode_span may handle must be found
        # before an identifier is refused, since encode_span would fail on it first.
        if type(tags) is not dict:
            raise _NotPlain
        tail: list[str] = []
        seen: set[tuple[str, int]] = set()
        separator = ',"annotations":['
        for text, at in annotations:
            if text is None:
                continue
            if type(text) is not str:
                raise _NotPlain
            micros = at if type(at) is int else _epoch_micros(at)
            if not text.strip() or micros is None or micros <= 0 or (text, micros) in seen:
                continue
            seen.add((text, micros))
            tail.append(f'{separator}{{"timestamp":{micros},"value":{_quote(text)}}}')
            separator = ","
        if seen:
            tail.append("]")
        separator = ',"tags":{'
        for key, value in tags.items():
            if type(key) is not str or type(value) is not str:
                raise _NotPlain
            if key:
                tail.append(f"{separator}{_quote(key)}:{_quote(value)}")
                separator = ","
        if separator == ",":
            tail.append("}")
        if name is not None and type(name) is not str:
            raise _NotPlain

        # Then the identifiers, in encode_span's order: a bad one is refused the same way.
        trace_id, parent_id, span_id = context.trace_id, context.parent_id, context.span_id
        if trace_id is self._trace_id[0]:
            trace_id = self._trace_id[1]
        else:
            self._trace_id = (trace_id, _identifier(trace_id, "traceId"))
            trace_id = self._trace_id[1]
        if parent_id is None:
            parts = [f'{{"traceId":"{trace_id}","id":"{_identifier(span_id, "id")}"']
        else:
            if parent_id is self._parent_id[0]:
                parent_id = self._parent_id[1]
            else:
                self._parent_id = (parent_id, _identifier(parent_id, "parentId"))
                parent_id = self._parent_id[1]
            span_id = _identifier(span_id, "id")
            parts = [f'{{"traceId":"{trace_id}","parentId":"{parent_id}","id":"{span_id}"']
        label = _kind(kind)
        if label is not None:
            parts.append(f',"kind":"{label}"')
        if name is not None:
            label = _name(name)
            if label is not None:
                parts.append(f',"name":{_quote(label)}')
        if timestamp is not None:
            micros = timestamp if type(timestamp) is int else _epoch_micros(timestamp)
            if micros is not None and micros > 0:
                parts.append(f',"timestamp":{micros}')
        if duration is not None:
            micros = _duration(duration)
            if micros is not None:
                parts.append(f',"duration":{micros}')
        endpoint = self._endpoint(local_endpoint)
        if endpoint:
            parts.append(f',"localEndpoint":{endpoint}')
        endpoint = self._endpoint(remote_endpoint)
        if endpoint:
            parts.append(f',"remoteEndpoint":{endpoint}')
        parts += tail
        if context.debug is True:
            parts.append(',"debug":true')
        if context.shared is True:
            parts.append(',"shared":true')
        parts.append("}")
        return "".join(parts).encode("utf-8", "replace")

    def _endpoint(self, value: object) -> str:
        """The JSON of ``_endpoint(value)``, or "" when it is omitted."""
        if type(value) is dict:
            service = value.get("serviceName")
            ipv4 = value.get("ipv4")
            ipv6 = value.get("ipv6")
            port = value.get("port")
            # Only exact types make a safe key: True == 1 and 80.0 == 80 but encode differently.
            if (
                (service is None or type(service) is str)
                and (ipv4 is None or type(ipv4) is str)
                and (ipv6 is None or type(ipv6) is str)
                and (port is None or type(port) is int)
            ):
                key = (service, ipv4, ipv6, port)
                text = self._endpoints.get(key)
                if text is None:
                    if len(self._endpoints) >= _ENDPOINT_CACHE_SIZE:
                        self._endpoints.clear()
                    text = self._endpoints[key] = _endpoint_json(value)
                return text
        return _endpoint_json(value)


def _endpoint_json(value: object) -> str:
    endpoint = _endpoint(value)
    return "" if endpoint is None else _JSON.encode(endpoint)


# --------------------------------------------------------------------------------------------
# Counters and the buffer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportingStats:
    """What a :class:`ZipkinTransport` did with the records it was given, since it was made.

    Whenever no POST is in progress, ``received`` equals ``sent + queued`` plus every
    ``dropped_*`` counter: each record is accounted for exactly once.

    >>> transport = ZipkinTransport("http://127.0.0.1:9411/api/v2/spans")
    >>> transport.stats().queued
    0
    """

    #: Records passed to ``send()``.
    received: int
    #: Spans the collector accepted (any 2xx answer).
    sent: int
    #: Spans waiting in the buffer now, including a batch being posted.
    queued: int
    #: Records refused by :func:`encode_span` (bad identifiers) or that failed to encode.
    dropped_invalid: int
    #: Oldest spans pushed out because the buffer was full.
    dropped_queue_full: int
    #: Spans of batches the collector refused for good (400 and other 4xx but 408 and 429).
    dropped_rejected: int
    #: Spans still buffered when ``close()`` gave up, or sent after ``close()``.
    dropped_closed: int
    #: Failed POST attempts that were scheduled for a retry.
    retries: int


class _SpanBuffer:
    """A bounded FIFO of encoded spans; the batch being posted stays in it until settled.

    Keeping the batch in the buffer makes ``capacity`` the one bound on memory, and makes
    drop-oldest exact: when the collector has been failing, its oldest spans are that batch.
    Items are numbered in arrival order so that a batch can be settled even if some of its items
    were pushed out while the POST was in flight.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[bytes] = deque()
        self._capacity = capacity
        self._first = 0  # sequence number of self._items[0]
        self._batch_end = 0  # one past the batch being posted; <= self._first when none
        self._batch_evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: bytes) -> bool:
        """Add ``item``; True when an older span not being posted was dropped for it."""
        dropped = False
        if len(self._items) >= self._capacity:
            self._items.popleft()
            if self._first < self._batch_end:
                # Whether it is lost depends on how the POST ends: see keep_batch().
                self._batch_evicted += 1
            else:
                dropped = True
            self._first += 1
        self._items.append(item)
        return dropped

    def start_batch(self, size: int) -> list[bytes]:
        """The oldest ``size`` spans at most, marked as being posted."""
        batch = list(itertools.islice(self._items, size))
        self._batch_end = self._first + len(batch)
        self._batch_evicted = 0
        return batch

    def remove_batch(self) -> None:
        """The batch was delivered or refused for good: forget what is left of it."""
        for _ in range(max(0, self._batch_end - self._first)):
            self._items.popleft()
            self._first += 1
        self._batch_end = 0
        self._batch_evicted = 0

    def keep_batch(self) -> int:
        """The batch will be retried; returns how many of its spans were pushed out meanwhile."""
        lost = self._batch_evicted
        self._batch_end = 0
        self._batch_evicted = 0
        return lost

    def clear(self) -> int:
        """Drop everything; returns how many spans that was (pushed-out batch items included)."""
        lost = len(self._items) + self._batch_evicted
        self._first += len(self._items)
        self._items.clear()
        self._batch_end = 0
        self._batch_evicted = 0
        return lost


class _DropLog:
    """Counts dropped spans for one reason and logs the total at most once per interval.

    A collector outage can drop thousands of spans a second: one warning per span would turn a
    tracing problem into a logging outage.
    """

    def __init__(self, interval: float, reason: str) -> None:
        self._interval = interval
        self._reason = reason
        self._pending = 0
        self._detail = ""
        self._next_at = -math.inf

    def add(self, count: int, detail: str = "") -> None:
        self._pending += count
        self._detail = detail or self._detail
        if time.monotonic() >= self._next_at:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        detail = f": {self._detail}" if self._detail else ""
        log.warning("dropped %d spans (%s)%s", self._pending, self._reason, detail)
        self._pending = 0
        self._detail = ""
        self._next_at = time.monotonic() + self._interval


@dataclass(frozen=True, slots=True)
class _Answer:
    """How one POST ended: ``status`` is None when no HTTP answer came back."""

    status: int | None
    detail: str
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        status = self.status
        return status is None or status >= 500 or status in _RETRYABLE_4XX


def _retry_delay(
    failures: int, first: float, maximum: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after ``failures`` consecutive failed attempts.

    Exponential, with "equal jitter" (between half and all of the step) so that many processes
    that lost the collector at the same moment do not come back in lockstep. A ``Retry-After``
    from the collector is honoured, within ``maximum`` like everything else.
    """
    step = min(maximum, first * 2.0 ** min(failures - 1, 62))
    delay = step / 2 + random.random() * step / 2  # jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, maximum)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delay-seconds or HTTP-date), if valid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------------------------


class ZipkinTransport(TransportABC):
    """An aiozipkin transport that posts strict Zipkin v2 JSON and never harms the application.

    ``send()`` is synchronous and cheap: it encodes the record (:func:`encode_span`), appends it
    to a buffer of at most ``max_queue_size`` spans (dropping the oldest when full) and returns.
    It never raises, never waits and performs no I/O. A background task, started on the first
    ``send()`` made inside a running event loop, posts batches of up to ``batch_size`` spans as
    soon as a batch is full or ``send_interval`` seconds after the previous post. Failed posts
    (no answer, timeout, 5xx, 408, 429) are retried with exponential backoff between
    ``retry_delay`` and ``retry_max_delay`` seconds, honouring ``Retry-After``; a batch refused
    with another 4xx is dropped and logged. Bodies above ``gzip_threshold`` bytes are gzipped.

    The transport may be built outside any event loop; its ``aiohttp.ClientSession`` (with no
    trace configs, so its own posts are never traced) is created inside the background task.
    Use it from one event loop, and call :meth:`close` before that loop ends.

    >>> from aiozipkin import Sampler, Tracer, create_endpoint
    >>> async def main() -> None:
    ...     transport = ZipkinTransport("http://127.0.0.1:9411/api/v2/spans", batch_size=50)
    ...     tracer = Tracer(transport, Sampler(sample_rate=1.0), create_endpoint("checkout"))
    ...     with tracer.new_trace(sampled=True) as span:
    ...         span.name("charge card")
    ...     await tracer.close()  # flushes, for at most close_timeout seconds
    """

    def __init__(
        self,
        address: str | URL,
        *,
        send_interval: float = DEFAULT_SEND_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        gzip_threshold: int | None = DEFAULT_GZIP_THRESHOLD,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
    ) -> None:
        url = URL(address)
        # Configuration mistakes are the one thing worth raising for, and only here, at start-up.
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"zipkin address must be an absolute http(s) URL, got {address!r}")
        if url.path in ("", "/"):
            # Zipkin's own address, as in its UI links: spans go to its v2 endpoint.
            # (with_path drops the query; yarl 1.12, our oldest, has no keep_query option.)
            url = url.with_path(_SPANS_PATH).with_query(url.query)
        for name, count in (("batch_size", batch_size), ("max_queue_size", max_queue_size)):
            _require_type(name, count, int, "a whole number")
        if gzip_threshold is not None:
            _require_type("gzip_threshold", gzip_threshold, int, "a whole number or None")
        for name, seconds in (
            ("send_interval", send_interval),
            ("send_timeout", send_timeout),
            ("close_timeout", close_timeout),
            ("retry_delay", retry_delay),
            ("retry_max_delay", retry_max_delay),
        ):
            _require_type(name, seconds, (int, float), "a number of seconds")
        _require(send_interval > 0, "send_interval must be > 0")
        _require(batch_size >= 1, "batch_size must be >= 1")
        _require(max_queue_size >= 1, "max_queue_size must be >= 1")
        _require(send_timeout > 0, "send_timeout must be > 0")
        _require(close_timeout >= 0, "close_timeout must be >= 0")
        _require(gzip_threshold is None or gzip_threshold >= 0, "gzip_threshold must be >= 0")
        _require(0 < retry_delay <= retry_max_delay, "need 0 < retry_delay <= retry_max_delay")

        self._address = url
        self._send_interval = float(send_interval)
        self._batch_size = batch_size
        self._send_timeout = float(send_timeout)
        self._close_timeout = float(close_timeout)
        self._gzip_threshold = gzip_threshold
        self._retry_delay = float(retry_delay)
        self._retry_max_delay = float(retry_max_delay)

        self._buffer = _SpanBuffer(max_queue_size)
        self._encode = _SpanEncoder()
        self._task: asyncio.Task[None] | None = None
        # Bound to the loop of the background task, so created by it.
        self._wake: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._failures = 0
        self._retry_at: float | None = None  # loop time of the next attempt while failing
        self._next_flush = 0.0  # loop time at which a partial batch is due

        self._received = 0
        self._sent = 0
        self._dropped_invalid = 0
        self._dropped_queue_full = 0
        self._dropped_rejected = 0
        self._dropped_closed = 0
        self._retries = 0

        interval = self._send_interval
        self._log_full = _DropLog(interval, f"buffer full, max_queue_size={max_queue_size}")
        self._log_invalid = _DropLog(interval, "invalid record")
        self._log_rejected = _DropLog(interval, "refused by the collector, not retried")
        self._log_closed = _DropLog(interval, "transport closed")
        self._failure_log_at = -math.inf
        # Says how many spans were lost if the transport is garbage-collected, or still alive
        # at interpreter exit, without close(); close() detaches it.
        self._unclosed = weakref.finalize(self, _warn_unclosed, self._buffer, str(url))

    @property
    def address(self) -> URL:
        """The collector URL spans are posted to (instrumentation uses it to skip these posts)."""
        return self._address

    def stats(self) -> ReportingStats:
        """A snapshot of the counters; see :class:`ReportingStats`."""
        return ReportingStats(
            received=self._received,
            sent=self._sent,
            queued=len(self._buffer),
            dropped_invalid=self._dropped_invalid,
            dropped_queue_full=self._dropped_queue_full,
            dropped_rejected=self._dropped_rejected,
            dropped_closed=self._dropped_closed,
            retries=self._retries,
        )

    def send(self, record: Record) -> None:
        """Queue ``record`` for the collector; never raises, never blocks, never awaits."""
        self._received += 1
        if self._closing:
            self._dropped_closed += 1
            self._log_closed.add(1)
            return
        try:
            item = self._encode(record)
        except InvalidSpanError as exc:
            self._dropped_invalid += 1
            self._log_invalid.add(1, str(exc))
            return
        except Exception as exc:
            # A record whose asdict() or contents misbehave must not reach the application.
            log.debug("cannot encode record", exc_info=True)
            self._dropped_invalid += 1
            self._log_invalid.add(1, f"encoding failed: {exc!r}")
            return
        self._enqueue(item)

    def _send_span(
        self,
        context: TraceContext,
        name: str | None,
        kind: str | None,
        timestamp: int,
        duration: int,
        local_endpoint: Mapping[str, Any],
        remote_endpoint: Mapping[str, Any] | None,
        annotations: Iterable[tuple[str, int]],
        tags: Mapping[str, str],
    ) -> bool:
        """:meth:`send` for a finished span given as the values its ``Record`` would hold.

        For aiozipkin_client's own client spans, which skip building a ``Record`` when they
        report here. False when a value is not of the plain types a ``Record`` holds: then
        nothing was counted or queued, and the caller sends the ``Record`` instead.
        """
        if self._closing:
            self._received += 1
            self._dropped_closed += 1
            self._log_closed.add(1)
            return True
        try:
            item = self._encode.span(
                context,
                name,
                kind,
                timestamp,
                duration,
                local_endpoint,
                remote_endpoint,
                annotations,
                tags,
            )
        except InvalidSpanError as exc:
            self._received += 1
            self._dropped_invalid += 1
            self._log_invalid.add(1, str(exc))
            return True
        except Exception:
            # _NotPlain, or anything unforeseen: the Record's path counts and handles it.
            return False
        self._received += 1
        self._enqueue(item)
        return True

    def _enqueue(self, item: bytes) -> None:
        buffer = self._buffer
        if buffer.append(item):
            self._dropped_queue_full += 1
            self._log_full.add(1, "the collector is unreachable or too slow")
        task = self._task
        if task is None or task.done():
            self._ensure_sender()
        wake = self._wake
        if wake is not None and len(buffer) >= self._batch_size and not wake.is_set():
            wake.set()

    async def close(self) -> None:
        """Deliver what is buffered within ``close_timeout`` seconds, then stop; idempotent.

        Returns once the background task and its session are gone, whether or not the collector
        answered; what could not be delivered is counted in ``dropped_closed``. Spans sent after
        ``close()`` are dropped the same way.
        """
        if not self._closing:
            self._closing = True
            self._unclosed.detach()  # from now on, what is lost is counted and logged here
            # One immediate last attempt, even if a backoff delay was running.
            self._retry_at = None
        if self._buffer and (self._task is None or self._task.done()):
            self._ensure_sender()
        task = self._task
        if task is None or task.done():
            self._discard_buffer()
            return
        if task.get_loop() is not asyncio.get_running_loop():
            log.warning("close() called from another event loop than the one sending spans")
            return
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self._close_timeout)
        finally:
            # Also reached when close() itself is cancelled: never leave the sender running.
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    def _ensure_sender(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # No loop yet (a synchronous caller): the next send() in a loop starts it.
        self._task = loop.create_task(self._run(), name="aiozipkin_client.reporting")
        self._task.add_done_callback(_log_crash)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self._next_flush = loop.time() + self._send_interval
        # No trace_configs: posting spans must never produce spans.
        session = self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._send_timeout)
        )
        try:
            while True:
                await self._wait_until_due(loop, wake)
                if not self._buffer:
                    if self._closing:
                        return
                    self._next_flush = loop.time() + self._send_interval
                    continue
                await self._post_oldest_batch(session, loop)
                self._next_flush = loop.time() + self._send_interval
        finally:
            self._wake = None
            self._session = None
            if self._closing:
                self._discard_buffer()
            await session.close()

    async def _wait_until_due(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        while True:
            now = loop.time()
            if self._retry_at is not None:
                if now >= self._retry_at:
                    return
                delay = self._retry_at - now
            elif self._closing or len(self._buffer) >= self._batch_size or now >= self._next_flush:
                return
            else:
                delay = self._next_flush - now
            wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _post_oldest_batch(
        self, session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop
    ) -> None:
        batch = self._buffer.start_batch(self._batch_size)
        try:
            answer = await self._post(session, batch)
        except Exception as exc:
            # A bug of ours or of a library: retry (the buffer bounds the cost) and say so,
            # with the traceback once per outage rather than once per attempt.
            log.log(
                logging.DEBUG if self._failures else logging.ERROR,
                "unexpected error while posting spans",
                exc_info=True,
            )
            answer = _Answer(None, repr(exc))
        if answer.delivered:
            self._buffer.remove_batch()
            self._sent += len(batch)
            if self._failures:
                log.info("%s accepts spans again after %d failures", self._address, self._failures)
            self._failures = 0
            self._retry_at = None
        elif answer.retryable:
            lost = self._buffer.keep_batch()
            if lost:
                self._dropped_queue_full += lost
                self._log_full.add(lost, "the collector is unreachable or too slow")
            self._failures += 1
            self._retries += 1
            delay = _retry_delay(
                self._failures, self._retry_delay, self._retry_max_delay, answer.retry_after
            )
            self._retry_at = loop.time() + delay
            self._log_failure(answer, delay)
        else:
            self._buffer.remove_batch()
            self._dropped_rejected += len(batch)
            self._log_rejected.add(len(batch), answer.detail)
            self._failures = 0
            self._retry_at = None

    async def _post(self, session: aiohttp.ClientSession, batch: list[bytes]) -> _Answer:
        body = b"[" + b",".join(batch) + b"]"
        headers = dict(_REQUEST_HEADERS)
        if self._gzip_threshold is not None and len(body) > self._gzip_threshold:
            # mtime=0: the same spans always make the same bytes.
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        try:
            async with session.post(
                self._address, data=body, headers=headers, allow_redirects=False
            ) as response:
                # Reading the (normally empty) answer lets the connection be reused.
                excerpt = await response.content.read(_ERROR_EXCERPT_BYTES)
                retry_after = None
                if response.status in _RETRY_AFTER_STATUSES:
                    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                detail = f"HTTP {response.status} {excerpt.decode('utf-8', 'replace')!r}"
                return _Answer(response.status, detail, retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Answer(None, repr(exc) if str(exc) else type(exc).__name__)

    def _log_failure(self, answer: _Answer, delay: float) -> None:
        # The first failure of an outage is always logged, the following ones once per interval.
        now = time.monotonic()
        if self._failures > 1 and now < self._failure_log_at:
            return
        self._failure_log_at = now + self._send_interval
        log.warning(
            "cannot deliver spans to %s (%s); %d buffered, retry #%d in %.3f s",
            self._address,
            answer.detail,
            len(self._buffer),
            self._failures,
            delay,
        )

    def _discard_buffer(self) -> None:
        lost = self._buffer.clear()
        if lost:
            self._dropped_closed += lost
            self._log_closed.add(lost, "not delivered within close_timeout")
        for drop_log in (self._log_full, self._log_invalid, self._log_rejected, self._log_closed):
            drop_log.flush()


def _warn_unclosed(buffer: _SpanBuffer, address: str) -> None:
    # Never raises: it runs from the garbage collector or at interpreter exit.
    lost = len(buffer)
    if lost:
        log.warning(
            "ZipkinTransport for %s was never closed: %d buffered span%s lost. Close it before"
            " the event loop ends: `await tracer.close()`, or `async with create(...) as tracer`",
            address,
            lost,
            " was" if lost == 1 else "s were",
        )


def _log_crash(task: asyncio.Task[None]) -> None:
    # The sender catches what it expects; anything else is logged here (and so retrieved, which
    # keeps asyncio from reporting it at garbage collection). The next send() starts a new one.
    if not task.cancelled() and task.exception() is not None:
        log.error("span sender stopped", exc_info=task.exception())


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_type(name: str, value: object, kind: type | tuple[type, ...], described: str) -> None:
    # bool is an int to Python, never a size or a delay to a user.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {described}, not {value!r}")


# --------------------------------------------------------------------------------------------
# aiozipkin.create, reporting through ZipkinTransport
# --------------------------------------------------------------------------------------------


def create(
    zipkin_address: str | URL,
    local_endpoint: Endpoint,
    *,
    sample_rate: float = 0.01,
    send_interval: float = DEFAULT_SEND_INTERVAL,
    ignored_exceptions: list[type[Exception]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    gzip_threshold: int | None = DEFAULT_GZIP_THRESHOLD,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
) -> _ContextManager[Tracer]:
    """A drop-in for ``aiozipkin.create``: a ``Tracer`` that reports via :class:`ZipkinTransport`.

    Same arguments and same result as ``aiozipkin.create`` (await it, or use it with
    ``async with``, which closes the tracer and so flushes the transport). The extra keyword
    options are those of :class:`ZipkinTransport`. Invalid options raise ``ValueError`` (or
    ``TypeError`` for a value of the wrong kind) here, at the call; nothing else ever raises.

    >>> import aiozipkin
    >>> async def main() -> None:
    ...     endpoint = aiozipkin.create_endpoint("checkout", ipv4="10.0.0.7", port=8080)
    ...     async with create(
    ...         "http://127.0.0.1:9411/api/v2/spans", endpoint, sample_rate=1.0
    ...     ) as tracer:
    ...         with tracer.new_trace() as span:
    ...             span.name("charge card")
    """
    if not isinstance(local_endpoint, Endpoint):
        raise TypeError(
            "local_endpoint must be an aiozipkin Endpoint, such as"
            f" aiozipkin.create_endpoint('checkout'), not {local_endpoint!r}"
        )
    _require_type("sample_rate", sample_rate, (int, float), "a number from 0.0 to 1.0")
    # 10 meaning 10% would sample everything: a rate is a fraction.
    _require(0.0 <= sample_rate <= 1.0, f"sample_rate must be from 0.0 to 1.0, not {sample_rate!r}")
    # Built now so that a bad option fails at the call site; it starts nothing until used.
    transport = ZipkinTransport(
        zipkin_address,
        send_interval=send_interval,
        batch_size=batch_size,
        max_queue_size=max_queue_size,
        send_timeout=send_timeout,
        close_timeout=close_timeout,
        gzip_threshold=gzip_threshold,
        retry_delay=retry_delay,
        retry_max_delay=retry_max_delay,
    )
    sampler = Sampler(sample_rate=sample_rate)

    async def build_tracer() -> Tracer:
        return Tracer(transport, sampler, local_endpoint, ignored_exceptions)

    return _ContextManager(build_tracer())
