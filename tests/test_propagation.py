"""B3 inject and extract, from the examples in b3-propagation.md and its RATIONALE."""

from __future__ import annotations

import pytest
from aiozipkin.helpers import TraceContext
from multidict import CIMultiDict

from aiozipkin_client.propagation import (
    B3Format,
    Extracted,
    extract,
    inject,
    is_valid_span_id,
    is_valid_trace_id,
)

# The ids the spec uses in its examples.
TRACE_128 = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"
PARENT = "05e3ac9a4f6e3b90"
TRACE_64 = "463ac35c9f6413ad"


def ctx(
    trace_id: str = TRACE_128,
    span_id: str = SPAN,
    parent_id: str | None = PARENT,
    sampled: bool | None = True,
    debug: bool = False,
) -> TraceContext:
    return TraceContext(trace_id, parent_id, span_id, sampled, debug, False)


def injected(context: TraceContext, fmt: B3Format = B3Format.MULTI) -> dict[str, str]:
    headers: CIMultiDict[str] = CIMultiDict()
    inject(headers, context, fmt)
    return dict(headers)


# -- inject -----------------------------------------------------------------------------------


def test_multi_header_example_from_the_spec() -> None:
    assert injected(ctx()) == {
        "X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7",
        "X-B3-SpanId": "e457b5a2e4d86bd1",
        "X-B3-ParentSpanId": "05e3ac9a4f6e3b90",
        "X-B3-Sampled": "1",
    }


def test_single_header_example_from_the_spec() -> None:
    assert injected(ctx(), B3Format.SINGLE) == {
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
    }


def test_root_span_has_no_parent_header() -> None:
    assert injected(ctx(parent_id=None)) == {
        "X-B3-TraceId": TRACE_128,
        "X-B3-SpanId": SPAN,
        "X-B3-Sampled": "1",
    }
    # "A sampled root span would look like"
    assert injected(ctx(parent_id=None), B3Format.SINGLE) == {
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    }


def test_deny_still_sends_ids_with_sampled_zero() -> None:
    headers = injected(ctx(sampled=False))
    assert headers["X-B3-Sampled"] == "0"
    assert headers["X-B3-TraceId"] == TRACE_128
    assert headers["X-B3-SpanId"] == SPAN
    assert "X-B3-Flags" not in headers
    assert injected(ctx(sampled=False), B3Format.SINGLE)["b3"].split("-")[2] == "0"


def test_debug_sends_flags_1_and_no_sampled_header() -> None:
    headers = injected(ctx(debug=True))
    assert headers["X-B3-Flags"] == "1"
    assert "X-B3-Sampled" not in headers
    # "A debug RPC child span would look like"
    assert injected(ctx(debug=True), B3Format.SINGLE) == {
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90"
    }


def test_defer_sends_no_sampling_state() -> None:
    headers = injected(ctx(sampled=None))
    assert "X-B3-Sampled" not in headers
    assert "X-B3-Flags" not in headers
    # "A not yet sampled root span would look like"; the positional parent cannot follow.
    assert injected(ctx(sampled=None), B3Format.SINGLE) == {
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"
    }


@pytest.mark.parametrize("context", [ctx(), ctx(sampled=False), ctx(debug=True), ctx(sampled=None)])
def test_flags_zero_is_never_sent(context: TraceContext) -> None:
    for fmt in B3Format:
        assert injected(context, fmt).get("X-B3-Flags") != "0"


def test_both_formats_carry_the_same_context() -> None:
    headers = injected(ctx(), B3Format.BOTH)
    assert headers["b3"] == f"{TRACE_128}-{SPAN}-1-{PARENT}"
    assert headers["X-B3-SpanId"] == SPAN


def test_inject_replaces_existing_b3_headers_in_any_case() -> None:
    headers: CIMultiDict[str] = CIMultiDict(
        [
            ("x-b3-traceid", "0000000000000001"),
            ("X-B3-TRACEID", "0000000000000002"),
            ("x-b3-flags", "0"),
            ("B3", "0"),
            ("Accept", "text/plain"),
        ]
    )
    inject(headers, ctx(parent_id=None))
    assert list(headers.items()) == [
        ("Accept", "text/plain"),
        ("X-B3-TraceId", TRACE_128),
        ("X-B3-SpanId", SPAN),
        ("X-B3-Sampled", "1"),
    ]


# -- extract ----------------------------------------------------------------------------------


def test_extract_multi_header_example() -> None:
    found = extract(
        CIMultiDict(
            {
                "X-B3-TraceId": TRACE_128,
                "X-B3-ParentSpanId": PARENT,
                "X-B3-SpanId": SPAN,
                "X-B3-Sampled": "1",
            }
        )
    )
    assert found == Extracted(context=ctx(), sampled=True, debug=False)


def test_extract_single_header_example() -> None:
    found = extract({"b3": f"{TRACE_128}-{SPAN}-1-{PARENT}"})
    assert found == Extracted(context=ctx(), sampled=True, debug=False)


@pytest.mark.parametrize(
    ("value", "sampled", "debug"),
    [("0", False, False), ("1", True, False), ("d", True, True)],
)
def test_extract_sampling_only_single_header(value: str, sampled: bool, debug: bool) -> None:
    assert extract({"b3": value}) == Extracted(context=None, sampled=sampled, debug=debug)


def test_extract_sampling_only_multi_header() -> None:
    assert extract({"X-B3-Sampled": "0"}) == Extracted(context=None, sampled=False, debug=False)
    assert extract({"X-B3-Flags": "1"}) == Extracted(context=None, sampled=True, debug=True)


