"""The tracer's ``ignored_exceptions`` (aiozipkin's option) are honoured on CLIENT and SERVER spans.

aiozipkin's own spans leave an exception of those classes (or their subclasses) untagged; ours do
the same, and keep every other tag. Each test also fails the other way: an exception that is not
ignored is still tagged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer

import aiozipkin_client
from tests.kit.collector import running_collector
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, refused_url, start_app

MakeTracer = Callable[..., Tracer]


@pytest.fixture
def make_tracer(recorder: SpanRecorder) -> Iterator[MakeTracer]:
    """``make_tracer(*classes)``: a tracer reporting to the strict recorder, ignoring those."""
    made: list[Tracer] = []

    def make(*classes: type[Exception]) -> Tracer:
        endpoint = aiozipkin.create_endpoint("app")
        tracer = aiozipkin.Tracer(recorder, Sampler(sample_rate=1.0), endpoint, list(classes))
        made.append(tracer)
        return tracer

    yield make
    for tracer in made:
        recorder.verify(tracer)


@pytest.fixture
async def traced() -> AsyncIterator[Callable[[Tracer], aiohttp.ClientSession]]:
    """``traced(tracer)``: a session traced by ``tracer``, closed at the end."""
    async with AsyncExitStack() as stack:

        def make(tracer: Tracer) -> aiohttp.ClientSession:
            config = aiozipkin_client.make_trace_config(tracer)
            session = aiohttp.ClientSession(trace_configs=[config])
            stack.push_async_callback(session.close)
            return session

        yield make


def aiozipkins_own_span(tracer: Tracer, exc: BaseException) -> None:
    span = tracer.new_trace()
    span.start()
    span.finish(exception=exc)  # type: ignore[arg-type]


async def test_client_span_like_aiozipkins_own_span(
    make_tracer: MakeTracer,
    traced: Callable[[Tracer], aiohttp.ClientSession],
    recorder: SpanRecorder,
) -> None:
    # ClientConnectorError is a ClientOSError: subclasses are ignored too.
    tracer = make_tracer(aiohttp.ClientOSError)
    url = await refused_url()

    with pytest.raises(aiohttp.ClientConnectorError) as raised:
        await traced(tracer).get(url)
    aiozipkins_own_span(tracer, raised.value)

    ours, theirs = recorder.take(2)
    assert ours["kind"] == "CLIENT"
    assert ours["tags"]["http.url"] == str(url)
    assert "error" not in ours["tags"]
    assert "tags" not in theirs  # aiozipkin's own span: no error tag either


async def test_other_exceptions_are_still_tagged(
    make_tracer: MakeTracer,
    traced: Callable[[Tracer], aiohttp.ClientSession],
    recorder: SpanRecorder,
    backend: Backend,
) -> None:
    tracer = make_tracer(aiohttp.ClientOSError)

    with pytest.raises(aiohttp.ClientResponseError):
        await traced(tracer).get(backend.url / "status" / "404", raise_for_status=True)

    span = recorder.take_one()
    assert span["tags"]["error"] == "ClientResponseError: 404, message='Not Found'"
    backend.take_one()


async def test_an_ignored_raise_for_status_keeps_the_status_and_no_error(
    make_tracer: MakeTracer,
    traced: Callable[[Tracer], aiohttp.ClientSession],
    recorder: SpanRecorder,
    backend: Backend,
) -> None:
    tracer = make_tracer(aiohttp.ClientResponseError)

    with pytest.raises(aiohttp.ClientResponseError):
        await traced(tracer).get(backend.url / "status" / "404", raise_for_status=True)

    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "404"
    assert "error" not in span["tags"]
    backend.take_one()


async def test_an_ignored_error_after_a_redirect(
    make_tracer: MakeTracer,
    traced: Callable[[Tracer], aiohttp.ClientSession],
    recorder: SpanRecorder,
    backend: Backend,
) -> None:
    # Too many redirects fails between hops: the error belongs to the last redirect's span.
    tracer = make_tracer(aiohttp.TooManyRedirects)

    with pytest.raises(aiohttp.TooManyRedirects):
        await traced(tracer).get(backend.url / "redirect" / "5", max_redirects=1)

    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "302"
    assert "error" not in span["tags"]
    assert len(backend.received) == 1


class Declined(LookupError):
    """An exception the application expects and does not count as an error."""


async def test_server_span_like_aiozipkins_own_span(
    make_tracer: MakeTracer, recorder: SpanRecorder
) -> None:
    tracer = make_tracer(LookupError)
    failures: list[Exception] = []

    async def handler(request: web.Request) -> web.Response:
        failure = (
            Declined("no such basket") if request.query["kind"] == "ignored" else ValueError("x")
        )
        failures.append(failure)
        raise failure

    app = aiozipkin_client.setup(web.Application(), tracer)
    app.router.add_get("/basket", handler)
    async with start_app(app) as url, aiohttp.ClientSession() as plain:
        for kind in ("ignored", "counted"):
            async with plain.get((url / "basket").with_query(kind=kind)) as response:
                assert response.status == 500
    aiozipkins_own_span(tracer, failures[0])

    ignored, counted, theirs = recorder.take(3)
    assert ignored["tags"]["http.status_code"] == "500"
    assert "error" not in ignored["tags"]
    assert counted["tags"]["error"] == "ValueError: x"
    assert "tags" not in theirs


async def test_through_create_and_its_transport(
    traced: Callable[[Tracer], aiohttp.ClientSession],
) -> None:
    async with running_collector() as collector:
        endpoint = aiozipkin.create_endpoint("app")
        async with aiozipkin_client.create(
            str(collector.url),
            endpoint,
            sample_rate=1.0,
            ignored_exceptions=[aiohttp.ClientConnectorError],
            send_interval=0.01,
        ) as tracer:
            with pytest.raises(aiohttp.ClientConnectorError):
                await traced(tracer).get(await refused_url())
            (span,) = await collector.wait_for_spans(1)

    assert span["kind"] == "CLIENT"
    assert "error" not in span["tags"]


@pytest.mark.parametrize(
    "ignored",
    [["ValueError"], [ValueError, 42], ValueError, "ValueError"],
)
def test_a_tracer_ignoring_what_is_not_a_list_of_exception_classes_is_refused(
    ignored: Any,
) -> None:
    tracer = aiozipkin.Tracer(
        SpanRecorder(), Sampler(sample_rate=1.0), aiozipkin.create_endpoint("app"), ignored
    )

    with pytest.raises(TypeError, match="ignored_exceptions"):
        aiozipkin_client.make_trace_config(tracer)
    with pytest.raises(TypeError, match="ignored_exceptions"):
        aiozipkin_client.middleware(tracer)
