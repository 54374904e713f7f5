"""Sampling states end to end: what the server receives and what is (not) recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiozipkin.sampler import Sampler

import aiozipkin_client
from tests.kit.assertions import assert_client_span, assert_propagated
from tests.kit.harness import make_context
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend


async def get(session: aiohttp.ClientSession, url: Any, **kwargs: Any) -> int:
    async with session.get(url, **kwargs) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
async def session(make_session: Any) -> aiohttp.ClientSession:
    s: aiohttp.ClientSession = make_session()
    return s


@pytest.fixture
async def unsampling_session(recorder: SpanRecorder) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose tracer samples nothing, reporting to the same strict recorder."""
    tracer = aiozipkin.Tracer(recorder, Sampler(sample_rate=0.0), aiozipkin.create_endpoint("a"))
    config = aiozipkin_client.make_trace_config(tracer)
    async with aiohttp.ClientSession(trace_configs=[config]) as s:
        yield s
    recorder.verify(tracer)


async def test_unsampled_parent_sends_ids_with_sampled_0_and_records_nothing(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    parent = make_context(sampled=False)

    await get(session, backend.url / "ok", trace_request_ctx={"span_context": parent})

    b3 = backend.take_one().b3()
    assert b3.pop("x-b3-spanid") not in (parent.span_id, "")
    assert b3 == {
        "x-b3-traceid": parent.trace_id,
        "x-b3-parentspanid": parent.span_id,
        "x-b3-sampled": "0",
    }
    recorder.expect_none()


async def test_unsampled_redirects_still_get_fresh_ids_per_hop(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    parent = make_context(sampled=False)

    await get(session, backend.url / "redirect" / "1", trace_request_ctx={"span_context": parent})

    first, second = (r.b3() for r in backend.received)
    assert first["x-b3-spanid"] != second["x-b3-spanid"]
    for b3 in (first, second):
        assert b3["x-b3-sampled"] == "0"
        assert b3["x-b3-traceid"] == parent.trace_id
        assert b3["x-b3-parentspanid"] == parent.span_id
    recorder.expect_none()


async def test_debug_parent_sends_flags_and_records_debug_span(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    parent = make_context(sampled=True, debug=True)

    await get(session, backend.url / "ok", trace_request_ctx={"span_context": parent})

    span = recorder.take_one()
    assert span["debug"] is True
    assert_client_span(span, parent)
    assert backend.take_one().b3() == {
        "x-b3-traceid": parent.trace_id,
        "x-b3-spanid": span["id"],
        "x-b3-parentspanid": parent.span_id,
        "x-b3-flags": "1",
    }


async def test_debug_survives_redirects_in_single_format(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session = make_session(b3_format=aiozipkin_client.B3Format.SINGLE)
    parent = make_context(sampled=None, debug=True)

    await get(session, backend.url / "redirect" / "1", trace_request_ctx={"span_context": parent})

    spans = recorder.take(2)
    for span, received in zip(spans, backend.received, strict=True):
        assert span["debug"] is True
        assert received.b3() == {"b3": f"{parent.trace_id}-{span['id']}-d-{parent.span_id}"}


async def test_deferred_parent_gets_the_tracer_decision_propagated(
    session: aiohttp.ClientSession,
    unsampling_session: aiohttp.ClientSession,
    backend: Backend,
    recorder: SpanRecorder,
) -> None:
    accepted = make_context(sampled=None)
    denied = make_context(sampled=None)

    await get(session, backend.url / "ok", trace_request_ctx={"span_context": accepted})
    await get(unsampling_session, backend.url / "ok", trace_request_ctx={"span_context": denied})

    span = recorder.take_one()
    assert_client_span(span, accepted)
    yes, no = backend.received
    assert_propagated(yes, span)
    assert no.b3()["x-b3-sampled"] == "0"
    assert no.b3()["x-b3-traceid"] == denied.trace_id


async def test_new_trace_not_sampled_by_the_tracer_still_sends_ids(
    unsampling_session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    await get(unsampling_session, backend.url / "ok")

    b3 = backend.take_one().b3()
    assert sorted(b3) == ["x-b3-sampled", "x-b3-spanid", "x-b3-traceid"]
    assert b3["x-b3-sampled"] == "0"
    recorder.expect_none()


async def test_request_sampler_can_force_a_trace_the_tracer_would_drop(
    recorder: SpanRecorder, backend: Backend
) -> None:
    tracer = aiozipkin.Tracer(recorder, Sampler(sample_rate=0.0), aiozipkin.create_endpoint("a"))
    config = aiozipkin_client.make_trace_config(tracer, sampler=lambda request: True)
    async with aiohttp.ClientSession(trace_configs=[config]) as session:
        await get(session, backend.url / "ok")

    assert_propagated(backend.take_one(), recorder.take_one())
    recorder.verify(tracer)


async def test_broken_request_sampler_falls_back_to_the_tracer(
    make_session: Any, backend: Backend, recorder: SpanRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    def sampler(request: aiozipkin_client.RequestView) -> bool | None:
        raise ValueError("sampler bug")

    session = make_session(sampler=sampler)

    assert await get(session, backend.url / "ok") == 200

    assert_propagated(backend.take_one(), recorder.take_one())
    assert "request sampler failed" in caplog.text


@pytest.mark.parametrize("form", ["dict-span", "namespace-context", "namespace-span"])
async def test_explicit_parent_forms(
    form: str,
    tracer: aiozipkin.Tracer,
    session: aiohttp.ClientSession,
    backend: Backend,
    recorder: SpanRecorder,
) -> None:
    parent_span = tracer.new_trace(sampled=True)
    parent_span.start()
    ctx: object
    if form == "dict-span":
        ctx = {"span_context": parent_span}
    elif form == "namespace-context":
        ctx = SimpleNamespace(span_context=parent_span.context)
    else:
        ctx = SimpleNamespace(span_context=parent_span, propagate_headers=True)

    await get(session, backend.url / "ok", trace_request_ctx=ctx)
    parent_span.finish()

    client, parent = recorder.take(2)
    assert_client_span(client, parent_span.context)
    assert parent["id"] == parent_span.context.span_id
    assert_propagated(backend.take_one(), client)


async def test_explicit_parent_wins_over_the_current_span(
    session: aiohttp.ClientSession, backend: Backend, recorder: SpanRecorder
) -> None:
    current, explicit = make_context(), make_context()

    with aiozipkin_client.use_span(current):
        await get(session, backend.url / "ok", trace_request_ctx={"span_context": explicit})

    assert_client_span(recorder.take_one(), explicit)
    backend.take_one()


async def test_wrong_parent_type_is_logged_and_the_current_span_used(
    session: aiohttp.ClientSession,
    backend: Backend,
    recorder: SpanRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    current = make_context()

    with aiozipkin_client.use_span(current):
        await get(session, backend.url / "ok", trace_request_ctx={"span_context": "0123"})

    assert_client_span(recorder.take_one(), current)
    assert "span_context must be an aiozipkin TraceContext or span, not str" in caplog.text
    backend.take_one()


def test_use_span_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="takes an aiozipkin span or TraceContext, not dict"):  # noqa: SIM117
        with aiozipkin_client.use_span({}):  # type: ignore[arg-type]
            pass
