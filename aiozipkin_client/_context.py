"""The current span of the running task.

There is exactly one source of truth: aiozipkin's own ``zipkin_context`` context variable, which
its ``aiozipkin.setup(app, tracer)`` server middleware sets for every traced request. Our
:func:`use_span` and our server middleware set the same variable, so the innermost scope always
wins, whichever library opened it, and aiozipkin's own client helper sees our spans too.

Context variables are copied into tasks made with ``asyncio.create_task`` and ``gather``, so a
client call made in a task spawned by a handler has the handler's span as its parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from aiozipkin.span import SpanAbc

__all__ = ("current_context", "to_context", "use_span")


def current_context() -> TraceContext | None:
    """The trace context of the span that is current in this task, if any."""
    return zipkin_context.get()


def to_context(value: object) -> TraceContext | None:
    """Accept a TraceContext or an aiozipkin span; anything else is None."""
    if isinstance(value, TraceContext):
        return value
    if isinstance(value, SpanAbc):
        return value.context
    return None


@contextmanager
def use_span(span: SpanAbc | TraceContext) -> Iterator[TraceContext]:
    """Make ``span`` the parent of client requests made inside the ``with`` block.

    Works for the current task and the tasks it creates inside the block. Accepts an aiozipkin
    span or a bare ``TraceContext``; yields the context.

    >>> import aiozipkin_client
    >>> async def job(tracer, session):                                    # doctest: +SKIP
    ...     with tracer.new_trace(sampled=True) as span:
    ...         with aiozipkin_client.use_span(span):
    ...             await session.get("http://inventory.internal/items")  # child of span
    """
    context = to_context(span)
    if context is None:
        raise TypeError(
            f"use_span() takes an aiozipkin span or TraceContext, not {type(span).__name__}"
        )
    token = zipkin_context.set(context)
    try:
        yield context
    finally:
        zipkin_context.reset(token)
