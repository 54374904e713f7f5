"""The server middleware on one real service: span shape, errors, skipped routes, do no harm.

Requests come from an untraced session (a caller outside any trace); every test asserts the
exact span the recorder got, and the strict recorder fails it on a span left unchecked, reported
twice, or left unfinished in the tracer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiozipkin.helpers import TraceContext
from aiozipkin.tracer import Tracer
from yarl import URL

from aiozipkin_client._context import current_context
from aiozipkin_client._spans import remote_endpoint
from aiozipkin_client.parsers import SpanCustomizer
from aiozipkin_client.server import (
    SPAN_KEY,
    TRACER_KEY,
    ServerResponseView,
    default_server_request_parser,
    default_server_response_parser,
    middleware,
    setup,
)
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import start_app

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def plain() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a request the server drops is not silently retried on a new connection.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def fetch(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> tuple[int, str]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.text()


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_span_for_a_matched_route(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    app = setup(web.Application(), tracer)
    app.router.add_get("/users/{id}", ok)

    async with start_app(app) as url:
        status, body = await fetch(plain, url.with_path("/users/42").with_query(page="2"))

    assert (status, body) == (200, "ok")
    span = recorder.take_one()
    assert len(span.pop("traceId")) == 32
    assert len(span.pop("id")) == 16
    assert span.pop("timestamp") > 0
    assert span.pop("duration") >= 1
    assert span == {
        "name": "get /users/{id}",
        "kind": "SERVER",
        "localEndpoint": {"serviceName": "app"},
        "remoteEndpoint": {"ipv4": "127.0.0.1"},
        "tags": {
            "http.method": "GET",
            "http.path": "/users/42",
            "http.route": "/users/{id}",
            "http.status_code": "200",
        },
    }


async def test_names_use_the_route_never_the_path_and_are_lowercase(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    app = setup(web.Application(), tracer)
    app.router.add_route("POST", "/Orders/{orderId:\\d+}/Items", ok)

    async with start_app(app) as url, plain.post(url / "Orders" / "981" / "Items") as response:
        assert response.status == 200

    span = recorder.take_one()
    assert span["name"] == "post /orders/{orderid}/items"
    assert span["tags"]["http.route"] == "/Orders/{orderId}/Items"
    assert span["tags"]["http.path"] == "/Orders/981/Items"
    assert "981" not in span["name"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/no/such/page", 404), ("DELETE", "/ok", 405)],
)
async def test_unmatched_requests_are_named_after_the_method_only(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    method: str,
    path: str,
    status: int,
) -> None:
    app = setup(web.Application(), tracer)
    app.router.add_get("/ok", ok)

    async with start_app(app) as url, plain.request(method, url.with_path(path)) as response:
        assert response.status == status

    span = recorder.take_one()
    assert span["name"] == method.lower()
    assert span["tags"] == {
        "http.method": method,
        "http.path": path,
        "http.status_code": str(status),
    }


async def test_sub_application_routes_include_the_prefix(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    api = web.Application()
    api.router.add_get("/users/{id}", ok)
    app = setup(web.Application(), tracer)
    app.add_subapp("/api/v1", api)

    async with start_app(app) as url:
        assert await fetch(plain, url / "api" / "v1" / "users" / "7") == (200, "ok")

    span = recorder.take_one()
    assert span["name"] == "get /api/v1/users/{id}"
    assert span["tags"]["http.route"] == "/api/v1/users/{id}"


async def raise_runtime_error(request: web.Request) -> web.Response:
    raise RuntimeError("database is on fire")


async def raise_bare_error(request: web.Request) -> web.Response:
    raise KeyError()


async def raise_timeout(request: web.Request) -> web.Response:
    raise TimeoutError()


async def return_500(request: web.Request) -> web.Response:
    return web.Response(status=500, text="sorry")


async def raise_503(request: web.Request) -> web.Response:
    raise web.HTTPServiceUnavailable(text="later")


async def raise_404(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def raise_400(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(text="no")


async def raise_302(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def return_404(request: web.Request) -> web.Response:
    return web.Response(status=404)


async def return_499(request: web.Request) -> web.Response:
    return web.Response(status=499)  # the last status that is the caller's mistake


@pytest.mark.parametrize(
    ("handler", "status", "error"),
    [
        (raise_runtime_error, 500, "RuntimeError: database is on fire"),
        (raise_bare_error, 500, "KeyError"),
        (raise_timeout, 504, "TimeoutError"),
        (return_500, 500, "500"),
        (raise_503, 503, "503"),
        (raise_404, 404, None),
        (raise_400, 400, None),
        (raise_302, 302, None),
        (return_404, 404, None),
        (return_499, 499, None),
    ],
)
async def test_errors_are_5xx_and_unhandled_exceptions_only(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    handler: Handler,
    status: int,
    error: str | None,
) -> None:
    app = setup(web.Application(), tracer)
    app.router.add_get("/work", handler)

    async with start_app(app) as url:
        got, _ = await fetch(plain, url / "work", allow_redirects=False)

    assert got == status
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == str(status)
    assert span["tags"].get("error") == error


async def test_the_server_span_lasts_as_long_as_the_handler(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return web.Response(text="ok")

    app = setup(web.Application(), tracer)
    app.router.add_get("/slow", slow)
    async with start_app(app) as url:
        got, _ = await fetch(plain, url / "slow")

    assert got == 200
    span = recorder.take_one()
    assert span["kind"] == "SERVER"
    assert span["duration"] >= 95_000  # the 100 ms sleep, read on another clock


async def test_handler_cancelled_when_the_client_goes_away_is_finished_once(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    entered = asyncio.Event()

    async def waits_forever(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    app = setup(web.Application(), tracer)
    app.router.add_get("/wait", waits_forever)
    # handler_cancellation: aiohttp cancels the handler when the client disconnects.
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = URL.build(scheme="http", host="127.0.0.1", port=runner.addresses[0][1])
    try:
        request = asyncio.create_task(fetch(plain, url / "wait"))
        await asyncio.wait_for(entered.wait(), 5)
        request.cancel()
        await recorder.wait_for(1)
    finally:
        await runner.cleanup()

    span = recorder.take_one()
    assert span["name"] == "get /wait"
    assert span["tags"]["error"] == "CancelledError"
    assert "http.status_code" not in span["tags"]
    assert not tracer._records


async def test_streaming_response_prepared_by_the_handler(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=206)
        await response.prepare(request)
        for chunk in (b"one,", b"two,", b"three"):
            await response.write(chunk)
        # The span is current while the body is written.
        assert current_context() == request[SPAN_KEY].context
        return response

    app = setup(web.Application(), tracer)
    app.router.add_get("/stream", stream)

    async with start_app(app) as url:
        assert await fetch(plain, url / "stream") == (206, "one,two,three")
        await recorder.wait_for(1)

    span = recorder.take_one()
    assert span["name"] == "get /stream"
    assert span["tags"]["http.status_code"] == "206"
    assert "error" not in span["tags"]


async def test_handler_sees_its_span_as_current_and_can_tag_it(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    seen: list[TraceContext | None] = []

    async def handler(request: web.Request) -> web.Response:
        span = request[SPAN_KEY]
        seen.append(current_context())
        seen.append(span.context)
        span.tag("user.id", "42")
        span.annotate("cache miss")
        assert request.app[TRACER_KEY] is tracer
        return web.Response(text="ok")

    app = setup(web.Application(), tracer)
    app.router.add_get("/me", handler)

    async with start_app(app) as url:
        assert await fetch(plain, url / "me") == (200, "ok")

    span = recorder.take_one()
    current, own = seen
    assert current == own
    assert current is not None
    assert (current.trace_id, current.span_id) == (span["traceId"], span["id"])
    assert span["tags"]["user.id"] == "42"
    assert [a["value"] for a in span["annotations"]] == ["cache miss"]
    # Outside the request, nothing is current any more.
    assert current_context() is None


async def test_skip_routes_by_route_resource_or_pattern(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    seen: dict[str, tuple[TraceContext | None, bool]] = {}

    async def handler(request: web.Request) -> web.Response:
        seen[request.path] = (current_context(), SPAN_KEY in request)
        return web.Response(text="ok")

    app = web.Application()
    health = app.router.add_get("/health", handler)
    metrics = app.router.add_resource("/metrics")
    metrics.add_route("GET", handler)
    app.router.add_get("/ready/{probe}", handler)
    app.router.add_get("/traced", handler)
    setup(app, tracer, skip_routes=[health, metrics, "/ready/{probe}"])
    malformed = {"X-B3-TraceId": "not-hex", "X-B3-SpanId": "-", "b3": "garbage"}

    async with start_app(app) as url:
        for path in ("/health", "/metrics", "/ready/db", "/traced"):
            assert await fetch(plain, url.with_path(path), headers=malformed) == (200, "ok")

    assert seen["/health"] == (None, False)
    assert seen["/metrics"] == (None, False)
    assert seen["/ready/db"] == (None, False)
    context, has_span = seen["/traced"]
    assert context is not None
    assert has_span
    assert recorder.take_one()["name"] == "get /traced"


def test_skip_routes_refuses_what_it_cannot_match(tracer: Tracer) -> None:
    with pytest.raises(TypeError, match="skip_routes takes routes"):
        setup(web.Application(), tracer, skip_routes=[42])  # type: ignore[list-item]


def test_setup_twice_is_refused(tracer: Tracer) -> None:
    app = setup(web.Application(), tracer)
    with pytest.raises(RuntimeError, match="already"):
        setup(app, tracer)


async def test_setup_puts_the_middleware_first(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    @web.middleware
    async def errors_to_json(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RuntimeError:
            return web.json_response({"error": "internal"}, status=500)

    app = web.Application(middlewares=[errors_to_json])
    app.router.add_get("/boom", raise_runtime_error)
    setup(app, tracer)

    async with start_app(app) as url:
        assert await fetch(plain, url / "boom") == (500, '{"error": "internal"}')

    # The span saw the response the other middleware made of the exception.
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "500"
    assert span["tags"]["error"] == "500"


async def test_middleware_factory_and_peer_address_from_a_proxy_middleware(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(remote=request.headers["X-Real-IP"]))

    app = web.Application(middlewares=[forwarded, middleware(tracer)])
    app.router.add_get("/ok", ok)

    async with start_app(app) as url:
        for address in ("2001:db8::c001", "::ffff:10.1.2.3", "fe80::1%eth0", "not-an-ip"):
            assert await fetch(plain, url / "ok", headers={"X-Real-IP": address}) == (200, "ok")

    spans = recorder.take(4)
    assert [span.get("remoteEndpoint") for span in spans] == [
        {"ipv6": "2001:db8::c001"},
        {"ipv4": "10.1.2.3"},
        {"ipv6": "fe80::1"},
        None,
    ]
    assert TRACER_KEY not in app


def test_remote_endpoint_from_peer_addresses() -> None:
    assert remote_endpoint(None, None, None) is None
    assert remote_endpoint(None, "", None) is None
    assert remote_endpoint(None, "not-an-ip", None) is None
    for peer, fields in [
        ("192.0.2.7", {"ipv4": "192.0.2.7"}),
        ("::ffff:10.0.0.1", {"ipv4": "10.0.0.1"}),
        ("fe80::1%eth0", {"ipv6": "fe80::1"}),
        ("[2001:db8::c001]", {"ipv6": "2001:db8::c001"}),
    ]:
        remote = remote_endpoint(None, peer, None)
        assert remote is not None
        assert msgspec.to_builtins(remote.checked) == fields
        assert (
            remote.endpoint._asdict()
            == {"serviceName": None, "ipv6": None, "port": None, "ipv4": None} | fields
        )


async def test_custom_parsers_and_sampler(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    def request_parser(request: web.Request, span: SpanCustomizer) -> None:
        default_server_request_parser(request, span)
        span.tag("tenant", request.headers.get("X-Tenant", "none"))

    def response_parser(response: ServerResponseView, span: SpanCustomizer) -> None:
        default_server_response_parser(response, span)
        span.tag("outcome", "bad" if response.status and response.status >= 400 else "good")

    def sampler(request: web.Request) -> bool | None:
        return False if request.path == "/quiet" else None

    app = setup(
        web.Application(),
        tracer,
        sampler=sampler,
        request_parser=request_parser,
        response_parser=response_parser,
    )
    app.router.add_get("/quiet", ok)
    app.router.add_get("/loud", ok)

    async with start_app(app) as url:
        assert await fetch(plain, url / "quiet") == (200, "ok")
        assert await fetch(plain, url / "loud", headers={"X-Tenant": "acme"}) == (200, "ok")

    span = recorder.take_one()
    assert span["name"] == "get /loud"
    assert span["tags"]["tenant"] == "acme"
    assert span["tags"]["outcome"] == "good"


async def test_sampler_is_not_asked_when_the_caller_decided(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    asked: list[str] = []

    def sampler(request: web.Request) -> bool | None:
        asked.append(request.path)
        return False

    app = setup(web.Application(), tracer, sampler=sampler)
    app.router.add_get("/ok", ok)

    async with start_app(app) as url:
        assert await fetch(plain, url / "ok", headers={"b3": "1"}) == (200, "ok")

    assert asked == []
    assert recorder.take_one()["name"] == "get /ok"


async def test_broken_parsers_and_sampler_never_change_the_response(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(view: object, span: SpanCustomizer) -> None:
        span.tag("before", "crash")
        raise RuntimeError("parser bug")

    def broken_sampler(request: web.Request) -> bool | None:
        raise RuntimeError("sampler bug")

    app = setup(
        web.Application(),
        tracer,
        sampler=broken_sampler,
        request_parser=broken,
        response_parser=broken,
    )
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", raise_runtime_error)

    async with start_app(app) as url:
        assert await fetch(plain, url / "ok") == (200, "ok")
        assert (await fetch(plain, url / "boom"))[0] == 500

    fine, failed = recorder.take(2)
    assert fine["tags"] == {"before": "crash"}
    # A parser may break, the unhandled exception is still on the span.
    assert failed["tags"] == {"before": "crash", "error": "RuntimeError: database is on fire"}
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aiozipkin_client" and r.levelname == "ERROR"
    ]
    assert (
        failures
        == [
            "server sampler failed; using the tracer's sampler",
            "server request_parser failed; the span keeps what it had",
            "server response_parser failed; the span keeps what it had",
        ]
        * 2
    )


async def test_a_broken_tracer_never_changes_the_response(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenSampler:
        def is_sampled(self, trace_id: str) -> bool:
            raise RuntimeError("tracer bug")

    tracer._sampler = BrokenSampler()  # type: ignore[assignment]
    app = setup(web.Application(), tracer)
    app.router.add_get("/ok", ok)

    async with start_app(app) as url:
        assert await fetch(plain, url / "ok") == (200, "ok")

    recorder.expect_none()
    assert [r.getMessage() for r in caplog.records if r.name == "aiozipkin_client"] == [
        "aiozipkin_client: cannot trace GET; the request goes on"
    ]


async def test_reporting_failure_never_changes_the_response(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def exploding_send(record: object) -> None:
        raise RuntimeError("transport bug")

    recorder.send = exploding_send  # type: ignore[method-assign]
    app = setup(web.Application(), tracer)
    app.router.add_get("/ok", ok)

    async with start_app(app) as url:
        assert await fetch(plain, url / "ok") == (200, "ok")

    assert [r.getMessage() for r in caplog.records if r.name == "aiozipkin_client"] == [
        "aiozipkin_client: cannot report the server span; the response goes on"
    ]
