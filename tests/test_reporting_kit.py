"""The strict collector and schema check that the reporting tests rely on really are strict.

A validator that accepts everything would let every reporting test pass with the feature gone;
these tests show it refuses what aiozipkin's own transport posts, and each rule it adds.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiozipkin.helpers import TraceContext, create_endpoint
from aiozipkin.record import Record

from tests.kit import schema
from tests.kit.collector import Collector, Mode, running_collector
from tests.kit.schema import SpanValidationError, validate_spans

VALID: dict[str, Any] = {"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2"}


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with running_collector() as collector:
        yield collector


def test_the_spec_example_span_is_valid() -> None:
    validate_spans(
        [
            {
                **VALID,
                "parentId": "6b221d5bc9e6496c",
                "name": "get /api",
                "timestamp": 1556604172355737,
                "duration": 1431,
                "kind": "SERVER",
                "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
                "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
                "tags": {"http.method": "GET", "http.path": "/api"},
            }
        ]
    )


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
def missing_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    missing = tmp_path / "shared" / "specs" / "zipkin2-api.yaml"
    monkeypatch.setattr(schema, "SCHEMA_PATH", missing)
    schema._validator.cache_clear()
    yield missing
    schema._validator.cache_clear()


def test_missing_spec_file_names_the_expected_path(missing_schema: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(missing_schema)):
        validate_spans([VALID])


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
