"""B3 rules that a regression could drop silently: each test fails if its rule is removed.

Written from b3-propagation.md (identifier lengths, debug in the single header, partial
identifiers) and from the module's own promises (malformed input is logged at debug level and
yields one shared, immutable empty result).
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from aiozipkin.helpers import TraceContext

from aiozipkin_client.propagation import (
    EMPTY,
    Extracted,
    extract,
    is_valid_span_id,
    is_valid_trace_id,
)

TRACE_128 = "80f198ee56343ba864fe8b2a57d3eff7"
TRACE_64 = "463ac35c9f6413ad"
SPAN = "e457b5a2e4d86bd1"
PARENT = "05e3ac9a4f6e3b90"

# -- identifier lengths: the trace id is 16 or 32 lower-hex characters, nothing else ---------

# Multiples of 16 above 32 match "one or more groups of 16": only 1 or 2 groups are valid.
TOO_LONG_TRACE_IDS = [
    pytest.param(TRACE_128 + TRACE_64, id="48-hex"),
    pytest.param(TRACE_128 * 2, id="64-hex"),
]


@pytest.mark.parametrize("trace_id", [TRACE_64, TRACE_128])
def test_16_and_32_hex_trace_ids_are_valid(trace_id: str) -> None:
    assert is_valid_trace_id(trace_id)
    found = extract({"X-B3-TraceId": trace_id, "X-B3-SpanId": SPAN})
    assert found.context is not None
    assert found.context.trace_id == trace_id


@pytest.mark.parametrize("trace_id", TOO_LONG_TRACE_IDS)
def test_longer_trace_ids_are_invalid(trace_id: str) -> None:
    assert not is_valid_trace_id(trace_id)


@pytest.mark.parametrize("trace_id", TOO_LONG_TRACE_IDS)
def test_longer_trace_id_is_discarded_in_the_multi_header(trace_id: str) -> None:
    assert extract({"X-B3-TraceId": trace_id, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}) == EMPTY


@pytest.mark.parametrize("trace_id", TOO_LONG_TRACE_IDS)
def test_longer_trace_id_is_discarded_in_the_single_header(trace_id: str) -> None:
    assert extract({"b3": f"{trace_id}-{SPAN}-1"}) == EMPTY


@pytest.mark.parametrize("span_id", [TRACE_128, SPAN[:8], SPAN + "0", SPAN.upper()])
def test_span_ids_are_exactly_16_lower_hex(span_id: str) -> None:
    assert not is_valid_span_id(span_id)
    assert extract({"X-B3-TraceId": TRACE_64, "X-B3-SpanId": span_id}) == EMPTY
    assert extract({"b3": f"{TRACE_64}-{span_id}-1"}) == EMPTY


def test_ids_with_some_zeros_are_valid() -> None:
    # Only the all-zero id is invalid; leading zeros are ordinary hex digits.
    assert is_valid_trace_id("0" * 31 + "1")
    assert is_valid_span_id("0" * 15 + "1")


# -- debug in the single header: "{trace}-{span}-d", debug implies accept -----------------


def test_single_header_debug_with_ids() -> None:
    found = extract({"b3": f"{TRACE_128}-{SPAN}-d"})
    assert found == Extracted(
        context=TraceContext(TRACE_128, None, SPAN, True, True, False), sampled=True, debug=True
    )


def test_single_header_debug_with_ids_and_parent() -> None:
    found = extract({"b3": f"{TRACE_128}-{SPAN}-d-{PARENT}"})
    assert found.context == TraceContext(TRACE_128, PARENT, SPAN, True, True, False)
    assert (found.sampled, found.debug) == (True, True)


def test_single_header_state_is_case_sensitive() -> None:
    # Lower-hex like the ids: "D" is not the debug state, so the header is malformed.
    assert extract({"b3": f"{TRACE_128}-{SPAN}-D"}) == EMPTY


# -- partial identifiers: "unless propagating only the sampling state", both ids are required --


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}, id="span-id-and-sampled"),
        pytest.param({"X-B3-ParentSpanId": PARENT, "X-B3-Sampled": "1"}, id="parent-and-sampled"),
        pytest.param({"X-B3-TraceId": TRACE_64, "X-B3-Sampled": "1"}, id="trace-id-and-sampled"),
    ],
)
def test_partial_ids_discard_the_sampling_decision_too(headers: dict[str, str]) -> None:
    # Not a sampling-only header set (it carries ids) and not a context (an id is missing):
    # malformed, so the receiver starts over rather than trusting half of it.
    assert extract(headers) == EMPTY


def test_sampling_only_multi_header_keeps_its_decision() -> None:
    # The counterpart of the partial case: no id at all is a valid predefined decision.
    assert extract({"X-B3-Sampled": "1"}) == Extracted(context=None, sampled=True, debug=False)


# -- malformed input: logged at debug level, and one shared empty result ---------------------


def test_malformed_single_header_is_logged_with_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiozipkin_client"):
        extract({"b3": "garbage"})

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "ignoring malformed b3 header 'garbage'")
    ]


def test_malformed_multi_headers_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiozipkin_client"):
        extract({"X-B3-TraceId": TRACE_64})

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "ignoring malformed X-B3 headers")
    ]


def test_valid_headers_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiozipkin_client"):
        extract({"b3": f"{TRACE_128}-{SPAN}-1"})
        extract({"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN})
        extract({})

    assert caplog.records == []


def test_malformed_headers_return_the_shared_empty_result() -> None:
    assert extract({"X-B3-TraceId": TRACE_64}) is EMPTY
    assert extract({"b3": "garbage", "X-B3-SpanId": SPAN}) is EMPTY


def test_the_shared_empty_result_cannot_be_changed() -> None:
    # Every caller that got malformed headers holds this one object: a change made by one
    # request would leak into the next.
    empty = extract({"X-B3-TraceId": TRACE_64})
    for field, value in (("sampled", True), ("debug", True), ("context", None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(empty, field, value)
    assert empty == Extracted(context=None, sampled=None, debug=False)
