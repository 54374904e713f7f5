"""The client conformance suite: every test runs under each parent mode of the harness.

In the spirit of Brave's ITHttpClient: real requests through ``ClientSession`` to a real server on
127.0.0.1; propagation is asserted from the headers that actually arrived; the strict recorder
fails the test on a span left unchecked, reported twice, or left unfinished in the tracer.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import aiohttp
import pytest
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from aiozipkin_client import RequestView, ResponseView, SpanCustomizer
from tests.kit.assertions import assert_client_span, assert_propagated
from tests.kit.harness import Harness
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, refused_url


async def test_propagates_ids_of_the_span_it_reports(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    outcome = await harness.request("GET", backend.url / "ok")

    assert outcome.status == 200
    assert outcome.body == b"ok"
    span = recorder.take_one()
    assert_client_span(span, harness.parent)
    assert_propagated(backend.take_one(), span)


async def test_span_name_tags_and_remote_endpoint(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    await harness.request("GET", backend.url.with_path("/ok").with_query(page="2"))

    span = recorder.take_one()
    assert span["name"] == "get"
    tags = span["tags"]
    assert re.fullmatch(r"\d+\.\d{3}", tags.pop("connection.connect_ms"))
    assert tags == {
        "http.method": "GET",
        "http.path": "/ok",
        "http.url": f"{backend.url}/ok?page=2",
        "http.status_code": "200",
        "http.response.size": "2",
        "connection.reused": "false",
    }
    assert span["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": backend.url.port}
    assert span["duration"] >= 1
    backend.take_one()


async def test_post_is_named_after_its_method(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    outcome = await harness.request("POST", backend.url / "echo", data=b"payload")

    assert outcome.body == b"payload"
    span = recorder.take_one()
    assert span["name"] == "post"
    assert span["tags"]["http.method"] == "POST"
    assert_propagated(backend.take_one(), span)


async def test_url_tag_drops_credentials_and_masks_secrets(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    url = backend.url.with_user("alice").with_password("s3cret").with_path("/ok")
    url = url.with_query([("access_token", "abc"), ("X-Amz-Signature", "f00"), ("q", "shoes")])

    await harness.request("GET", url)

    span = recorder.take_one()
    assert span["tags"]["http.url"] == (
        f"{backend.url}/ok?access_token=REDACTED&X-Amz-Signature=REDACTED&q=shoes"
    )
    assert span["tags"]["http.path"] == "/ok"
    assert "s3cret" not in str(span)
    assert "alice" not in str(span)
    received = backend.take_one()
    # The server itself still got the real request.
    assert received.query == "access_token=abc&X-Amz-Signature=f00&q=shoes"
    assert received.headers["Authorization"].startswith("Basic ")


async def test_each_redirect_hop_is_its_own_span_with_its_own_headers(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    outcome = await harness.request("GET", backend.url / "redirect" / "2")

    assert outcome.status == 200
    spans = recorder.take(3)
    assert [s["tags"]["http.path"] for s in spans] == ["/redirect/2", "/redirect/1", "/ok"]
    assert [s["tags"]["http.status_code"] for s in spans] == ["302", "302", "200"]
    for span in spans:
        assert_client_span(span, harness.parent)
    assert len({s["traceId"] for s in spans}) == 1
    assert len({s["id"] for s in spans}) == 3
    # Sequential: each hop starts when (or after) the previous one ended.
    for earlier, later in itertools.pairwise(spans):
        assert earlier["timestamp"] + earlier["duration"] <= later["timestamp"]
    received = backend.received
    assert [r.path for r in received] == ["/redirect/2", "/redirect/1", "/ok"]
    for arrived, span in zip(received, spans, strict=True):
        assert_propagated(arrived, span)


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_error_status_is_tagged_with_the_status(
    harness: Harness, backend: Backend, recorder: SpanRecorder, status: int
) -> None:
    outcome = await harness.request("GET", backend.url / "status" / str(status))

    assert outcome.status == status
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == str(status)
    assert span["tags"]["error"] == str(status)
    assert_propagated(backend.take_one(), span)


@pytest.mark.parametrize("status", [204, 399])  # 399: the last status that is no error
async def test_success_status_has_no_error(
    harness: Harness, backend: Backend, recorder: SpanRecorder, status: int
) -> None:
    await harness.request("GET", backend.url / "status" / str(status))

    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == str(status)
    assert "error" not in span["tags"]
    backend.take_one()


async def test_transport_error_reaches_caller_and_is_tagged(
    harness: Harness, recorder: SpanRecorder
) -> None:
    url = await refused_url()

    with pytest.raises(aiohttp.ClientConnectorError) as raised:
        await harness.request("GET", url)

    span = recorder.take_one()
    assert_client_span(span, harness.parent)
    assert span["tags"]["error"].startswith("ClientConnectorError: ")
    assert str(raised.value) in span["tags"]["error"]
    assert "http.status_code" not in span["tags"]


async def test_raise_for_status_keeps_status_and_error(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    with pytest.raises(aiohttp.ClientResponseError) as raised:
        await harness.request("GET", backend.url / "status" / "502", raise_for_status=True)

    assert raised.value.status == 502
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "502"
    assert span["tags"]["error"] == "ClientResponseError: 502, message='Bad Gateway'"
    assert str(backend.url) not in span["tags"]["error"]
    backend.take_one()


async def test_propagate_headers_false_sends_nothing_but_still_traces(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    await harness.request("GET", backend.url / "ok", trace_request_ctx={"propagate_headers": False})

    span = recorder.take_one()
    assert_client_span(span, harness.parent)
    assert backend.take_one().b3() == {}


async def test_replaces_b3_headers_the_caller_set(
    harness: Harness, backend: Backend, recorder: SpanRecorder
) -> None:
    stale = {
        "X-B3-TraceId": "0000000000000001",
        "x-b3-spanid": "0000000000000002",
        "X-B3-Flags": "0",
        "b3": "0",
    }

    await harness.request("GET", backend.url / "ok", headers=stale)

    span = recorder.take_one()
    assert_propagated(backend.take_one(), span)


@pytest.mark.parametrize("bits", [1, 0xFFDC9BB9A6453DF3, 2**64 - 1])
async def test_span_ids_are_sixteen_lower_hex_digits_leading_zeros_kept(
    harness: Harness,
    backend: Backend,
    recorder: SpanRecorder,
    monkeypatch: pytest.MonkeyPatch,
    bits: int,
) -> None:
    # B3 and Zipkin want exactly 16 lower-hex digits: a small random value keeps its zeros.
    monkeypatch.setattr(aiozipkin_client.client, "getrandbits", lambda k: bits)

    await harness.request("GET", backend.url / "ok")

    span = recorder.take_one()
    assert span["id"] == f"{bits:016x}"
    assert_propagated(backend.take_one(), span)


async def test_single_header_format(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    harness = await make_harness(b3_format=aiozipkin_client.B3Format.SINGLE)

    await harness.request("GET", backend.url / "ok")

    span = recorder.take_one()
    parent = f"-{span['parentId']}" if "parentId" in span else ""
    assert backend.take_one().b3() == {"b3": f"{span['traceId']}-{span['id']}-1{parent}"}


async def test_both_header_formats(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    harness = await make_harness(b3_format=aiozipkin_client.B3Format.BOTH)

    await harness.request("GET", backend.url / "ok")

    span = recorder.take_one()
    b3 = backend.take_one().b3()
    parent = f"-{span['parentId']}" if "parentId" in span else ""
    assert b3.pop("b3") == f"{span['traceId']}-{span['id']}-1{parent}"
    assert b3["x-b3-spanid"] == span["id"]
    assert b3["x-b3-sampled"] == "1"


async def test_hosts_not_allowed_get_no_headers_but_are_traced(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    harness = await make_harness(propagate_to=["partner.example"])

    await harness.request("GET", backend.url / "ok")

    span = recorder.take_one()
    assert_client_span(span, harness.parent)
    assert backend.take_one().b3() == {}


async def test_redirect_to_a_host_not_allowed_strips_the_headers(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    harness = await make_harness(propagate_to=["127.0.0.1"])
    elsewhere = backend.url.with_host("localhost") / "ok"

    outcome = await harness.request(
        "GET", (backend.url / "redirect-to").with_query(url=str(elsewhere))
    )

    assert outcome.status == 200
    first, second = recorder.take(2)
    assert first["tags"]["http.status_code"] == "302"
    assert second["tags"]["http.url"] == str(elsewhere)
    allowed, other = backend.received
    assert_propagated(allowed, first)
    assert other.b3() == {}


async def test_excluded_urls_get_no_span_and_no_headers(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    harness = await make_harness(exclude_urls=[r"/status/2\d\d$"])

    await harness.request("GET", backend.url / "status" / "204")
    await harness.request("GET", backend.url / "ok")

    excluded, traced = backend.received
    assert excluded.b3() == {}
    span = recorder.take_one()
    assert span["tags"]["http.path"] == "/ok"
    assert_propagated(traced, span)


async def test_parsers_customise_name_and_tags(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    def request_parser(request: RequestView, span: SpanCustomizer) -> None:
        aiozipkin_client.default_request_parser(request, span)
        span.name(f"{request.method.lower()} inventory")
        span.tag("tenant", request.headers.get("X-Tenant", "none"))

    def response_parser(response: ResponseView, span: SpanCustomizer) -> None:
        aiozipkin_client.default_response_parser(response, span)
        assert response.headers is not None
        span.tag("content.type", response.headers["Content-Type"])

    harness = await make_harness(request_parser=request_parser, response_parser=response_parser)

    await harness.request("GET", backend.url / "ok", headers={"X-Tenant": "acme"})

    span = recorder.take_one()
    assert span["name"] == "get inventory"
    assert span["tags"]["tenant"] == "acme"
    assert span["tags"]["content.type"] == "text/plain; charset=utf-8"
    assert span["tags"]["http.status_code"] == "200"
    backend.take_one()


async def test_broken_parsers_never_change_the_request(
    make_harness: Any, backend: Backend, recorder: SpanRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(view: object, span: SpanCustomizer) -> None:
        span.tag("before", "crash")
        raise RuntimeError("parser bug")

    harness = await make_harness(request_parser=broken, response_parser=broken)

    outcome = await harness.request("GET", backend.url / "ok")

    assert outcome.status == 200
    assert outcome.body == b"ok"
    span = recorder.take_one()
    assert span["tags"]["before"] == "crash"
    assert "http.path" not in span["tags"]
    assert_propagated(backend.take_one(), span)
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert failures == [
        "request_parser failed; the span keeps what it had",
        "response_parser failed; the span keeps what it had",
    ]


async def test_remote_service_name_fixed_or_computed(
    make_harness: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    fixed = await make_harness(remote_service_name="inventory")
    computed = await make_harness(remote_service_name=lambda url: f"svc-{url.port}")

    await fixed.request("GET", backend.url / "ok")
    await computed.request("GET", backend.url / "ok")

    first, second = recorder.take(2)
    port = backend.url.port
    assert first["remoteEndpoint"] == {
        "serviceName": "inventory",
        "ipv4": "127.0.0.1",
        "port": port,
    }
    assert second["remoteEndpoint"]["serviceName"] == f"svc-{port}"
    assert len(backend.received) == 2


async def test_remote_endpoints_of_many_services_stay_right_in_a_bounded_table(
    tracer: Tracer, backend: Backend, recorder: SpanRecorder
) -> None:
    """Remote endpoints are kept in a table so that a host's IP literal is parsed once; a
    client that talks to more services than the table holds must neither grow it without
    end nor be given another service's endpoint when it is emptied."""
    config = aiozipkin_client.make_trace_config(
        tracer, remote_service_name=lambda url: url.query["service"]
    )
    count = 300  # more than the table's 256 entries
    async with aiohttp.ClientSession(trace_configs=[config]) as session:
        for number in [*range(count), 0, 1]:  # the first two again, after the table emptied
            async with session.get(backend.url / "ok", params={"service": f"s{number}"}) as r:
                assert r.status == 200
    names = [span["remoteEndpoint"]["serviceName"] for span in recorder.take(count + 2)]
    assert names == [f"s{number}" for number in [*range(count), 0, 1]]
    # The receiver wraps our handler, a method of the config's handlers.
    handlers = config.on_request_start[0].__wrapped__.__self__  # type: ignore[attr-defined]
    assert 0 < len(handlers._remotes) <= 256
    assert len(backend.received) == count + 2


