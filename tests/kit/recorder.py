"""A strict span recorder: an aiozipkin transport that fails the test on anything unexpected.

Every reported span must be taken by the test (``take``/``take_one``/``take_all``); at the end
of the test :meth:`SpanRecorder.verify` fails on a span nobody checked, on a span reported twice,
and on any span the tracer still holds as unfinished.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiozipkin.record import Record
from aiozipkin.tracer import Tracer
from aiozipkin.transport import TransportABC

__all__ = ("SpanRecorder", "as_dict")


def as_dict(record: Record) -> dict[str, Any]:
    """The record as Zipkin v2 JSON would carry it: absent values omitted."""
    raw = record.asdict()
    span: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or value == [] or value == {} or value is False:
            continue
        span[key] = value
    return span


class SpanRecorder(TransportABC):
    """Collects reported spans; every one must be taken and none may come twice."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str, bool]] = set()
        self.duplicates: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def send(self, record: Record) -> None:
        span = as_dict(record)
        # A server that joins its caller shares the caller's span id: the two halves of one
        # RPC are told apart by the shared flag, and only a repeat of both is a duplicate.
        key = (span["traceId"], span["id"], span.get("shared", False))
        if key in self._seen:
            self.duplicates.append(span)
            return
        self._seen.add(key)
        self._pending.append(span)
        self._arrived.set()

    async def close(self) -> None:
        return None

    def take_all(self) -> list[dict[str, Any]]:
        """Every span reported so far and not yet taken, in report order."""
        taken, self._pending = self._pending, []
        return taken

    def take(self, count: int) -> list[dict[str, Any]]:
        """Exactly ``count`` spans; fails if there are fewer or more."""
        spans = self.take_all()
        assert len(spans) == count, f"expected {count} spans, got {len(spans)}: {spans}"
        return spans

    def take_one(self) -> dict[str, Any]:
        return self.take(1)[0]

    async def wait_for(self, count: int, timeout: float = 5.0, about: object = None) -> None:
        """Wait (bounded) until at least ``count`` untaken spans have arrived.

        On time out the failure lists the spans that did arrive, and ``about`` (what the other
        side said, say), so a lost span shows why rather than as a bare ``TimeoutError``.
        """

        async def arrived() -> None:
            while len(self._pending) < count:
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            context = "" if about is None else f"; about it: {about!r}"
            raise AssertionError(
                f"waited {timeout} s for {count} span(s), {len(self._pending)} arrived:"
                f" {self._pending}{context}"
            ) from None

    def expect_none(self) -> None:
        assert self._pending == [], f"unexpected spans: {self._pending}"

    def verify(self, tracer: Tracer | None = None) -> None:
        """End-of-test checks: nothing unchecked, nothing twice, nothing left open."""
        problems: list[str] = []
        if self._pending:
            problems.append(
                f"{len(self._pending)} span(s) reported but never checked: {self._pending}"
            )
        if self.duplicates:
            problems.append(f"span(s) reported twice: {self.duplicates}")
        if tracer is not None and tracer._records:
            problems.append(f"tracer still holds unfinished spans: {list(tracer._records)}")
        assert not problems, "; ".join(problems)
