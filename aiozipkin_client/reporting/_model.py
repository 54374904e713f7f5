"""The span model and its encoding: one set of rules from a span's values to Zipkin v2 JSON.

A :class:`Span` is a typed msgspec ``Struct`` whose fields are the Zipkin v2 fields, in the order
Zipkin itself writes them. Absent values are None (or False for the flags) and are *omitted* from
the JSON, never written as ``null``: the Struct's ``omit_defaults`` does it, so no encoder keeps a
list of fields to leave out.

Values are checked once, where they enter, and never again:

* a foreign aiozipkin ``Record`` (given to ``ZipkinTransport.send``) is read through its public
  ``asdict()`` and checked field by field by :func:`span_from_record`, which refuses bad
  identifiers with :class:`InvalidSpanError` and normalises the rest;
* our own client and server spans are made of values that are valid by construction (ids we
  generated or validated when they arrived, names and tags coerced by the span customizer,
  endpoints checked once by :func:`endpoint`), so they become a :class:`Span` directly.

Encoding is one msgspec call per batch (:func:`encode_batch`), in the sender task.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final

import msgspec
from aiozipkin.record import Record

from ..propagation import is_valid_span_id, is_valid_trace_id

__all__ = (
    "Annotation",
    "Endpoint",
    "InvalidSpanError",
    "Span",
    "annotation_value",
    "annotations_of",
    "encode_batch",
    "encode_span",
    "endpoint",
    "endpoint_from_addresses",
    "in_time_order",
    "span_from_record",
    "span_name",
    "tag_value",
)

# aiozipkin names every record "unknown" until told otherwise: that means "not set".
_PLACEHOLDER_NAME: Final = "unknown"
_KINDS: Final = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
_BY_TIMESTAMP: Final = attrgetter("timestamp")


class InvalidSpanError(ValueError):
    """A record that cannot become a valid Zipkin span (a missing or malformed identifier)."""


# gc=False: these hold only strings, numbers and each other (a span's tag dict and annotation
# list hold strings and annotations), so they can never be part of a reference cycle, and the
# garbage collector need not track the thousands a busy buffer holds.


class Endpoint(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A Zipkin endpoint; build it with :func:`endpoint`, which checks and normalises."""

    serviceName: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | None = None


class Annotation(msgspec.Struct, frozen=True, gc=False):
    """A timestamped event: epoch microseconds and a non-empty value."""

    timestamp: int
    value: str


class Span(msgspec.Struct, omit_defaults=True, gc=False):
    """One Zipkin v2 span, ready to encode; every value already valid."""

    traceId: str
    id: str
    parentId: str | None = None
    kind: str | None = None
    name: str | None = None
    timestamp: int | None = None
    duration: int | None = None
    localEndpoint: Endpoint | None = None
    remoteEndpoint: Endpoint | None = None
    annotations: list[Annotation] | None = None
    tags: dict[str, str] | None = None
    debug: bool = False
    shared: bool = False


_ENCODER: Final = msgspec.json.Encoder()


def encode_batch(spans: Sequence[Span]) -> bytes:
    """The JSON list of ``spans``: the body of one POST to ``/api/v2/spans``.

    A Python ``str`` may hold a lone surrogate, which UTF-8 cannot carry. Rather than lose the
    batch, such a span is written with each one replaced by ``?`` (looked for only when the
    fast path fails, so the common case pays nothing).
    """
    try:
        return _ENCODER.encode(spans)
    except UnicodeEncodeError:
        return b"[" + b",".join(_encode_one(span) for span in spans) + b"]"


def _encode_one(span: Span) -> bytes:
    try:
        return _ENCODER.encode(span)
    except UnicodeEncodeError:
        return _ENCODER.encode(_scrub(msgspec.to_builtins(span)))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


# -- values entering from outside --------------------------------------------------------------


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
    encoded: dict[str, Any] = msgspec.to_builtins(span_from_record(record))
    return encoded


