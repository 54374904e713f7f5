"""B3 propagation: inject a trace context into headers and extract one from them.

Everything here follows ``b3-propagation.md`` to the letter and is a pure function of its input:

* identifiers are lower-hex, 16 or 32 characters for the trace id and 16 for span ids, and never
  all zeros;
* the sampling state has four values: defer (absent), deny (``0``), accept (``1``) and debug
  (``X-B3-Flags: 1`` in the multi-header form, ``d`` in the single header); debug implies accept,
  so a debug context sends no ``X-B3-Sampled`` header, and ``X-B3-Flags: 0`` is never sent;
* the single ``b3`` header takes precedence over the ``X-B3-*`` headers when extracting.

Malformed input is never an error for the caller: :func:`extract` returns an empty result (a new
trace starts) and logs at debug level why the headers were ignored.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiozipkin.helpers import TraceContext
from multidict import MultiMapping, MutableMultiMapping, istr

__all__ = (
    "B3_HEADERS",
    "B3Format",
    "Extracted",
    "extract",
    "inject",
    "inject_ids",
    "is_valid_parent",
    "is_valid_span_id",
    "is_valid_trace_id",
    "remove_b3_headers",
)

log = logging.getLogger("aiozipkin_client")

# istr, like aiohttp's own header names: case-insensitive mappings then skip folding the case
# of the name on every lookup. They are str, and go on the wire spelled as here.
TRACE_ID: Final = istr("X-B3-TraceId")
SPAN_ID: Final = istr("X-B3-SpanId")
PARENT_SPAN_ID: Final = istr("X-B3-ParentSpanId")
SAMPLED: Final = istr("X-B3-Sampled")
FLAGS: Final = istr("X-B3-Flags")
SINGLE: Final = istr("b3")

#: Every header name this module reads or writes (HTTP header names are case-insensitive).
B3_HEADERS: Final = (TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS, SINGLE)

#: The ids no span may have.
_ZEROS_16: Final = "0" * 16
_ZEROS_32: Final = "0" * 32
_from_hex: Final = bytes.fromhex


class B3Format(enum.Enum):
    """Which B3 encoding to send on outgoing requests."""

    #: ``X-B3-TraceId``, ``X-B3-SpanId``, ``X-B3-ParentSpanId``, ``X-B3-Sampled`` / ``X-B3-Flags``.
    MULTI = "multi"
    #: One ``b3: {trace}-{span}-{state}-{parent}`` header.
    SINGLE = "single"
    #: Both encodings, for receivers that read only one of them.
    BOTH = "both"


# The members, read once: on CPython 3.11 every ``B3Format.X`` goes through the enum type's
# __getattr__ (about 0.1 us), and inject() runs for every request.
_MULTI: Final = B3Format.MULTI
_SINGLE: Final = B3Format.SINGLE


@dataclass(frozen=True, slots=True)
class Extracted:
    """What :func:`extract` found in a set of headers.

    ``context`` holds the identifiers when they were present and valid; its ``sampled`` and
    ``debug`` fields carry the sampling state. When ``context`` is None, ``sampled`` and ``debug``
    hold a sampling decision sent without identifiers (``b3: 0``, ``X-B3-Sampled: 1``, ...), or
    nothing at all (``sampled is None and not debug``): then the receiver decides.
    """

    context: TraceContext | None
    sampled: bool | None
    debug: bool


EMPTY: Final = Extracted(context=None, sampled=None, debug=False)


def is_valid_trace_id(value: str) -> bool:
    """True for 16 or 32 lower-hex characters that are not all zeros."""
    size = len(value)
    if size == 32:
        return value != _ZEROS_32 and _is_lower_hex(value)
    return size == 16 and value != _ZEROS_16 and _is_lower_hex(value)


def is_valid_span_id(value: str) -> bool:
    """True for 16 lower-hex characters that are not all zeros."""
    return len(value) == 16 and value != _ZEROS_16 and _is_lower_hex(value)


def _is_lower_hex(value: str) -> bool:
    """True when ``value`` is lower-hex digits only, an even number of them.

    Decoded and encoded again in C: anything else (upper case, a sign, a prefix, the white
    space ``fromhex`` skips, an odd digit) does not come back the same. A regular expression
    costs about three times as much, and every request's parent is checked.
    """
    try:
        return _from_hex(value).hex() == value
    except ValueError:
        return False


def is_valid_parent(context: TraceContext) -> bool:
    """True when ``context`` can be the parent of a new span exactly as B3 carries it.

    Its trace and span ids are strings the spec allows (see :func:`is_valid_trace_id` and
    :func:`is_valid_span_id`), its sampling state is True, False or None (defer) and its debug flag
    a bool. Contexts that did not come through :func:`extract` (aiozipkin's own server middleware
    copies header values unchecked; users build ``TraceContext`` by hand) can be anything.
    The parent's own ``parent_id`` is not checked: a child never sends it.
    """
    trace_id, span_id, sampled, debug = (
        context.trace_id,
        context.span_id,
        context.sampled,
        context.debug,
    )
    # is_valid_trace_id() and is_valid_span_id(), written out: every request's parent is
    # checked, and the calls would cost a third of what the checks do.
    if not (
        isinstance(trace_id, str)
        and isinstance(span_id, str)
        and (len(trace_id) == 32 or len(trace_id) == 16)
        and len(span_id) == 16
        and trace_id != _ZEROS_32
        and trace_id != _ZEROS_16
        and span_id != _ZEROS_16
        and (sampled is None or type(sampled) is bool)
        and type(debug) is bool
    ):
        return False
    # Both ids in one decoding: each has an even length, so the pair is lower hex exactly
    # when each is.
    ids = trace_id + span_id
    try:
        return _from_hex(ids).hex() == ids
    except ValueError:
        return False


def remove_b3_headers(headers: MutableMultiMapping[str]) -> None:
    """Remove every B3 header, whatever its case or how often it occurs."""
    for name in B3_HEADERS:
        # A lookup is cheaper than a removal that finds nothing, which is the usual case.
        if name in headers:
            headers.popall(name)


def inject(
    headers: MutableMultiMapping[str], context: TraceContext, fmt: B3Format = B3Format.MULTI
) -> None:
    """Write ``context`` into ``headers`` in the chosen encoding.

    B3 headers already present (set by the caller, or by an earlier redirect hop) are removed
    first, so the receiver never sees two values or a mix of two contexts.

    >>> from multidict import CIMultiDict
    >>> h = CIMultiDict()
    >>> ctx = TraceContext("463ac35c9f6413ad48485a3953bb6124", None, "a2fb4a1d1a96d312",
    ...                    True, False, False)
    >>> inject(h, ctx, B3Format.SINGLE)
    >>> h["b3"]
    '463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1'
    """
    inject_ids(
        headers,
        context.trace_id,
        context.span_id,
        context.parent_id,
        context.sampled,
        context.debug,
        fmt,
    )


def inject_ids(
    headers: MutableMultiMapping[str],
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    sampled: bool | None,
    debug: bool,
    fmt: B3Format,
) -> None:
    """:func:`inject` of a context given as its fields, for a caller that has no context object.

    A request that is not sampled needs a ``TraceContext`` only to send its ids; making one would
    cost it more than the rest of its work.
    """
    if headers:
        # remove_b3_headers(), written out (it runs for every request); nothing to look for in
        # the empty headers most requests start with.
        for name in B3_HEADERS:
            if name in headers:
                headers.popall(name)
    # No B3 header is left, so add() does what assignment would, without looking for one.
    add = headers.add
    if fmt is not _SINGLE:
        add(TRACE_ID, trace_id)
        add(SPAN_ID, span_id)
        if parent_id is not None:
            add(PARENT_SPAN_ID, parent_id)
        if debug:
            # Debug implies accept: the spec says not to send X-B3-Sampled as well.
            add(FLAGS, "1")
        elif sampled is not None:
            add(SAMPLED, "1" if sampled else "0")
    if fmt is not _MULTI:
        add(SINGLE, single_header_value(trace_id, span_id, parent_id, sampled, debug))


def single_header_value(
    trace_id: str, span_id: str, parent_id: str | None, sampled: bool | None, debug: bool
) -> str:
    """The ``b3`` single-header value for these fields of a context.

    A deferred decision has no sampling field; as the fields are positional, the parent span id
    cannot follow then and is left out (it is optional in the single encoding).
    """
    value = f"{trace_id}-{span_id}"
    state = _state_char(sampled, debug)
    if state is None:
        return value
    value = f"{value}-{state}"
    if parent_id is not None:
        value = f"{value}-{parent_id}"
    return value


def _state_char(sampled: bool | None, debug: bool) -> str | None:
    if debug:
        return "d"
    if sampled is None:
        return None
    return "1" if sampled else "0"


def extract(headers: Mapping[str, str] | MultiMapping[str]) -> Extracted:
    """Read a trace context or a bare sampling decision from request headers.

    ``headers`` should be case-insensitive (aiohttp's request headers are); for a plain dict the
    names are matched case-insensitively here. The first value of each header wins.
    """
    lookup = _first_values(headers)
    single = lookup.get(SINGLE.lower())
    if single is not None:
        parsed = _parse_single(single)
        if parsed is not None:
            return parsed
        log.debug("ignoring malformed b3 header %r", single)
    parsed = _parse_multi(lookup)
    if parsed is None:
        log.debug("ignoring malformed X-B3 headers")
        return EMPTY
    return parsed


def _first_values(headers: Mapping[str, str] | MultiMapping[str]) -> dict[str, str]:
    wanted = {name.lower() for name in B3_HEADERS}
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in wanted and key not in found:
            found[key] = value
    return found


def _parse_single(value: str) -> Extracted | None:
    if value in ("0", "1", "d"):
        # A sampling decision without identifiers.
        return Extracted(context=None, sampled=value != "0", debug=value == "d")
    parts = value.split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_id, span_id = parts[0], parts[1]
    if not (is_valid_trace_id(trace_id) and is_valid_span_id(span_id)):
        return None
    sampled: bool | None = None
    debug = False
    if len(parts) >= 3:
        state = parts[2]
        if state == "d":
            sampled, debug = True, True
        elif state in ("0", "1"):
            sampled = state == "1"
        else:
            return None
    parent_id: str | None = None
    if len(parts) == 4:
        parent_id = parts[3]
        if not is_valid_span_id(parent_id):
            return None
    return _with_ids(trace_id, span_id, parent_id, sampled, debug)


def _parse_multi(lookup: dict[str, str]) -> Extracted | None:
    # Debug is X-B3-Flags: 1; "absent or any other value can be ignored".
    debug = lookup.get(FLAGS.lower()) == "1"
    raw_sampled = lookup.get(SAMPLED.lower())
    sampled: bool | None
    if raw_sampled is None:
        sampled = None
    elif raw_sampled in ("0", "1"):
        sampled = raw_sampled == "1"
    else:
        # Empty values and words such as "true" are malformed: the spec encodes 1 and 0 only.
        return None
    if debug:
        sampled = True

    trace_id = lookup.get(TRACE_ID.lower())
    span_id = lookup.get(SPAN_ID.lower())
    parent_id = lookup.get(PARENT_SPAN_ID.lower())
    if trace_id is None and span_id is None and parent_id is None:
        return Extracted(context=None, sampled=sampled, debug=debug)
    if trace_id is None or span_id is None:
        return None  # partial identifiers
    if not (is_valid_trace_id(trace_id) and is_valid_span_id(span_id)):
        return None
    if parent_id is not None and not is_valid_span_id(parent_id):
        return None
    return _with_ids(trace_id, span_id, parent_id, sampled, debug)


def _with_ids(
    trace_id: str, span_id: str, parent_id: str | None, sampled: bool | None, debug: bool
) -> Extracted:
    context = TraceContext(
        trace_id=trace_id,
        parent_id=parent_id,
        span_id=span_id,
        sampled=sampled,
        debug=debug,
        shared=False,
    )
    return Extracted(context=context, sampled=sampled, debug=debug)
