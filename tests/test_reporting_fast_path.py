"""The transport's direct encoder writes exactly the bytes encode_span's path writes.

Proposed as tests/test_reporting_fast_path.py. Records are built the ways aiozipkin lets callers
build them (through Span and Record methods, and by writing their fields), including the odd
values encode_span normalises, and every one must encode to the same bytes, or be refused with
the same error, on both paths.
"""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from aiozipkin.helpers import CLIENT, Endpoint, TraceContext, create_endpoint
from aiozipkin.record import Annotation, Record

from aiozipkin_client.reporting import InvalidSpanError, _SpanEncoder, _to_json, encode_span

TRACE = "4e441824ec2b6a44ffdc9bb9a6453df3"
SPAN = "ffdc9bb9a6453df3"
PARENT = "6b221d5bc9e6496c"


class Port(enum.IntEnum):
    HTTP = 8080


IDS: list[Any] = [TRACE, TRACE[16:], TRACE.upper(), "0" * 32, "xyz", "", None, 42]
SPAN_IDS: list[Any] = [SPAN, SPAN.upper(), "0" * 16, SPAN[:8], None, 7]
NAMES: list[Any] = ["GET", "get", "unknown", "", "  ", "Ünïcode ✓", 'quo"te\\\n', "\ud800", None, 3]
KINDS: list[Any] = [CLIENT, "server", "weird", None, 1]
TIMES: list[Any] = [1_502_787_600_000_000, 0, -5, 1.5e15, float("nan"), True, None, "1"]
ENDPOINTS: list[Any] = [
    {"serviceName": "Checkout", "ipv4": "10.0.0.7", "port": 8080},
    {"serviceName": "", "ipv4": "999.1.1.1", "ipv6": "::ffff:10.0.0.1", "port": 0},
    {"ipv6": "fe80::1%eth0", "port": True},
    {"ipv6": "2001:db8::1", "port": 80.0},
    {"serviceName": "x", "port": Port.HTTP},
    {"serviceName": 5, "ipv4": None},
    {},
    None,
    "not a dict",
]
ANNOTATIONS: list[Any] = [
    [],
    [Annotation("ws", 1_502_787_600_000_001), Annotation("wr", 1_502_787_600_000_002)],
    [Annotation("ws", 1), Annotation("ws", 1), Annotation("", 2), Annotation(" ", 3)],
    [Annotation("late", 0), Annotation("neg", -1), Annotation("f", 2.5)],  # type: ignore[arg-type]
    [{"value": "dict", "timestamp": 1}],
    [Annotation(None, 1), Annotation(5, 2)],  # type: ignore[arg-type]
]
TAGS: list[Any] = [
    {},
    {"http.path": "/items/42", "error": "500", "": "empty key"},
    {"n": 5, "none": None},
    {1: "int key"},
    {"u": "\u2028 and \x00 and 😀"},
]


def both(record: Record) -> tuple[object, object]:
    def run(encode: Any) -> object:
        try:
            return encode(record)
        except InvalidSpanError as exc:
            return ("invalid", str(exc))
        except Exception as exc:
            return ("failed", type(exc))

    return run(_SpanEncoder()), run(lambda r: _to_json(encode_span(r)))


def pick(rng: random.Random, usual: list[Any], odd: list[Any]) -> Any:
    """Mostly what aiozipkin's own methods store, sometimes anything a caller can put there."""
    return rng.choice(usual if rng.random() < 0.85 else odd)


def random_record(rng: random.Random) -> Record:
    context = TraceContext(
        pick(rng, [TRACE, TRACE[16:]], IDS),
        pick(rng, [None, PARENT], SPAN_IDS),
        pick(rng, [SPAN], SPAN_IDS),
        True,
        pick(rng, [False, True], [None, 1]),
        pick(rng, [False, True], [1]),
    )
    record = Record(context, create_endpoint("svc", ipv4="127.0.0.1"))
    record._name = pick(rng, NAMES[:7], NAMES)
    record._kind = pick(rng, [CLIENT, None], KINDS)
    record._timestamp = pick(rng, [*TIMES[:3], None], TIMES)
    record._duration = pick(rng, [*TIMES[:3], None], TIMES)
    record._local_endpoint = pick(rng, ENDPOINTS[:3], ENDPOINTS)
    record._remote_endpoint = pick(rng, [*ENDPOINTS[:3], None], ENDPOINTS)
    record._annotations = list(pick(rng, ANNOTATIONS[:3], ANNOTATIONS))
    record._tags = dict(pick(rng, [*TAGS[:2], *TAGS[4:]], TAGS))
    return record


def test_random_records_encode_the_same_on_both_paths() -> None:
    rng = random.Random(6)
    for _ in range(20_000):
        record = random_record(rng)
        fast, slow = both(record)
        assert fast == slow, vars(record)


def test_a_typical_client_span_takes_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    context = TraceContext(TRACE, PARENT, SPAN, True, False, False)
    record = Record(context, create_endpoint("checkout", ipv4="10.0.0.7"))
    record.start(1_502_787_600_000_000).kind(CLIENT).name("get")
    record.set_tag("http.url", "http://h/a?b=c")
    record.annotate("ws", 1_502_787_600_000_100)
    record.remote_endpoint(Endpoint(None, "127.0.0.1", None, 8080))
    record.finish(1_502_787_600_000_900)
    expected = _to_json(encode_span(record))

    def refuse(record: Record) -> dict[str, Any]:
        raise AssertionError("took encode_span's path")

    monkeypatch.setattr("aiozipkin_client.reporting.encode_span", refuse)
    assert _SpanEncoder()(record) == expected


def test_endpoint_cache_keeps_true_and_one_apart() -> None:
    encoder = _SpanEncoder()
    context = TraceContext(TRACE, None, SPAN, True, False, False)
    ports: list[Any] = [1, True, 1.0, Port.HTTP, 8080]
    for port in ports:
        record = Record(context, create_endpoint("a", port=port))
        assert encoder(record) == _to_json(encode_span(record))


def test_endpoint_cache_is_bounded() -> None:
    encoder = _SpanEncoder()
    context = TraceContext(TRACE, None, SPAN, True, False, False)
    for port in range(1, 2000):
        encoder(Record(context, create_endpoint("a", port=port)))
    assert len(encoder._endpoints) <= 256
