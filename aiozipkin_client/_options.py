"""Checks of user options where they enter: at creation, with messages that say what to write.

Shared by :func:`~aiozipkin_client.make_trace_config`, :func:`~aiozipkin_client.middleware` /
:func:`~aiozipkin_client.setup` and :class:`~aiozipkin_client.ZipkinTransport`, so that one
mistake gets one message wherever it is made. Past creation, options are trusted.
"""

from __future__ import annotations

import inspect

from aiozipkin.context_managers import _ContextManager
from aiozipkin.tracer import Tracer

__all__ = ("require_callable", "require_collection", "require_tracer")


def require_tracer(tracer: object, where: str) -> None:
    """Raise ``TypeError`` unless ``tracer`` is an aiozipkin ``Tracer``.

    The likely mistake is the result of ``create(...)`` (ours or aiozipkin's) not awaited: it is
    an awaitable context manager, and only awaiting it builds the tracer. Nothing is consumed
    here, so the caller can still await it or use it with ``async with``.
    """
    if isinstance(tracer, Tracer):
        return
    if isinstance(tracer, _ContextManager) or inspect.isawaitable(tracer):
        raise TypeError(
            f"{where}() needs a Tracer, not the awaitable {type(tracer).__name__} that create()"
            " returns: write `tracer = await create(...)` or `async with create(...) as tracer:`"
            f" and pass the tracer to {where}()"
        )
    raise TypeError(f"{where}() needs an aiozipkin Tracer, not {type(tracer).__name__}")


def require_callable(name: str, value: object, *, optional: bool = False) -> None:
    """Raise ``TypeError`` unless ``value`` is callable (or None, when ``optional``)."""
    if callable(value) or (optional and value is None):
        return
    also = " or None" if optional else ""
    raise TypeError(f"{name} must be a function (a callable){also}, not {value!r}")


def require_collection(name: str, value: object, what: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a collection, and not a single string.

    A string is itself a collection (of characters), so without this check it would be taken
    one character at a time: ``"^https://metadata"`` would exclude every URL (``"^"`` matches
    them all) and ``"/health"`` would skip nothing of what was meant.
    """
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{name} takes a collection of {what}, not a single string: write {name}=[{value!r}]"
        )
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"{name} takes a collection of {what}, not a single {type(value).__name__}:"
            f" put it in a list, {name}=[...]"
        ) from None