async def test_request_sampler_decides_new_traces_only(
    make_harness: Any, parent_mode: str, backend: Backend, recorder: SpanRecorder
) -> None:
    def sampler(request: RequestView) -> bool | None:
        return False if request.url.path == "/status/204" else None

    harness = await make_harness(sampler=sampler)

    await harness.request("GET", backend.url / "status" / "204")

    received = backend.take_one()
    if parent_mode == "none":
        # The sampler said no: ids still travel, with an explicit deny, and nothing is recorded.
        b3 = received.b3()
        assert b3["x-b3-sampled"] == "0"
        assert len(b3["x-b3-traceid"]) == 32
        assert len(b3["x-b3-spanid"]) == 16
        recorder.expect_none()
    else:
        # The parent already decided to sample: one trace, one decision.
        assert_propagated(received, recorder.take_one())


class _OfflineConnector(aiohttp.TCPConnector):
    """Fails every connection attempt at once, so no packet leaves for the literal address."""

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        raise aiohttp.ClientConnectionError("offline connector")


async def test_ipv6_literal_remote_endpoint(make_session: Any, recorder: SpanRecorder) -> None:
    session = make_session(session_kwargs={"connector": _OfflineConnector()})

    with pytest.raises(aiohttp.ClientConnectionError, match="offline connector"):
        await session.get(URL("http://[2001:db8::c001]:8080/ok"))

    span = recorder.take_one()
    assert span["remoteEndpoint"] == {"ipv6": "2001:db8::c001", "port": 8080}
    assert span["tags"]["error"] == "ClientConnectionError: offline connector"


def test_option_errors_are_raised_at_creation(tracer: Any) -> None:
    with pytest.raises(TypeError, match="b3_format must be a B3Format"):
        aiozipkin_client.make_trace_config(tracer, b3_format="single")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="propagate_to takes a collection of host names"):
        aiozipkin_client.make_trace_config(tracer, propagate_to="internal.example")
