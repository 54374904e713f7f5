"""The strict collector and schema check that the reporting tests rely on really are strict.

A validator that accepts everything would let every reporting test pass with the feature gone;
these tests show it refuses what aiozipkin's own transport posts, and each rule it adds.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiozipkin.helpers import TraceContext, create_endpoint
from aiozipkin.record import Record

from tests.kit import schema
from tests.kit.collector import Collector, Mode, running_collector
from tests.kit.recorder import SpanRecorder
from tests.kit.schema import SchemaUnavailableError, SpanValidationError, validate_spans

VALID: dict[str, Any] = {"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2"}


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with running_collector() as collector:
        yield collector


#: The example span of the Zipkin v2 API definition (zipkin2-api.yaml, ``Span.example``).
SPEC_EXAMPLE: dict[str, Any] = {
    "id": "352bff9a74ca9ad2",
    "traceId": "5af7183fb1d4cf5f",
    "parentId": "6b221d5bc9e6496c",
    "name": "get /api",
    "timestamp": 1556604172355737,
    "duration": 1431,
    "kind": "SERVER",
    "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
    "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
    "tags": {"http.method": "GET", "http.path": "/api"},
}

#: Bodies the API's keywords accept: each field at its most and least, and what it leaves open.
SCHEMA_ACCEPTS: list[Any] = [
    [SPEC_EXAMPLE],
    [],
    [VALID, {**VALID, "id": "352bff9a74ca9ad3"}],
    [{**VALID, "traceId": "4e441824ec2b6a44ffdc9bb9a6453df3"}],  # 128-bit
    *(
        [
            {
                **SPEC_EXAMPLE,
                "kind": kind,
                "debug": True,
                "shared": True,
                "annotations": [{"timestamp": 1502787600000000, "value": "ws"}],
                "localEndpoint": {"serviceName": "favstar", "ipv6": "2001:db8::c001", "port": 1},
            }
        ]
        for kind in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER")
    ),
    # Left to the prose rules (strict mode), or not refused by the API at all:
    [{**VALID, "traceId": "a" * 20}],  # the patterns are not anchored
    [{**VALID, "name": "GET", "tags": {}, "annotations": [], "debug": False}],
    [{**VALID, "localEndpoint": {}, "remoteEndpoint": {"port": 0}}],
    [{**VALID, "timestamp": -1}],
    [{**VALID, "futureField": {"any": "thing"}}],  # unknown fields are not refused
    [{**VALID, "localEndpoint": {"serviceName": "a", "zone": "eu"}}],
]

#: What the API's keywords refuse, with the reason the schema gives.
SCHEMA_REFUSES: list[tuple[Any, str]] = [
    ({"traceId": "5af7183fb1d4cf5f"}, "'id' is a required property"),
    ({"id": "352bff9a74ca9ad2"}, "'traceId' is a required property"),
    ({**VALID, "traceId": 5}, "5 is not of type 'string'"),
    ({**VALID, "traceId": "5af7183fb1d4cf5"}, "is too short"),
    ({**VALID, "traceId": "a" * 33}, "is too long"),
    ({**VALID, "traceId": "z" * 16}, "does not match"),
    ({**VALID, "traceId": "A" * 16}, "does not match"),
    ({**VALID, "id": "352bff9a74ca9ad"}, "is too short"),
    ({**VALID, "id": "352bff9a74ca9ad22"}, "is too long"),
    ({**VALID, "id": "352bff9a-4ca9ad2"}, "does not match"),
    ({**VALID, "parentId": None}, "None is not of type 'string'"),
    ({**VALID, "parentId": "6b221d5bc9e6496"}, "is too short"),
    ({**VALID, "name": 3}, "3 is not of type 'string'"),
    ({**VALID, "kind": "client"}, "is not one of"),
    ({**VALID, "kind": "LOCAL"}, "is not one of"),
    ({**VALID, "timestamp": "1556604172355737"}, "is not of type 'integer'"),
    ({**VALID, "timestamp": 1.5}, "is not of type 'integer'"),
    ({**VALID, "timestamp": True}, "is not of type 'integer'"),
    ({**VALID, "duration": 0}, "less than the minimum"),
    ({**VALID, "duration": None}, "None is not of type 'integer'"),
    ({**VALID, "debug": "true"}, "is not of type 'boolean'"),
    ({**VALID, "shared": 1}, "is not of type 'boolean'"),
    ({**VALID, "localEndpoint": None}, "None is not of type 'object'"),
    ({**VALID, "remoteEndpoint": "inventory"}, "is not of type 'object'"),
    ({**VALID, "localEndpoint": {"serviceName": 1}}, "1 is not of type 'string'"),
    ({**VALID, "localEndpoint": {"ipv4": "10.0.0"}}, "is not a 'ipv4'"),
    ({**VALID, "localEndpoint": {"ipv4": "::1"}}, "is not a 'ipv4'"),
    ({**VALID, "remoteEndpoint": {"ipv6": "fe80::1%eth0"}}, "is not a 'ipv6'"),
    ({**VALID, "remoteEndpoint": {"ipv6": "10.0.0.1"}}, "is not a 'ipv6'"),
    ({**VALID, "remoteEndpoint": {"port": "80"}}, "is not of type 'integer'"),
    ({**VALID, "annotations": {"ws": 1}}, "is not of type 'array'"),
    ({**VALID, "annotations": ["ws"]}, "is not of type 'object'"),
    ({**VALID, "annotations": [{"value": "ws"}]}, "'timestamp' is a required property"),
    ({**VALID, "annotations": [{"timestamp": 1}]}, "'value' is a required property"),
    ({**VALID, "annotations": [{"timestamp": 1, "value": 2}]}, "2 is not of type 'string'"),
    ({**VALID, "annotations": [{"timestamp": 1, "value": "a"}] * 2}, "non-unique"),
    ({**VALID, "tags": {"retries": 3}}, "3 is not of type 'string'"),
    ({**VALID, "tags": {"peer": None}}, "None is not of type 'string'"),
    ({**VALID, "tags": [["k", "v"]]}, "is not of type 'object'"),
]


def test_the_spec_example_span_is_valid() -> None:
    validate_spans([SPEC_EXAMPLE])


@pytest.mark.parametrize("body", SCHEMA_ACCEPTS)
def test_the_kit_schema_accepts_what_the_api_accepts(body: Any) -> None:
    validate_spans(body, strict=False)


@pytest.mark.parametrize(("span", "reason"), SCHEMA_REFUSES)
def test_the_kit_schema_refuses_what_the_api_refuses(span: Any, reason: str) -> None:
    with pytest.raises(SpanValidationError, match=re.escape(reason)):
        validate_spans([span], strict=False)


@pytest.mark.parametrize(
    ("body", "reason"), [({**VALID}, "is not of type 'array'"), ([[VALID]], "is not of type")]
)
def test_the_body_is_a_list_of_span_objects(body: Any, reason: str) -> None:
    with pytest.raises(SpanValidationError, match=re.escape(reason)):
        validate_spans(body, strict=False)


def test_the_schema_is_part_of_the_repository() -> None:
    repository = Path(__file__).resolve().parents[1]
    assert schema.SCHEMA_PATH.is_relative_to(repository)
    assert schema.SCHEMA_PATH.is_file()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"parentId": None}, "None is not of type 'string'"),
        ({"remoteEndpoint": None}, "None is not of type 'object'"),
        ({"duration": 0}, "less than the minimum"),
        ({"kind": "client"}, "is not one of"),
        ({"localEndpoint": {"ipv4": "10.0.0"}}, "is not a 'ipv4'"),
        ({"localEndpoint": {"ipv6": "fe80::1%eth0"}}, "is not a 'ipv6'"),
        ({"tags": {"retries": 3}}, "3 is not of type 'string'"),
        ({"annotations": [{"value": "ws"}]}, "'timestamp' is a required property"),
        ({"annotations": [{"timestamp": 1, "value": "a"}] * 2}, "non-unique"),
        ({"traceId": "0" * 16}, "all zeros"),
        ({"traceId": "a" * 20}, "traceId"),
        ({"id": "A" * 16}, "id"),
        ({"name": "GET"}, "lowercase"),
        ({"name": "unknown"}, "placeholder"),
        ({"annotations": []}, "empty list"),
        ({"annotations": [{"timestamp": 1, "value": ""}]}, "value: empty"),
        ({"tags": {}}, "empty map"),
        ({"debug": False}, "debug: false"),
        ({"shared": False}, "shared: false"),
        ({"localEndpoint": {}}, "empty endpoint"),
        ({"localEndpoint": {"serviceName": "Backend"}}, "lowercase label"),
        ({"remoteEndpoint": {"port": 0}}, "port: 0"),
    ],
)
def test_validate_spans_refuses(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpanValidationError, match=reason):
        validate_spans([{**VALID, **change}])


def test_non_strict_mode_checks_the_schema_only() -> None:
    validate_spans([{**VALID, "name": "GET", "tags": {}}], strict=False)
    with pytest.raises(SpanValidationError):
        validate_spans([{**VALID, "parentId": None}], strict=False)


@pytest.fixture
def schema_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Points the kit at a schema file in ``tmp_path`` (missing until a test writes it)."""
    path = tmp_path / "zipkin2-spans.schema.json"
    monkeypatch.setattr(schema, "SCHEMA_PATH", path)
    return path


