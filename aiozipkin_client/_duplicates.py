"""Warns once per session when a second tracing config would trace the same requests.

Two of our trace configs on one ``ClientSession`` (or ours beside aiozipkin's own client config,
``aiozipkin.make_trace_config``) each trace every request: every exchange is reported twice, and
aiozipkin's handler adds ``X-B3-Flags: 0`` when it runs after ours. Nothing fails, so nobody
notices; this says so once.

How it tells: each of our configs' handlers carry a :class:`DuplicateCheck` (as their
``duplicate_check`` attribute) that our ``on_request_start`` calls first (the config's receiver
wraps that method), and aiozipkin's config has its ``ZipkinClientSignals.on_request_start``
there. On the first request of a session, the
first of our configs in ``session.trace_configs`` looks at the receivers of all of them. A
session's configs are fixed when it is created, so one look per session is enough. A request on
the same session as the one before costs one weak-reference comparison with
:attr:`DuplicateCheck.last`, made by ``on_request_start`` itself (no receiver of its own for
aiohttp to await on every request). A config shared by sessions used in turn calls
:meth:`DuplicateCheck.check` whenever the session changes: a set lookup and a new weak
reference (about 0.2 µs), and still one look per session.

The same look finds OpenTelemetry's aiohttp client instrumentation (its receivers live in
``opentelemetry.instrumentation.aiohttp_client``, added by ``create_trace_config`` or by
``AioHttpClientInstrumentor().instrument()``). Its spans go elsewhere, which may be what the
user wants; but when OpenTelemetry's propagator writes B3 headers too, the config that runs
later overwrites the other's, and the services called join only one of the two traces. That
is warned about, naming the one they join.
"""

from __future__ import annotations

import logging
import sys
import weakref

import aiohttp
from aiozipkin.aiohttp_helpers import ZipkinClientSignals

from .propagation import B3_HEADERS, SINGLE, B3Format

__all__ = ("DuplicateCheck",)

log = logging.getLogger("aiozipkin_client")


class DuplicateCheck:
    """Looks, for one trace config, for other tracing configs on the sessions it serves."""

    def __init__(self, b3_format: B3Format = B3Format.MULTI) -> None:
        #: What our config writes: which of its headers another tracer can overwrite.
        self._b3_format = b3_format
        # Sessions already looked at; weak, so a closed session is not kept alive by a config.
        self._seen: weakref.WeakSet[aiohttp.ClientSession] = weakref.WeakSet()
        #: The session looked at last: the caller compares it with each request's session and
        #: calls :meth:`check` only for another one (a comparison inside a handler it runs
        #: anyway, where a call would cost more than the comparison).
        self.last: weakref.ref[aiohttp.ClientSession] | None = None

    def check(self, session: aiohttp.ClientSession) -> None:
        """Look at ``session``'s trace configs, once per session; never raises.

        Called again for a session already looked at, it only makes it ``last`` again.
        """
        try:
            self.last = weakref.ref(session)
            if session in self._seen:
                return
            self._seen.add(session)
            self._look_at(session)
        except Exception:
            log.exception("aiozipkin_client: checking the session's trace configs failed")

    def _look_at(self, session: aiohttp.ClientSession) -> None:
        ours: list[DuplicateCheck] = []
        theirs = 0
        # The position in session.trace_configs of our last config and OpenTelemetry's last:
        # aiohttp runs the configs in that order, so the later one writes its headers last.
        our_last = otel_last = -1
        for position, config in enumerate(session.trace_configs):
            for receiver in config.on_request_start:
                # Ours wraps a method of our handlers (client._receiver); aiozipkin's is one.
                owner = getattr(getattr(receiver, "__wrapped__", receiver), "__self__", None)
                check = getattr(owner, "duplicate_check", None)
                if isinstance(check, DuplicateCheck):
                    ours.append(check)
                    our_last = position
                elif isinstance(owner, ZipkinClientSignals):
                    theirs += 1
                elif _is_opentelemetry(receiver):
                    otel_last = position
        if not ours or ours[0] is not self:
            return  # the first of our configs speaks for the session, so it is said once
        if otel_last >= 0:
            # Its own try: OpenTelemetry's propagator is a user's object, and its failure must
            # not silence the warning about duplicate configs below.
            try:
                _warn_if_both_write_b3(otel_last > our_last, self._b3_format)
            except Exception:
                log.exception("aiozipkin_client: reading OpenTelemetry's propagator failed")
        if len(ours) > 1:
            found = f"{len(ours)} aiozipkin_client trace configs"
            if theirs:
                found += " and aiozipkin's own client trace config (aiozipkin.make_trace_config)"
        elif theirs:
            found = (
                "both aiozipkin_client's trace config and aiozipkin's own"
                " (aiozipkin.make_trace_config)"
            )
        else:
            return
        flags = ", and aiozipkin's may send X-B3-Flags: 0" if theirs else ""
        log.warning(
            "this ClientSession has %s: each traces every request, so every request is reported"
            " %d times%s. Give a session one tracing config: one make_trace_config(tracer).",
            found,
            len(ours) + theirs,
            flags,
        )


