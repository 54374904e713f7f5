"""encode_span: aiozipkin records become spans a strict Zipkin v2 collector accepts.

Records come from a real aiozipkin Tracer wherever aiozipkin can produce the case; a Record
whose ``asdict()`` is overridden stands for what aiozipkin lets callers put in (bad ids from
headers, durations from caller timestamps, odd types) and cannot be built through a Span.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiozipkin.helpers import CLIENT, PRODUCER, TraceContext, create_endpoint
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import StubTransport

from aiozipkin_client.reporting import InvalidSpanError, encode_span
from tests.kit.schema import validate_spans

TRACE_ID = "4e441824ec2b6a44ffdc9bb9a6453df3"
SPAN_ID = "ffdc9bb9a6453df3"
PARENT_ID = "6b221d5bc9e6496c"
START = 1_502_787_600.0  # seconds, as aiozipkin's Span.start() takes them
START_US = 1_502_787_600_000_000


@pytest.fixture
def stub() -> StubTransport:
    return StubTransport(queue_length=100)


@pytest.fixture
def tracer(stub: StubTransport) -> Tracer:
    endpoint = create_endpoint("Checkout", ipv4="10.0.0.7", port=8080)
    return Tracer(stub, Sampler(sample_rate=1.0), endpoint)


class _Overridden(Record):
    """A real Record whose asdict() output is patched with ``changes``."""

    def __init__(self, changes: dict[str, Any]) -> None:
        context = TraceContext(TRACE_ID, None, SPAN_ID, sampled=True, debug=False, shared=False)
        super().__init__(context, create_endpoint("checkout"))
        self.start(START_US)
        self._changes = changes

    def asdict(self) -> dict[str, Any]:
        return {**super().asdict(), **self._changes}


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path or "<span>"]
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in _nulls(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [n for i, item in enumerate(value) for n in _nulls(item, f"{path}/{i}")]
    return []


def encode_valid(record: Record) -> dict[str, Any]:
    """encode_span(record), checked against the schema and for nulls at any depth."""
    span = encode_span(record)
    validate_spans([span])
    assert _nulls(span) == []
    return span


def test_root_span_omits_parent_name_and_every_empty_field(
    tracer: Tracer, stub: StubTransport
) -> None:
    span = tracer.new_trace(sampled=True)
    span.start(ts=START)
    span.finish(ts=START + 0.25)
    (record,) = stub.records

    assert record.asdict()["parentId"] is None  # what aiozipkin would post as null
    assert encode_valid(record) == {
        "traceId": span.context.trace_id,
        "id": span.context.span_id,
        "timestamp": START_US,
        "duration": 250_000,
        "localEndpoint": {"serviceName": "checkout", "ipv4": "10.0.0.7", "port": 8080},
    }


def test_child_span_has_parent_kind_and_lowercase_name(tracer: Tracer, stub: StubTransport) -> None:
    parent = tracer.new_trace(sampled=True)
    child = parent.new_child("GET /Items", CLIENT)
    child.start(ts=START)
    child.finish(ts=START + 0.001)
    (record,) = stub.records

    span = encode_valid(record)
    assert span["parentId"] == parent.context.span_id
    assert span["id"] == child.context.span_id
    assert span["traceId"] == parent.context.trace_id
    assert span["kind"] == "CLIENT"
    assert span["name"] == "get /items"
    assert span["duration"] == 1000


def test_remote_endpoint_is_cleaned(tracer: Tracer, stub: StubTransport) -> None:
    with tracer.new_trace(sampled=True) as span:
        span.remote_endpoint("Inventory", ipv4="127.0.0.1", ipv6="2001:DB8::C001", port=0)
    with tracer.new_trace(sampled=True) as span:
        span.remote_endpoint("db", ipv6="::ffff:10.1.2.3", port=5432)
    with tracer.new_trace(sampled=True) as span:
        span.remote_endpoint("cache", ipv4="300.1.1.1", ipv6="fe80::1%eth0")
    with tracer.new_trace(sampled=True) as span:
        span.remote_endpoint(None)
    first, mapped, odd, empty = (encode_valid(record) for record in stub.records)

    # Port 0 means unknown, which the spec writes as absent.
    assert first["remoteEndpoint"] == {
        "serviceName": "inventory",
        "ipv4": "127.0.0.1",
        "ipv6": "2001:db8::c001",
    }
    # "Prefer using the ipv4 field for mapped addresses."
    assert mapped["remoteEndpoint"] == {"serviceName": "db", "ipv4": "10.1.2.3", "port": 5432}
    # Not an IPv4 address: omitted rather than failing the schema's format check.
    assert odd["remoteEndpoint"] == {"serviceName": "cache", "ipv6": "fe80::1"}
    assert "remoteEndpoint" not in empty


def test_debug_is_sent_only_when_true(tracer: Tracer, stub: StubTransport) -> None:
    with tracer.new_trace(sampled=True, debug=True):
        pass
    with tracer.new_trace(sampled=True):
        pass
    debug, plain = (encode_valid(record) for record in stub.records)

    assert debug["debug"] is True
    assert "debug" not in plain


def test_shared_is_sent_only_when_true(tracer: Tracer, stub: StubTransport) -> None:
    incoming = TraceContext(TRACE_ID, PARENT_ID, SPAN_ID, sampled=True, debug=False, shared=False)
    with tracer.join_span(incoming):
        pass
    with tracer.new_child(incoming):
        pass
    joined, child = (encode_valid(record) for record in stub.records)

    assert joined["shared"] is True
    assert joined["id"] == SPAN_ID
    assert joined["parentId"] == PARENT_ID
    assert "shared" not in child


def test_unicode_tags_are_kept_and_empty_tags_omitted(tracer: Tracer, stub: StubTransport) -> None:
    with tracer.new_trace(sampled=True) as span:
        span.tag("http.path", "/café/☕/ü")
        span.tag("peer.service", "東京")
    with tracer.new_trace(sampled=True):
        pass
    tagged, untagged = (encode_valid(record) for record in stub.records)

    assert tagged["tags"] == {"http.path": "/café/☕/ü", "peer.service": "東京"}
    assert "tags" not in untagged


def test_annotations_need_a_value_and_are_kept_once(tracer: Tracer, stub: StubTransport) -> None:
    with tracer.new_trace(sampled=True) as span:
        span.annotate("ws", ts=START)
        span.annotate("", ts=START + 1)
        span.annotate("ws", ts=START)
        span.annotate("wr", ts=START + 2)
    with tracer.new_trace(sampled=True) as span:
        span.annotate("", ts=START)
    annotated, only_empty = (encode_valid(record) for record in stub.records)

    assert annotated["annotations"] == [
        {"timestamp": START_US, "value": "ws"},
        {"timestamp": START_US + 2_000_000, "value": "wr"},
    ]
    assert "annotations" not in only_empty


def test_unfinished_and_unstarted_records_omit_duration_and_timestamp() -> None:
    context = TraceContext(TRACE_ID, None, SPAN_ID, sampled=True, debug=False, shared=False)
    started = Record(context, create_endpoint("checkout")).start(START_US)
    unstarted = Record(context, create_endpoint("checkout"))
    producer = Record(context, create_endpoint("checkout")).kind(PRODUCER).start(START_US)
    producer.finish(START_US + 5)  # aiozipkin leaves messaging durations unset

    assert "duration" not in encode_valid(started)
    assert encode_valid(started)["timestamp"] == START_US
    assert encode_valid(unstarted) == {
        "traceId": TRACE_ID,
        "id": SPAN_ID,
        "localEndpoint": {"serviceName": "checkout"},
    }
    assert encode_valid(producer)["kind"] == "PRODUCER"
    assert "duration" not in encode_valid(producer)


@pytest.mark.parametrize(("given", "expected"), [(0, 1), (-40, 1), (1, 1), (7.9, 7)])
def test_duration_is_at_least_one_microsecond(given: float, expected: int) -> None:
    assert encode_valid(_Overridden({"duration": given}))["duration"] == expected


@pytest.mark.parametrize("name", ["unknown", "UNKNOWN", "", "   "])
def test_placeholder_and_empty_names_are_omitted(name: str) -> None:
    assert "name" not in encode_valid(_Overridden({"name": name}))


@pytest.mark.parametrize(("given", "expected"), [("client", "CLIENT"), ("SERVER", "SERVER")])
def test_kind_is_an_upper_case_zipkin_kind(given: str, expected: str) -> None:
    assert encode_valid(_Overridden({"kind": given}))["kind"] == expected


@pytest.mark.parametrize("kind", ["RPC", "", None, 3])
def test_unknown_kind_is_omitted(kind: object) -> None:
    assert "kind" not in encode_valid(_Overridden({"kind": kind}))


def test_odd_values_are_coerced_or_omitted() -> None:
    span = encode_valid(
        _Overridden(
            {
                "timestamp": True,
                "debug": "yes",
                "shared": 1,
                "tags": {"retries": 3, "": "x", "gone": None},
                "annotations": [{"value": "ok", "timestamp": 0}, "junk", {"value": None}],
                "localEndpoint": {"serviceName": "", "port": 70000},
            }
        )
    )
    assert span == {"traceId": TRACE_ID, "id": SPAN_ID, "tags": {"retries": "3"}}


def test_upper_case_ids_are_lowercased() -> None:
    span = encode_valid(
        _Overridden(
            {"traceId": TRACE_ID.upper(), "id": SPAN_ID.upper(), "parentId": PARENT_ID.upper()}
        )
    )
    assert (span["traceId"], span["id"], span["parentId"]) == (TRACE_ID, SPAN_ID, PARENT_ID)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("traceId", "0" * 16),
        ("traceId", "0" * 32),
        ("traceId", "a" * 15),
        ("traceId", "a" * 20),
        ("traceId", "a" * 33),
        ("traceId", "g" * 16),
        ("traceId", None),
        ("id", "0" * 16),
        ("id", "a" * 32),
        ("id", "0x" + "a" * 14),
        ("id", 12345),
        ("parentId", "0" * 16),
        ("parentId", "a" * 17),
        ("parentId", ""),
    ],
)
def test_invalid_ids_are_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidSpanError, match=field):
        encode_span(_Overridden({field: value}))


def test_encoding_is_a_snapshot_of_the_record(tracer: Tracer, stub: StubTransport) -> None:
    with tracer.new_trace(sampled=True) as span:
        span.tag("phase", "one")
    (record,) = stub.records
    encoded = encode_span(record)
    record.set_tag("phase", "two")

    assert encoded["tags"] == {"phase": "one"}