def test_missing_schema_fails_at_once_naming_the_file(schema_path: Path) -> None:
    message = f"schema is missing: {schema_path}"
    with pytest.raises(SchemaUnavailableError, match=re.escape(message)):
        validate_spans([VALID])
    # The collector checks at construction, before any transport could retry against it.
    with pytest.raises(SchemaUnavailableError, match=re.escape(message)):
        Collector()


@pytest.mark.parametrize(
    ("content", "reason"),
    [("{not json", "cannot read the Zipkin v2 schema"), ('{"type": 3}', "not a valid draft 4")],
)
def test_broken_schema_fails_at_once_naming_the_file(
    schema_path: Path, content: str, reason: str
) -> None:
    schema_path.write_text(content, encoding="utf-8")
    with pytest.raises(SchemaUnavailableError, match=re.escape(reason)) as raised:
        Collector()
    assert str(schema_path) in str(raised.value)


async def test_collector_refuses_what_aiozipkin_itself_posts(collector: Collector) -> None:
    context = TraceContext("a" * 32, None, "b" * 16, sampled=True, debug=False, shared=False)
    record = Record(context, create_endpoint("checkout")).start(1)  # a root, never finished

    async with (
        aiohttp.ClientSession() as session,
        session.post(collector.url, json=[record.asdict()]) as answer,
    ):
        assert answer.status == 400

    (problem,) = collector.invalid
    assert "parentId: None is not of type 'string'" in problem
    assert "duration: None" in problem
    assert collector.spans == []
    collector.invalid.clear()  # seen: do not fail the fixture