#: Where OpenTelemetry's aiohttp client instrumentation defines its signal receivers.
_OTEL_MODULE = "opentelemetry.instrumentation.aiohttp_client"
#: The headers ours write, as a propagator's ``fields`` may spell them.
_B3_NAMES = frozenset(name.lower() for name in B3_HEADERS)


def _is_opentelemetry(receiver: object) -> bool:
    module = getattr(receiver, "__module__", None)
    return isinstance(module, str) and (
        module == _OTEL_MODULE or module.startswith(_OTEL_MODULE + ".")
    )


def _otel_b3_fields() -> list[str]:
    """The B3 headers OpenTelemetry's global propagator writes (none if it is not loaded)."""
    propagate = sys.modules.get("opentelemetry.propagate")
    if propagate is None:
        return []
    fields: set[str] = propagate.get_global_textmap().fields
    return sorted(name for name in fields if name.lower() in _B3_NAMES)


def _warn_if_both_write_b3(otel_runs_later: bool, ours: B3Format) -> None:
    fields = _otel_b3_fields()
    if not fields:
        return  # its own headers (W3C traceparent by default) do not touch ours
    # Our inject removes every B3 header before writing its own, so ours running later always
    # wins. OpenTelemetry's sets only its own fields: it wins only if it writes every encoding
    # ours wrote; otherwise each request leaves with one encoding from each tracer.
    otel_single = any(name.lower() == SINGLE for name in fields)
    otel_multi = any(name.lower() != SINGLE for name in fields)
    ours_single = ours is not B3Format.MULTI
    ours_multi = ours is not B3Format.SINGLE
    scope = (
        "on every request OpenTelemetry traces (sampled or not: an unsampled one tells the"
        " services called not to record)"
    )
    if not otel_runs_later:
        outcome = (
            f"ours runs later and replaces OpenTelemetry's, so {scope} the services called"
            " join our trace and OpenTelemetry's CLIENT spans have no children"
        )
    elif (otel_single or not ours_single) and (otel_multi or not ours_multi):
        outcome = (
            f"OpenTelemetry's runs later and overwrites ours, so {scope} the services called"
            " join OpenTelemetry's trace and our CLIENT spans have no children"
        )
    else:
        single_from = "OpenTelemetry's" if otel_single else "our"
        multi_from = "OpenTelemetry's" if otel_multi else "our"
        outcome = (
            "OpenTelemetry's runs later but writes only some of the encodings ours wrote, so"
            f" {scope} the request carries both traces: services that read the single b3"
            f" header first (as ours, OpenTelemetry's and py_zipkin's do) join {single_from}"
            f" trace, those that read only X-B3-* (zipkin-js) join {multi_from} trace"
        )
    log.warning(
        "this ClientSession also has OpenTelemetry's aiohttp client instrumentation, whose"
        " propagator writes B3 headers too (%s): %s. Trace the session with one of them, or"
        " give OpenTelemetry a propagator without B3.",
        ", ".join(fields),
        outcome,
    )
