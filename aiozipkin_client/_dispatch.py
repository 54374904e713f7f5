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
aiosignal refuses; other than three positional arguments) goes through aiosignal's own
``send()`` unchanged. One difference remains: ``send()`` takes no keyword arguments, which
aiohttp never passes (see ``DirectSignal.send``).

Our handlers do their work without awaiting anything, so a coroutine per signal is one layer
more than they need. A signal that knows a plain function doing what its receiver does (the
client module's handlers, each behind a receiver for aiosignal's path) calls it and returns
:data:`NOTHING_TO_DO`, an awaitable that is already finished: a coroutine object made, run
and discarded costs about twice what the call does. And most signals of a request that is not
recorded (not sampled, excluded, or already ended) have nothing to do: a signal given an *idle*
rule, an attribute of the request's context and the value that means so, does not call the
function at all then. The rules are the client module's (``client._IDLE``), which knows its
state.

aiohttp's ``TraceConfig`` keeps each signal in an attribute of the same name with an
underscore (``_on_request_start`` behind the ``on_request_start`` property), in every version
we support. :func:`use_direct_signals` replaces a signal only where the property then returns
the replacement, so an aiohttp that keeps its signals elsewhere gets its own signals, untouched:
slower, never wrong. The test suite checks the replacement took on each supported version.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, Final

import aiohttp
from aiosignal import Signal

__all__ = ("NOTHING_TO_DO", "DirectSignal", "use_direct_signals")


@types.coroutine
def _finished() -> Generator[None, None, None]:
    return
    yield  # pragma: no cover - makes this a generator function


_finished_once = _finished()
for _ in _finished_once:  # pragma: no cover - it yields nothing
    pass

#: An awaitable that is already finished: awaiting it returns None at once, without a frame.
#: (A generator-based coroutine that has returned: ``await`` is ``yield from``, and
#: ``yield from`` a finished generator returns None, as often as it is done.)
NOTHING_TO_DO: Final[Awaitable[object]] = _finished_once


#: Marks an argument aiohttp did not pass (it always passes all three).
_ABSENT: Final = object()


#: A receiver a signal is made for, and a plain function that does what it does.
Handler = tuple[Callable[..., Awaitable[object]], Callable[..., object]]


class DirectSignal(Signal):
    """An aiosignal ``Signal`` that hands over its only receiver's awaitable (see the module).

    ``handler=(receiver, function)`` names the receiver the signal is made for and a plain
    function that does the same: when that receiver is the only one, ``send()`` calls the
    function and returns :data:`NOTHING_TO_DO`, without a coroutine. With ``idle=(name,
    value)`` too, a request context whose attribute ``name`` is ``value`` means the function
    has nothing to do, and it is not called at all.
    """

    __slots__ = ("_call", "_handler", "_idle_name", "_idle_value", "_only")

    def __init__(
        self,
        owner: object,
        idle: tuple[str, object] | None = None,
        handler: Handler | None = None,
    ) -> None:
        super().__init__(owner)
        self._only: Callable[..., Awaitable[object]] | None = None
        self._call: Callable[..., object] | None = None
        self._handler = handler
        self._idle_name: str | None = None if idle is None else idle[0]
        self._idle_value: object = None if idle is None else idle[1]

    def freeze(self) -> None:
        super().freeze()
        # Frozen, the list of receivers can no longer change.
        only = self[0] if len(self) == 1 else None
        handler = self._handler
        if handler is not None and only is handler[0]:
            self._call = handler[1]
        else:
            self._only = only

    # Not a coroutine function: it returns an awaitable for aiohttp to await, at once.
    # aiohttp passes its three arguments by position, in every version: named here, they cost
    # less than a tuple of them would. No **kwargs: collecting an empty dict on every signal
    # costs about a tenth of a handler, and aiohttp never sends a trace signal keywords (a call
    # that did gets Python's TypeError, where aiosignal would pass them on).
    def send(  # type: ignore[override]
        self,
        session: object = _ABSENT,
        ctx: object = _ABSENT,
        params: object = _ABSENT,
        /,
        *args: Any,
    ) -> Awaitable[object]:
        if params is not _ABSENT and not args:
            call = self._call
            if call is not None:
                name = self._idle_name
                if name is None or getattr(ctx, name, self._idle_value) is not self._idle_value:
                    call(session, ctx, params)
                return NOTHING_TO_DO
            only = self._only
            if only is not None:
                return only(session, ctx, params)
        given = (*(arg for arg in (session, ctx, params) if arg is not _ABSENT), *args)
        sent: Awaitable[object] = Signal.send(self, *given)
        return sent


def use_direct_signals(
    config: aiohttp.TraceConfig,
    names: Iterable[str],
    idle: Mapping[str, tuple[str, object]] | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> bool:
    """Give ``config`` a :class:`DirectSignal` for each of ``names`` that has no receiver yet,
    with its ``idle`` rule and its ``handler``, if any, by signal name.

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
        direct = DirectSignal(
            config,
            None if idle is None else idle.get(name),
            None if handlers is None else handlers.get(name),
        )
        setattr(config, private, direct)
        if getattr(config, name) is not direct:
            setattr(config, private, current)
            replaced = False
    return replaced