def span_from_record(record: Record) -> Span:
    """The :class:`Span` for ``record``, by the rules of :func:`encode_span`."""
    raw = record.asdict()
    trace_id = _identifier(raw.get("traceId"), "traceId")
    parent_id = raw.get("parentId")
    if parent_id is not None:
        parent_id = _identifier(parent_id, "parentId")
    return Span(
        traceId=trace_id,
        id=_identifier(raw.get("id"), "id"),
        parentId=parent_id,
        kind=_kind(raw.get("kind")),
        name=span_name(raw.get("name")),
        timestamp=_epoch_micros(raw.get("timestamp")),
        duration=_duration(raw.get("duration")),
        localEndpoint=_endpoint_of(raw.get("localEndpoint")),
        remoteEndpoint=_endpoint_of(raw.get("remoteEndpoint")),
        annotations=_annotations(raw.get("annotations")),
        tags=_tags(raw.get("tags")),
        debug=raw.get("debug") is True,
        shared=raw.get("shared") is True,
    )


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


def span_name(value: object) -> str | None:
    """A span name as Zipkin stores it: lower case; None when empty or aiozipkin's placeholder."""
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


def _endpoint_of(value: object) -> Endpoint | None:
    if not isinstance(value, Mapping):
        return None
    return endpoint(
        value.get("serviceName"), value.get("ipv4"), value.get("ipv6"), value.get("port")
    )


def endpoint(service: object, ipv4: object, ipv6: object, port: object) -> Endpoint | None:
    """A checked endpoint: lower-case service name, valid addresses, a port in 1..65535.

    What is not valid is left out; None when nothing is left. An IPv4-mapped IPv6 address goes
    in the ipv4 field, as the spec prefers; an IPv6 zone is dropped (it is local to the host).
    """
    return endpoint_from_addresses(service, _ipv4(ipv4), _ipv6(ipv6), port)


def endpoint_from_addresses(
    service: object,
    address4: ipaddress.IPv4Address | None,
    address6: ipaddress.IPv6Address | None,
    port: object,
) -> Endpoint | None:
    """:func:`endpoint` for addresses already parsed (the rules for the rest are the same)."""
    name = service.lower() if isinstance(service, str) and service.strip() else None
    if address6 is not None and address6.ipv4_mapped is not None:
        address4 = address4 or address6.ipv4_mapped
        address6 = None
    # "Absent if unknown. Please don't set to zero."
    number = port if type(port) is int and 0 < port <= 65535 else None
    if name is None and address4 is None and address6 is None and number is None:
        return None
    return Endpoint(
        name,
        None if address4 is None else str(address4),
        None if address6 is None else str(address6),
        number,
    )


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


def _annotations(value: object) -> list[Annotation] | None:
    if not isinstance(value, list | tuple):
        return None
    annotations: list[Annotation] = []
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
        annotations.append(Annotation(timestamp, text))
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


# -- values of our own spans -------------------------------------------------------------------


def tag_value(key: object, value: object) -> tuple[str, str] | None:
    """A tag as the span customizers store it: str key and value; None for no tag.

    Parsers are user code and may pass anything: a non-str is turned into its ``str()``, an empty
    key or a None value sets nothing (Zipkin has no tag without a name, and no null values).
    """
    if key is None or value is None:
        return None
    name = key if type(key) is str else str(key)
    if not name:
        return None
    return name, value if type(value) is str else str(value)


def annotation_value(value: object) -> str | None:
    """An annotation value as the span customizers store it: a non-blank str, else None."""
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    return text if text.strip() else None


def annotations_of(events: Iterable[tuple[float, str]]) -> list[Annotation] | None:
    """Our own ``(epoch seconds, value)`` events as annotations: in time order, each once.

    Events of one microsecond keep the order they were recorded in; an event repeated within
    one microsecond is kept once (the schema wants unique items). Values are non-empty strings
    already (the span customizer checked them).
    """
    # aiozipkin's make_timestamp() conversion, so our timestamps match its spans' exactly.
    return in_time_order([Annotation(int(at * 1000 * 1000), value) for at, value in events])


def in_time_order(annotations: list[Annotation]) -> list[Annotation] | None:
    """``annotations`` in time order, each once; None when there are none.

    The sort is stable: annotations of one microsecond keep the order they were recorded in,
    and one repeated within a microsecond is kept once (the schema wants unique items).
    """
    if not annotations:
        return None
    stamped = sorted(annotations, key=_BY_TIMESTAMP)
    unique = []
    previous = -1
    same_instant: set[str] = set()
    for annotation in stamped:
        timestamp, value = annotation.timestamp, annotation.value
        if timestamp != previous:
            previous = timestamp
            same_instant.clear()
        elif value in same_instant:
            continue
        same_instant.add(value)
        unique.append(annotation)
    return unique
