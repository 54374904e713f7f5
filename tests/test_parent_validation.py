"""Which parents B3 can carry, one rule at a time, and what the client does with the others.

README (*Choosing the parent*): a parent is used only if B3 can carry it exactly: a trace id of 16
or 32 lower-hex characters and a span id of 16, neither all zeros, a sampling state of ``True``,
``False`` or ``None`` and a ``bool`` debug flag. An invalid explicit parent gives way to the
current span, an invalid current span to a new trace; the first such parent is logged as a
warning, later ones at debug level. The B3 spec says the same of the ids (lower-hex, 64 or 128-bit
trace ids, 64-bit span ids) and has four sampling states: defer, deny, accept, debug.

``tests/test_client_parents.py`` fuzzes parents through real sessions; this file names each rule
once, so that dropping any one of them fails a test that says which.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
import pytest
from aiozipkin.helpers import TraceContext

import aiozipkin_client
from aiozipkin_client.propagation import is_valid_parent
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend

TRACE_128 = "463ac35c9f6413ad48485a3953bb6124"
TRACE_64 = "48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"


class IdText(str):
    """A str subclass (like multidict's istr): still a string B3 can carry."""


def label(value: object) -> str:
    """A test id mutmut can pass back to pytest: the type, then the value's safe characters."""
    return f"{type(value).__name__}-{re.sub(r'[^0-9A-Za-z]', '_', str(value))}"


def parent(**fields: Any) -> TraceContext:
    valid: dict[str, Any] = {
        "trace_id": TRACE_128,
        "parent_id": None,
        "span_id": SPAN,
        "sampled": True,
        "debug": False,
        "shared": False,
    }
    return TraceContext(**{**valid, **fields})


# -- is_valid_parent, per field -------------------------------------------------------------


@pytest.mark.parametrize(
    "trace_id",
    [TRACE_128, TRACE_64, "0" * 31 + "1", "0" * 15 + "1", IdText(TRACE_128)],
    ids=["128-bit", "64-bit", "128-bit-leading-zeros", "64-bit-leading-zeros", "str-subclass"],
)
def test_trace_ids_b3_carries(trace_id: str) -> None:
    assert is_valid_parent(parent(trace_id=trace_id))


@pytest.mark.parametrize(
    "trace_id",
    [
        TRACE_128.upper(),
        TRACE_64.upper(),
        TRACE_128[:-1] + "A",  # one upper-case character
        TRACE_128 + SPAN,  # 48: a multiple of 16, but 64 and 128 bits only
        TRACE_128 + TRACE_128,  # 64
        TRACE_64[:-1],  # 15
        TRACE_64 + "1",  # 17
        TRACE_128[:-1],  # 31
        TRACE_128 + "1",  # 33
        "0" * 16,
        "0" * 32,
        "",
        "g" * 16,
        TRACE_64[:-1] + "\n",
        TRACE_64 + "\n",
        # The length of an id, with white space between whole bytes (a hex decoder skips it).
        TRACE_64[:14] + "  ",
        " " + TRACE_128[:30] + "\t",
        int(TRACE_128, 16),
        TRACE_128.encode(),
        None,
    ],
    ids=label,
)
def test_trace_ids_b3_cannot_carry(trace_id: object) -> None:
    assert not is_valid_parent(parent(trace_id=trace_id))


@pytest.mark.parametrize("span_id", [SPAN, "0" * 15 + "1", IdText(SPAN)], ids=label)
def test_span_ids_b3_carries(span_id: str) -> None:
    assert is_valid_parent(parent(span_id=span_id))


@pytest.mark.parametrize(
    "span_id",
    [
        SPAN.upper(),
        SPAN[:-1] + "F",
        TRACE_128,  # 32 hex: a trace id may be 128-bit, a span id never
        SPAN[:-1],
        SPAN + "1",
        "0" * 16,
        "",
        SPAN[:-1] + "\n",
        SPAN[:8] + " " + SPAN[8:14] + " ",
        int(SPAN, 16),
        SPAN.encode(),
        None,
    ],
    ids=label,
)
def test_span_ids_b3_cannot_carry(span_id: object) -> None:
    assert not is_valid_parent(parent(span_id=span_id))


@pytest.mark.parametrize("sampled", [True, False, None], ids=label)
def test_the_three_sampling_states(sampled: bool | None) -> None:
    # accept, deny, defer (debug is the debug flag)
    assert is_valid_parent(parent(sampled=sampled))
    assert is_valid_parent(parent(sampled=sampled, debug=True))


@pytest.mark.parametrize("sampled", [1, 0, "1", "0", "", "true"], ids=label)
def test_sampling_states_of_another_type(sampled: object) -> None:
    # 1 == True, but it is not the state: a parent of the wrong type came from unchecked input.
    assert not is_valid_parent(parent(sampled=sampled))


@pytest.mark.parametrize("debug", [None, 1, 0, "1", "d"], ids=label)
def test_debug_flags_that_are_not_bool(debug: object) -> None:
    assert not is_valid_parent(parent(debug=debug))
    assert not is_valid_parent(parent(debug=debug, sampled=None))


def test_the_parents_own_parent_id_and_shared_are_not_checked() -> None:
    # A child never sends its parent's parent id, nor its shared flag.
    assert is_valid_parent(parent(parent_id="not-an-id", shared=None))


# -- through a session: which parent is used, and what is logged ---------------------------

CURRENT = parent()
OTHER = parent(trace_id=TRACE_64, span_id="b7ad6b7169203331", sampled=False)


async def sent_b3(
    session: aiohttp.ClientSession, backend: Backend, **kwargs: Any
) -> dict[str, str]:
    async with session.get(backend.url / "ok", **kwargs) as response:
        assert response.status == 200
        assert await response.read() == b"ok"
    return backend.take_one().b3()


def ignored(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if "ignoring a parent" in record.getMessage()
    ]


async def test_a_valid_explicit_parent_wins_over_the_current_span(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    session: aiohttp.ClientSession = make_session()
    with aiozipkin_client.use_span(CURRENT):
        b3 = await sent_b3(session, backend, trace_request_ctx={"span_context": OTHER})

    assert (b3["x-b3-traceid"], b3["x-b3-parentspanid"]) == (OTHER.trace_id, OTHER.span_id)
    assert b3["x-b3-sampled"] == "0"
    assert recorder.take_all() == []  # denied, as the parent said


async def test_an_invalid_explicit_parent_gives_way_to_the_current_span_with_one_warning(
    make_session: Any,
    backend: Backend,
    recorder: SpanRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiozipkin_client")
    session: aiohttp.ClientSession = make_session()
    bad = OTHER._replace(span_id=SPAN.upper())

    with aiozipkin_client.use_span(CURRENT):
        first = await sent_b3(session, backend, trace_request_ctx={"span_context": bad})
        second = await sent_b3(session, backend, trace_request_ctx={"span_context": bad})

    for b3 in (first, second):
        assert (b3["x-b3-traceid"], b3["x-b3-parentspanid"]) == (CURRENT.trace_id, CURRENT.span_id)
        assert b3["x-b3-sampled"] == "1"
    assert len(recorder.take(2)) == 2
    message = (
        "aiozipkin_client: ignoring a parent from trace_request_ctx span_context whose ids B3"
        f" cannot carry (trace_id='{TRACE_64}', span_id='{SPAN.upper()}', sampled=False,"
        " debug=False); the request starts a new trace. Later ones are logged at debug level."
    )
    # The first is a warning; the second the same, at debug level: a flood would hide the rest.
    assert ignored(caplog) == [(logging.WARNING, message), (logging.DEBUG, message)]


async def test_an_invalid_current_span_starts_a_new_trace_with_one_warning_per_session(
    make_session: Any,
    backend: Backend,
    recorder: SpanRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiozipkin_client")
    first_session: aiohttp.ClientSession = make_session()
    second_session: aiohttp.ClientSession = make_session()
    bad = parent(trace_id=1, debug=None)

    with aiozipkin_client.use_span(bad):
        sent = [
            await sent_b3(first_session, backend),
            await sent_b3(first_session, backend),
            await sent_b3(second_session, backend),
        ]

    for b3 in sent:
        assert "x-b3-parentspanid" not in b3
        assert len(b3["x-b3-traceid"]) == 32
    assert len({b3["x-b3-traceid"] for b3 in sent}) == 3  # three new traces
    assert len(recorder.take(3)) == 3  # the tracer samples new traces
    message = (
        "aiozipkin_client: ignoring a parent from the current span whose ids B3 cannot carry"
        f" (trace_id=1, span_id='{SPAN}', sampled=True, debug=None); the request starts a new"
        " trace. Later ones are logged at debug level."
    )
    # Warned once per trace config: the second session's config warns for itself.
    assert ignored(caplog) == [
        (logging.WARNING, message),
        (logging.DEBUG, message),
        (logging.WARNING, message),
    ]


async def test_an_invalid_explicit_parent_and_an_invalid_current_span_start_a_new_trace(
    make_session: Any,
    backend: Backend,
    recorder: SpanRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiozipkin_client")
    session: aiohttp.ClientSession = make_session()

    with aiozipkin_client.use_span(parent(sampled=1)):
        b3 = await sent_b3(
            session, backend, trace_request_ctx={"span_context": OTHER._replace(trace_id="0" * 16)}
        )

    assert "x-b3-parentspanid" not in b3
    assert b3["x-b3-traceid"] not in (CURRENT.trace_id, OTHER.trace_id)
    recorder.take_one()
    assert [(level, text.split(" whose")[0]) for level, text in ignored(caplog)] == [
        (
            logging.WARNING,
            "aiozipkin_client: ignoring a parent from trace_request_ctx span_context",
        ),
        (logging.DEBUG, "aiozipkin_client: ignoring a parent from the current span"),
    ]
