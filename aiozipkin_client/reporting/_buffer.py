"""The bounded buffer of spans waiting for the collector, and the counters of what became of them.

Everything here is synchronous and owned by one :class:`~._transport.ZipkinTransport`: the buffer
holds finished spans (as :class:`~._model.Span` objects, encoded only when a batch is posted),
:class:`ReportingStats` is the snapshot users read, and :class:`_DropLog` keeps a collector outage
from turning into a logging outage.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ("ReportingStats", "_DropLog", "_SpanBuffer")

log = logging.getLogger("aiozipkin_client.reporting")

_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class ReportingStats:
    """What a :class:`ZipkinTransport` did with the records it was given, since it was made.

    Whenever no POST is in progress, ``received`` equals ``sent + queued`` plus every
    ``dropped_*`` counter: each record is accounted for exactly once.

    >>> transport = ZipkinTransport("http://127.0.0.1:9411/api/v2/spans")
    >>> transport.stats().queued
    0
    """

    #: Records passed to ``send()``.
    received: int
    #: Spans the collector accepted (any 2xx answer).
    sent: int
    #: Spans waiting in the buffer now, including a batch being posted.
    queued: int
    #: Records refused by :func:`encode_span` (bad identifiers) or that failed to encode.
    dropped_invalid: int
    #: Oldest spans pushed out because the buffer was full.
    dropped_queue_full: int
    #: Spans of batches the collector refused for good (400 and other 4xx but 408 and 429).
    dropped_rejected: int
    #: Spans still buffered when ``close()`` gave up, or sent after ``close()``.
    dropped_closed: int
    #: Failed POST attempts that were scheduled for a retry.
    retries: int


class _SpanBuffer(Generic[_Item]):
    """A bounded FIFO of spans; the batch being posted stays in it until settled.

    Keeping the batch in the buffer makes ``capacity`` the one bound on memory, and makes
    drop-oldest exact: when the collector has been failing, its oldest spans are that batch.
    Items are numbered in arrival order so that a batch can be settled even if some of its items
    were pushed out while the POST was in flight.
    """

    def __init__(self, capacity: int) -> None:
        #: The spans held, oldest first (the same deque for the buffer's whole life): others may
        #: read it, only the buffer changes it.
        self.items: deque[_Item] = deque()
        self._capacity = capacity
        self._first = 0  # sequence number of self.items[0]
        self._batch_end = 0  # one past the batch being posted; <= self._first when none
        self._batch_evicted = 0

    def __len__(self) -> int:
        return len(self.items)

    def append(self, item: _Item) -> bool:
        """Add ``item``; True when an older span not being posted was dropped for it."""
        dropped = False
        if len(self.items) >= self._capacity:
            self.items.popleft()
            if self._first < self._batch_end:
                # Whether it is lost depends on how the POST ends: see keep_batch().
                self._batch_evicted += 1
            else:
                dropped = True
            self._first += 1
        self.items.append(item)
        return dropped

    def start_batch(self, size: int) -> list[_Item]:
        """The oldest ``size`` spans at most, marked as being posted."""
        batch = list(itertools.islice(self.items, size))
        self._batch_end = self._first + len(batch)
        self._batch_evicted = 0
        return batch

    def remove_batch(self) -> None:
        """The batch was delivered or refused for good: forget what is left of it."""
        for _ in range(max(0, self._batch_end - self._first)):
            self.items.popleft()
            self._first += 1
        self._batch_end = 0
        self._batch_evicted = 0

    def keep_batch(self) -> int:
        """The batch will be retried; returns how many of its spans were pushed out meanwhile."""
        lost = self._batch_evicted
        self._batch_end = 0
        self._batch_evicted = 0
        return lost

    def clear(self) -> int:
        """Drop everything; returns how many spans that was (pushed-out batch items included)."""
        lost = len(self.items) + self._batch_evicted
        self._first += len(self.items)
        self.items.clear()
        self._batch_end = 0
        self._batch_evicted = 0
        return lost


class _DropLog:
    """Counts dropped spans for one reason and logs the total at most once per interval.

    A collector outage can drop thousands of spans a second: one warning per span would turn a
    tracing problem into a logging outage.
    """

    def __init__(self, interval: float, reason: str) -> None:
        self._interval = interval
        self._reason = reason
        self._pending = 0
        self._detail = ""
        self._next_at = -math.inf

    def add(self, count: int, detail: str = "") -> None:
        self._pending += count
        self._detail = detail or self._detail
        if time.monotonic() >= self._next_at:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        detail = f": {self._detail}" if self._detail else ""
        log.warning("dropped %d spans (%s)%s", self._pending, self._reason, detail)
        self._pending = 0
        self._detail = ""
        self._next_at = time.monotonic() + self._interval
