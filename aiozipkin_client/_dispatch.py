"""How aiohttp reaches our signal handlers: directly, when they are a signal's only receiver.

aiohttp sends each trace signal through three coroutines: its ``Trace.send_*`` method awaits
the signal's ``send()`` (aiosignal's ``Signal``), which loops over the receivers and awaits each.
The middle layer costs about 2,000 instructions a signal on CPython 3.11 (a coroutine, packing
and unpacking the arguments, an iterator over the receivers), as much as most of our handlers,
and a request sends five to twenty signals. :class:`DirectSignal` is that ``Signal`` with one
difference: frozen with exactly one receiver, ``send()`` returns that receiver's own awaitable,
which aiohttp then awaits in place of the loop's. The receiver runs at the same moment, with
the same arguments, and what it raises propagates the same way. (What it returns reaches
aiohttp, where aiosignal's ``send()`` returns None; aiohttp discards both, and ours return
None.)

Anything else (no receiver, several: a user appended one of their own; not frozen yet, which
aiosignal refuses) goes through aiosignal's own ``send()`` unchanged.

aiohttp's ``TraceConfig`` keeps each signal in an attribute of the same name with an
underscore (``_on_request_start`` behind the ``on_request_start`` property), in every version
we support. :func:`use_direct_signals` replaces a signal only where the property then returns
the replacement, so an aiohttp that keeps its signals elsewhere gets its own signals, untouched:
slower, never wrong. The test suite checks the replacement took on each supported version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiosignal import Signal

__all__ = ("DirectSignal", "use_direct_signals")


class DirectSignal(Signal):
    """An aiosignal ``Signal`` that hands over its only receiver's awaitable (see the module)."""

    __slots__ = ("_only",)

    def __init__(self, owner: object) -> None:
        super().__init__(owner)
        self._only: Callable[..., Awaitable[object]] | None = None

    def freeze(self) -> None:
        super().freeze()
        # Frozen, the list of receivers can no longer change.
        self._only = self[0] if len(self) == 1 else None

    # Not a coroutine function: it returns the receiver's coroutine, or aiosignal's own send().
    def send(self, *args: Any, **kwargs: Any) -> Awaitable[object]:  # type: ignore[override]
        only = self._only
        if only is not None and not kwargs:
            # aiohttp passes its three arguments by position; passing on an empty **kwargs
            # would cost a tenth of what this saves.
            return only(*args)
        return Signal.send(self, *args, **kwargs)


def use_direct_signals(config: aiohttp.TraceConfig, names: Iterable[str]) -> bool:
    """Give ``config`` a :class:`DirectSignal` for each of ``names`` that has no receiver yet.

    Call it before appending the receivers. Returns True when every signal was replaced; a
    signal aiohttp does not keep where expected is left as it is.
    """
    replaced = True
    for name in names:
        private = "_" + name
        current: Signal = getattr(config, name)
        if getattr(config, private, None) is not current or len(current):
            replaced = False
            continue
        direct = DirectSignal(config)
        setattr(config, private, direct)
        if getattr(config, name) is not direct:
            setattr(config, private, current)
            replaced = False
    return replaced