def test_extract_debug_from_flags_implies_sampled() -> None:
    found = extract({"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-Flags": "1"})
    assert found.context == ctx(trace_id=TRACE_64, parent_id=None, debug=True)
    assert found.debug


def test_flags_other_than_1_are_ignored() -> None:
    found = extract(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-Flags": "0", "X-B3-Sampled": "0"}
    )
    assert found.context == ctx(trace_id=TRACE_64, parent_id=None, sampled=False)


def test_extract_defer_keeps_ids_without_decision() -> None:
    found = extract({"b3": f"{TRACE_128}-{SPAN}"})
    assert found == Extracted(context=ctx(parent_id=None, sampled=None), sampled=None, debug=False)


def test_single_header_takes_precedence_over_multi() -> None:
    found = extract(
        {
            "b3": f"{TRACE_128}-{SPAN}-0",
            "X-B3-TraceId": TRACE_64,
            "X-B3-SpanId": PARENT,
            "X-B3-Sampled": "1",
        }
    )
    assert found.context == ctx(parent_id=None, sampled=False)


def test_first_value_wins() -> None:
    headers = CIMultiDict([("X-B3-Sampled", "1"), ("X-B3-Sampled", "0")])
    assert extract(headers).sampled is True


def test_malformed_single_header_falls_back_to_multi() -> None:
    found = extract({"b3": "garbage", "X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN})
    assert found.context == ctx(trace_id=TRACE_64, parent_id=None, sampled=None)


MALFORMED_MULTI = [
    pytest.param({"X-B3-TraceId": TRACE_64}, id="trace-id-without-span-id"),
    pytest.param({"X-B3-SpanId": SPAN}, id="span-id-without-trace-id"),
    pytest.param({"X-B3-TraceId": "463ac35c9f6413a", "X-B3-SpanId": SPAN}, id="short-trace-id"),
    pytest.param({"X-B3-TraceId": TRACE_64 + "00", "X-B3-SpanId": SPAN}, id="18-char-trace-id"),
    pytest.param({"X-B3-TraceId": TRACE_64.upper(), "X-B3-SpanId": SPAN}, id="upper-hex"),
    pytest.param({"X-B3-TraceId": "463ac35c9f6413az", "X-B3-SpanId": SPAN}, id="not-hex"),
    # Sixteen characters, fourteen of them hex digits in whole bytes: white space that a hex
    # decoder would skip is still not an id.
    pytest.param({"X-B3-TraceId": "463a c35c9f6413 ", "X-B3-SpanId": SPAN}, id="spaced-trace-id"),
    pytest.param(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": "\ta2fb4a1d1a96d3 "}, id="spaced-span-id"
    ),
    pytest.param({"X-B3-TraceId": "0" * 32, "X-B3-SpanId": SPAN}, id="all-zero-trace-id"),
    pytest.param({"X-B3-TraceId": TRACE_64, "X-B3-SpanId": "0" * 16}, id="all-zero-span-id"),
    pytest.param(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": "-"},
        id="hyphen-parent",
    ),
    pytest.param(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-ParentSpanId": ""},
        id="empty-parent",
    ),
    pytest.param(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-Sampled": ""}, id="empty-sampled"
    ),
    pytest.param(
        {"X-B3-TraceId": TRACE_64, "X-B3-SpanId": SPAN, "X-B3-Sampled": "true"}, id="sampled-true"
    ),
    pytest.param({"X-B3-TraceId": "", "X-B3-SpanId": ""}, id="empty-ids"),
]


@pytest.mark.parametrize("headers", MALFORMED_MULTI)
def test_malformed_multi_headers_are_discarded(headers: dict[str, str]) -> None:
    assert extract(headers) == Extracted(context=None, sampled=None, debug=False)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-",
        "true",
        "2",
        f"{TRACE_128}",
        f"{TRACE_128}-",
        f"{TRACE_128}-{SPAN}-",
        f"{TRACE_128}-{SPAN}-x",
        f"{TRACE_128}-{SPAN}-1-",
        f"{TRACE_128}-{SPAN}-1-{PARENT}-extra",
        f"{TRACE_128.upper()}-{SPAN}-1",
        f"{'0' * 32}-{SPAN}-1",
        f"{TRACE_128}-{'0' * 16}-1",
        f"{TRACE_128}-{SPAN}-1-{'0' * 16}",
        f"{TRACE_128}-{SPAN[:-1]}-1",
        f"{TRACE_128[:30]}  -{SPAN}-1",
        f"{TRACE_128}- {SPAN[:14]} -1",
    ],
)
def test_malformed_single_header_is_discarded(value: str) -> None:
    assert extract({"b3": value}) == Extracted(context=None, sampled=None, debug=False)


def test_id_validation() -> None:
    assert is_valid_trace_id(TRACE_64)
    assert is_valid_trace_id(TRACE_128)
    assert is_valid_trace_id("0000000000000000" + TRACE_64)
    assert not is_valid_trace_id("0" * 16)
    assert not is_valid_trace_id(TRACE_128 + "0")
    assert not is_valid_trace_id(" " + TRACE_128[:30] + " ")
    assert not is_valid_trace_id(TRACE_64[:14] + "\n\n")
    assert not is_valid_span_id(SPAN[:14] + "  ")
    assert is_valid_span_id(SPAN)
    assert not is_valid_span_id(TRACE_128)
