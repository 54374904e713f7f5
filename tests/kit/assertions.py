"""Assertions shared by the conformance tests: spans against parents and received headers."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiozipkin.helpers import TraceContext
from yarl import URL

from .servers import Received

__all__ = ("assert_client_span", "assert_propagated", "outcome", "scrubbed")

#: What a caller got from a request: its status and body, or its exception's type and text.
Outcome = tuple[int, str] | tuple[str, str]


async def outcome(session: aiohttp.ClientSession, url: URL, **kwargs: Any) -> Outcome:
    """GET ``url`` and read the body as text: ``(status, body)``, or ``(exception type name,
    message)`` when it fails. Compared between a traced session and an untraced one, it shows
    that tracing changed nothing the caller sees."""
    try:
        async with session.get(url, **kwargs) as response:
            return response.status, await response.text()
    except Exception as exc:
        return type(exc).__name__, str(exc)


def assert_client_span(span: dict[str, Any], parent: TraceContext | None) -> None:
    """A CLIENT span, child of ``parent`` (same trace), or the root of a new trace."""
    assert span["kind"] == "CLIENT"
    assert len(span["id"]) == 16
    if parent is None:
        assert "parentId" not in span
        assert len(span["traceId"]) == 32
    else:
        assert span["traceId"] == parent.trace_id
        assert span["parentId"] == parent.span_id
        assert span["id"] != parent.span_id


def assert_propagated(received: Received, span: dict[str, Any], *, sampled: str = "1") -> None:
    """The server received exactly this span's ids in B3 multi headers, spec-exact."""
    expected = {"x-b3-traceid": span["traceId"], "x-b3-spanid": span["id"], "x-b3-sampled": sampled}
    if "parentId" in span:
        expected["x-b3-parentspanid"] = span["parentId"]
    assert received.b3() == expected


def scrubbed(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by "?", as a span batch is written (UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {scrubbed(key): scrubbed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value