async def test_collector_gunzips_and_records_headers(collector: Collector) -> None:
    body = gzip.compress(json.dumps([VALID]).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "b3": "0"}

    async with (
        aiohttp.ClientSession() as session,
        session.post(collector.url, data=body, headers=headers) as answer,
    ):
        assert answer.status == 202

    (post,) = collector.posts
    assert post.body == body
    assert post.headers["b3"] == "0"
    assert collector.spans == [VALID]


async def test_collector_can_go_down_and_come_back_on_the_same_port(collector: Collector) -> None:
    url = collector.url
    async with aiohttp.ClientSession() as session:
        await collector.set_mode(Mode.DOWN)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.post(url, json=[VALID])
        await collector.set_mode(Mode.OK)
        async with session.post(url, json=[VALID]) as answer:
            assert answer.status == 202

    assert collector.url == url
    assert collector.spans == [VALID]


@pytest.mark.parametrize(
    ("mode", "status"),
    [
        (Mode.SERVER_ERROR, 500),
        (Mode.UNAVAILABLE, 503),
        (Mode.TOO_MANY_REQUESTS, 429),
        (Mode.BAD_REQUEST, 400),
    ],
)
async def test_collector_error_modes_answer_without_recording(
    collector: Collector, mode: Mode, status: int
) -> None:
    collector.retry_after = "3"
    await collector.set_mode(mode)

    async with (
        aiohttp.ClientSession() as session,
        session.post(collector.url, json=[VALID]) as answer,
    ):
        assert answer.status == status
        assert answer.headers.get("Retry-After") == ("3" if status in (429, 503) else None)

    assert collector.spans == []
    assert [post.status for post in collector.posts] == [status]


async def test_collector_reset_mode_answers_nothing(collector: Collector) -> None:
    await collector.set_mode(Mode.RESET)

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(collector.url, json=[VALID])

    assert collector.spans == []
    assert [post.status for post in collector.posts] == [None]


async def test_recorder_wait_names_what_arrived_and_what_it_was_told() -> None:
    """A span that never comes fails as an assertion listing what did arrive, not as a bare
    TimeoutError."""
    recorder = SpanRecorder()
    context = TraceContext("1" * 32, None, "2" * 16, True, False, False)
    recorder.send(Record(context, create_endpoint("app")).name("only").start(1).finish(2))
    with pytest.raises(AssertionError) as failure:
        await recorder.wait_for(2, timeout=0.01, about={"status": 200})
    message = str(failure.value)
    assert message.startswith("waited 0.01 s for 2 span(s), 1 arrived: [{")
    assert "'name': 'only'" in message
    assert message.endswith("; about it: {'status': 200}")
    assert recorder.take_one()["name"] == "only"
