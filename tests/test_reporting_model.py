"""The span model: one set of encoding rules, from a foreign record or our own values to JSON.

Records are built the ways aiozipkin lets callers build them (through Span and Record methods,
and by writing their fields), including the odd values encode_span normalises. Each must be
refused, or posted as exactly the fields encode_span gives, in a batch a strict collector takes.
"""

from __future__ import annotations

import enum
import json
import random
import re
from typing import Any

import pytest
from aiozipkin.helpers import CLIENT, TraceContext, create_endpoint
from aiozipkin.record import Annotation, Record

from aiozipkin_client.reporting import encode_span
from aiozipkin_client.reporting._model import (
    Annotation as SpanAnnotation,
)
from aiozipkin_client.reporting._model import (
    Span,
    annotations_of,
    encode_batch,
    span_from_record,
)
from tests.kit.assertions import scrubbed
from tests.kit.schema import validate_spans

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


def test_random_records_are_refused_or_posted_as_encode_span_says() -> None:
    """One set of rules: what a batch carries is exactly encode_span's dict, schema-valid."""
    rng = random.Random(6)
    spans: list[Span] = []
    expected: list[dict[str, Any]] = []
    refused = 0
    for _ in range(5_000):
        record = random_record(rng)
        try:
            dict_form = encode_span(record)
        except Exception as exc:
            # Bad ids, or an asdict() that fails on what a caller stored: the same refusal.
            with pytest.raises(type(exc), match=re.escape(str(exc))):
                span_from_record(record)
            refused += 1
            continue
        spans.append(span_from_record(record))
        expected.append(scrubbed(dict_form))
    posted = json.loads(encode_batch(spans))
    assert posted == expected
    validate_spans(posted)
    assert 0 < refused < 5_000 // 2


def test_a_lone_surrogate_spoils_only_its_own_span() -> None:
    good = Span(TRACE, SPAN, name="get", tags={"k": "v"})
    bad = Span(TRACE, PARENT, name="x\ud800y", tags={"k\udfff": "\ud800"})
    posted = json.loads(encode_batch([good, bad, good]))
    assert (
        posted[0] == posted[2] == {"traceId": TRACE, "id": SPAN, "name": "get", "tags": {"k": "v"}}
    )
    assert posted[1]["name"] == "x?y"
    assert posted[1]["tags"] == {"k?": "?"}


def test_annotations_are_in_time_order_and_unique() -> None:
    base = 1_700_000_000.0
    events = [(base + 0.2, "wr"), (base + 0.1, "ws"), (base + 0.1, "b"), (base + 0.1, "ws")]
    annotations = annotations_of(events)
    assert annotations == [
        SpanAnnotation(1_700_000_000_100_000, "ws"),
        SpanAnnotation(1_700_000_000_100_000, "b"),
        SpanAnnotation(1_700_000_000_200_000, "wr"),
    ]
    assert annotations_of([]) is None


def test_empty_values_are_omitted_not_null() -> None:
    posted = json.loads(encode_batch([Span(TRACE, SPAN)]))
    assert posted == [{"traceId": TRACE, "id": SPAN}]
