"""Per-request sampling decisions.

B3 samples per trace: once a trace has a decision (accept, deny or debug), every span in it
follows that decision. A request sampler is therefore asked only when there is no decision yet:
for a new root trace, or under a parent that deferred the decision. It returns True (record),
False (don't record) or None (let the tracer's sampler decide).

>>> def skip_health_checks(request):
...     return False if request.url.path == "/health" else None
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol

from aiozipkin.helpers import TraceContext

from .parsers import RequestView

__all__ = ("Decision", "RequestSampler", "decide")

log = logging.getLogger("aiozipkin_client")

RequestSampler = Callable[[RequestView], bool | None]


class _TraceIdSampler(Protocol):
    def is_sampled(self, trace_id: str) -> bool: ...


class Decision(NamedTuple):
    """A made decision (never "defer"): record or not, and whether the trace is debug."""

    sampled: bool
    debug: bool


# The three possible decisions, made once: this runs for every request.
_DEBUG = Decision(sampled=True, debug=True)
_ACCEPT = Decision(sampled=True, debug=False)
_DENY = Decision(sampled=False, debug=False)


def decide(
    parent: TraceContext | None,
    trace_id: str,
    request: Callable[[], RequestView],
    request_sampler: RequestSampler | None,
    tracer_sampler: _TraceIdSampler,
) -> Decision:
    """The sampling decision for a new client span.

    Debug and an explicit accept or deny on the parent are kept as they are. Otherwise the
    request sampler (given ``request()``, made only then), then the tracer's sampler, decides; the result is then sent downstream as an
    explicit ``X-B3-Sampled`` so the services we call agree with the span we record.
    """
    if parent is not None:
        if parent.debug:
            return _DEBUG
        if parent.sampled is not None:
            return _ACCEPT if parent.sampled else _DENY
    if request_sampler is not None:
        try:
            verdict = request_sampler(request())
        except Exception:
            # A broken sampler must not cost the request its trace: fall back to the tracer's.
            log.exception("request sampler failed; using the tracer's sampler")
            verdict = None
        if verdict is not None:
            return _ACCEPT if verdict else _DENY
    return _ACCEPT if tracer_sampler.is_sampled(trace_id) else _DENY
