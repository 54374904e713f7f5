"""The value rules of the span model, each with its exact expected result.

The randomised tests of ``test_reporting_model`` show that a batch carries exactly what
``encode_span`` says; these pin what that is, rule by rule, from the README's promises and the
Zipkin v2 API (ids, ports, timestamps, annotations, tags, and the refusal messages a log shows).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiozipkin.helpers import TraceContext, create_endpoint
from aiozipkin.record import Annotation as RecordAnnotation
from aiozipkin.record import Record
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aiozipkin_client import HttpRequestParser, RequestView, _spans, encode_span
from aiozipkin_client._state import Hop
from aiozipkin_client.reporting import InvalidSpanError
from aiozipkin_client.reporting._model import (
    Annotation,
    Span,
    annotation_value,
    annotations_of,
    encode_batch,
    endpoint,
    span_from_record,
    tag_value,
)

TRACE = "4e441824ec2b6a44ffdc9bb9a6453df3"
SPAN = "ffdc9bb9a6453df3"
PARENT = "6b221d5bc9e6496c"


def record(trace_id: Any = TRACE, span_id: Any = SPAN, parent_id: Any = None) -> Record:
    context = TraceContext(trace_id, parent_id, span_id, True, False, False)
    return Record(context, create_endpoint("svc"))


# -- identifiers: refused with a message that says which field and why ----------------------


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ({"trace_id": "abc"}, "traceId 'abc' is not 16 or 32 hex characters with one non-zero"),
        ({"span_id": "abc"}, "id 'abc' is not 16 hex characters with one non-zero"),
        (
            {"parent_id": "0" * 16},
            f"parentId '{'0' * 16}' is not 16 hex characters with one non-zero",
        ),
        ({"trace_id": 42}, "traceId is 42, not a hex string"),
        ({"span_id": None}, "id is None, not a hex string"),
    ],
)
def test_bad_identifiers_are_refused_with_the_field_and_the_rule(
    ids: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidSpanError) as refused:
        encode_span(record(**ids))
    assert str(refused.value) == message


def test_long_identifiers_are_cut_in_the_message_but_short_ones_are_whole() -> None:
    # repr() of a 58-character str is 60 characters: shown whole.
    whole = "g" * 58
    with pytest.raises(InvalidSpanError) as refused:
        encode_span(record(trace_id=whole))
    assert f"'{whole}'" in str(refused.value)
    # One more character: cut to 57 and "...".
    longer = "g" * 59
    with pytest.raises(InvalidSpanError) as refused:
        encode_span(record(trace_id=longer))
    assert f"traceId {repr(longer)[:57]}... is not" in str(refused.value)


# -- timestamps and endpoints ------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1, 1),  # the smallest valid epoch microsecond
        (0, None),
        (-5, None),
        (1.5e15, 1_500_000_000_000_000),  # a float timestamp is kept, as an int
        (float("nan"), None),
        (float("inf"), None),
        (True, None),
    ],
)
def test_timestamps(timestamp: Any, expected: int | None) -> None:
    span = record()
    span._timestamp = timestamp
    assert encode_span(span).get("timestamp") == expected


@pytest.mark.parametrize(
    ("port", "kept"),
    [(1, True), (65535, True), (0, False), (65536, False), (True, False), (80.0, False)],
)
def test_endpoint_ports(port: Any, kept: bool) -> None:
    checked = endpoint("svc", None, None, port)
    assert checked is not None
    assert (checked.port == port) is kept
    assert (checked.port is None) is not kept


def test_endpoint_names_and_addresses() -> None:
    assert endpoint("Checkout", None, None, None) == endpoint("checkout", None, None, None)
    assert endpoint("", None, None, None) is None
    assert endpoint(None, None, "::ffff:10.0.0.1", None) == endpoint(None, "10.0.0.1", None, None)
    checked = endpoint(None, None, "fe80::1%eth0", None)
    assert checked is not None
    assert checked.ipv6 == "fe80::1"


# -- annotations and tags --------------------------------------------------------------------


def test_annotations_keep_order_within_an_instant_and_drop_repeats_only_there() -> None:
    events = [
        (1.000002, "b"),
        (0.000001, "first"),  # one microsecond after the epoch: still an instant of its own
        (1.000002, "a"),
        (1.000002, "b"),  # a repeat in the same microsecond: dropped
        (2.0, "b"),  # the same value later: kept
    ]
    assert annotations_of(events) == [
        Annotation(1, "first"),
        Annotation(1_000_002, "b"),
        Annotation(1_000_002, "a"),
        Annotation(2_000_000, "b"),
    ]


@pytest.mark.parametrize("dropped", ["", "  ", None])
def test_record_annotations_after_a_dropped_one_are_kept(dropped: Any) -> None:
    span = record()
    # Record.annotate() would store None as "None": a None value comes from a caller writing
    # the record's list directly, which Record allows.
    span._annotations.append(RecordAnnotation(dropped, 5))
    span.annotate("wr", 6)
    span.annotate("wr", 6)  # a repeat: kept once
    assert encode_span(span)["annotations"] == [{"timestamp": 6, "value": "wr"}]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("k", "v", ("k", "v")),
        ("k", 5, ("k", "5")),
        (7, "v", ("7", "v")),
        ("k", "", ("k", "")),  # an empty value is a value
        ("", "v", None),  # a tag needs a name
        (None, "v", None),
        ("k", None, None),  # JSON has no null tag values
    ],
)
def test_tag_values(key: Any, value: Any, expected: tuple[str, str] | None) -> None:
    assert tag_value(key, value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("wr", "wr"), (7, "7"), ("", None), ("  ", None), (None, None)],
)
def test_annotation_values(value: Any, expected: str | None) -> None:
    assert annotation_value(value) == expected


def test_the_span_customizer_applies_the_rules_parsers_rely_on() -> None:
    context = TraceContext(TRACE, None, SPAN, True, False, False)
    hop = Hop(context, "GET", URL("http://h/x"), CIMultiDict(), 1.0)
    hop.name("GET Orders")
    hop.tag("n", 5)  # type: ignore[arg-type]
    hop.tag("gone", None)  # type: ignore[arg-type]
    hop.annotate("", 2.0)
    hop.annotate("cache miss", 3.0)
    assert hop.span_name == "get orders"
    assert hop.tags == {"n": "5"}
    assert hop.annotations == [Annotation(3_000_000, "cache miss")]


# -- the default request parser, through any customizer ------------------------------------


class Recording:
    """A SpanCustomizer that keeps exactly what it was given, unchecked."""

    def __init__(self) -> None:
        self.names: list[Any] = []
        self.tags: list[tuple[Any, Any]] = []

    def name(self, name: str) -> None:
        self.names.append(name)

    def tag(self, key: str, value: str) -> None:
        self.tags.append((key, value))

    def annotate(self, value: str) -> None:
        raise AssertionError("the request parser adds no annotation")


def test_the_default_request_parser_names_and_tags_as_documented() -> None:
    view = RequestView(
        "Post", URL("http://u:p@h/items/7?token=t&page=2#f"), CIMultiDictProxy(CIMultiDict())
    )
    span = Recording()

    HttpRequestParser()(view, span)

    assert span.names == ["post"]
    assert span.tags == [
        ("http.method", "POST"),
        ("http.path", "/items/7"),
        ("http.url", "http://h/items/7?token=REDACTED&page=2"),
    ]


# -- the batch --------------------------------------------------------------------------------


def test_a_batch_omits_what_is_absent_and_writes_flags_only_when_true() -> None:
    posted = json.loads(
        encode_batch(
            [
                Span(TRACE, SPAN, debug=True, shared=True),
                Span(TRACE, PARENT, parentId=SPAN, tags={"k": "v"}),
            ]
        )
    )
    assert posted == [
        {"traceId": TRACE, "id": SPAN, "debug": True, "shared": True},
        {"traceId": TRACE, "id": PARENT, "parentId": SPAN, "tags": {"k": "v"}},
    ]
    assert not re.search(r"null|false", json.dumps(posted))


def test_span_from_record_is_the_same_span_encode_span_describes() -> None:
    source = record(parent_id=PARENT)
    source.start(1_700_000_000_000_000).name("GET").finish(1_700_000_000_000_100)
    assert json.loads(encode_batch([span_from_record(source)])) == [encode_span(source)]
    assert encode_span(source)["name"] == "get"
    assert encode_span(source)["duration"] == 100


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("CLIENT", "CLIENT"),
        ("server", "SERVER"),
        ("Producer", "PRODUCER"),
        ("consumer", "CONSUMER"),
        ("INTERNAL", None),  # not a Zipkin v2 kind: omitted, never sent
        (1, None),
    ],
)
def test_every_zipkin_kind_and_only_those(kind: Any, expected: str | None) -> None:
    span = record()
    span._kind = kind
    assert encode_span(span).get("kind") == expected


@pytest.mark.parametrize("bits", [1, 0xFFDC9BB9A6453DF3, 2**64 - 1])
def test_new_span_ids_are_sixteen_lower_hex_digits_leading_zeros_kept(
    monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    # The ids of redirect hops and phase spans; the first hop's is tested through a session.
    monkeypatch.setattr(_spans, "getrandbits", lambda k: bits)

    assert _spans.span_id() == f"{bits:016x}"
