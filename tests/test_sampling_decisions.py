"""Each rule of :func:`decide` on its own, with exact decisions.

The rules, from the module docstring: debug and an explicit accept or deny on the parent are
kept; otherwise the request sampler decides, then the tracer's sampler (asked about this trace
id); a sampler that raises is logged and the tracer's sampler decides. The end-to-end effect
(what is sent and recorded) is in test_client_sampling.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiozipkin.helpers import TraceContext
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aiozipkin_client import RequestView
from aiozipkin_client.sampling import Decision, RequestSampler, decide

TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"
REQUEST = RequestView("GET", URL("http://127.0.0.1/orders"), CIMultiDictProxy(CIMultiDict()))
#: How often decide() asked for the request's view (it should only when a sampler is asked).
VIEWS_MADE: list[RequestView] = []


def make_request() -> RequestView:
    VIEWS_MADE.append(REQUEST)
    return REQUEST


class TraceIdSampler:
    """Samples by trace id, and remembers what it was asked."""

    def __init__(self, sampled_ids: set[str]) -> None:
        self.sampled_ids = sampled_ids
        self.asked: list[str] = []

    def is_sampled(self, trace_id: str) -> bool:
        self.asked.append(trace_id)
        return trace_id in self.sampled_ids


def parent(sampled: bool | None, debug: bool = False) -> TraceContext:
    return TraceContext(TRACE_ID, None, "a2fb4a1d1a96d312", sampled, debug, False)


def never_asked(request: RequestView) -> bool | None:
    raise AssertionError("the request sampler must not be asked")


@pytest.mark.parametrize("sampled", [True, False])
def test_parent_decision_is_kept_and_nobody_is_asked(sampled: bool) -> None:
    tracer = TraceIdSampler(set() if sampled else {TRACE_ID})

    VIEWS_MADE.clear()

    decision = decide(parent(sampled), TRACE_ID, make_request, never_asked, tracer)

    assert decision == Decision(sampled=sampled, debug=False)
    assert tracer.asked == []
    assert VIEWS_MADE == []  # no sampler asked, so no view built


@pytest.mark.parametrize("sampled", [True, False, None])
def test_debug_parent_is_a_debug_accept(sampled: bool | None) -> None:
    tracer = TraceIdSampler(set())

    decision = decide(parent(sampled, debug=True), TRACE_ID, make_request, never_asked, tracer)

    assert decision == Decision(sampled=True, debug=True)
    assert tracer.asked == []


@pytest.mark.parametrize("verdict", [True, False])
@pytest.mark.parametrize("with_parent", [False, True], ids=["root", "deferred-parent"])
def test_request_sampler_decides_when_there_is_no_decision(
    verdict: bool, with_parent: bool
) -> None:
    tracer = TraceIdSampler(set() if verdict else {TRACE_ID})
    seen: list[RequestView] = []

    def sampler(request: RequestView) -> bool | None:
        seen.append(request)
        return verdict

    found = parent(None) if with_parent else None
    decision = decide(found, TRACE_ID, make_request, sampler, tracer)

    assert decision == Decision(sampled=verdict, debug=False)
    assert seen == [REQUEST]
    assert tracer.asked == []


def test_truthy_verdicts_are_stored_as_bool() -> None:
    def sampler(request: RequestView) -> Any:
        return 1  # an untyped sampler may answer with any truthy value

    decision = decide(None, TRACE_ID, make_request, sampler, TraceIdSampler(set()))

    assert decision == Decision(sampled=True, debug=False)
    assert decision.sampled is True


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("sampler", [None, lambda request: None], ids=["no-sampler", "defers"])
def test_tracer_sampler_decides_by_this_trace_id(
    sampled: bool, sampler: RequestSampler | None
) -> None:
    tracer = TraceIdSampler({TRACE_ID} if sampled else set())

    decision = decide(parent(None), TRACE_ID, make_request, sampler, tracer)

    assert decision == Decision(sampled=sampled, debug=False)
    assert tracer.asked == [TRACE_ID]


def test_broken_request_sampler_is_logged_and_the_tracer_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: RequestView) -> bool | None:
        raise ValueError("sampler bug")

    tracer = TraceIdSampler({TRACE_ID})

    decision = decide(None, TRACE_ID, make_request, broken, tracer)

    assert decision == Decision(sampled=True, debug=False)
    assert tracer.asked == [TRACE_ID]
    [record] = caplog.records
    assert (record.name, record.levelno) == ("aiozipkin_client", logging.ERROR)
    assert record.getMessage() == "request sampler failed; using the tracer's sampler"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
