"""The transport: ``send()`` queues a span and returns; one background task posts batches.

The application never waits for, nor sees an error from, the collector. Each batch is encoded in
one call (:func:`~._model.encode_batch`) when it is posted, and gzipped above a size threshold
when one is set (none by default).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import math
import random
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import aiohttp
from aiozipkin.record import Record
from aiozipkin.transport import TransportABC
from yarl import URL

from ._buffer import ReportingStats, _DropLog, _SpanBuffer
from ._model import InvalidSpanError, Span, encode_batch, span_from_record

__all__ = (
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_GZIP_LEVEL",
    "DEFAULT_GZIP_THRESHOLD",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_RETRY_MAX_DELAY",
    "DEFAULT_SEND_INTERVAL",
    "DEFAULT_SEND_TIMEOUT",
    "ZipkinTransport",
)

log = logging.getLogger("aiozipkin_client.reporting")

#: Zipkin's v2 span endpoint: an address with no path (``http://zipkin:9411``) gets this one.
_SPANS_PATH: Final = "/api/v2/spans"
#: Seconds between two posts of a batch that is not full yet (aiozipkin's default).
DEFAULT_SEND_INTERVAL: Final = 5.0
#: Spans per POST at most (OpenTelemetry's batch processor posts up to 512): each POST costs the
#: application about as much CPU as a request, so fewer, larger posts cost less per span.
DEFAULT_BATCH_SIZE: Final = 500
#: Spans the buffer holds at most, including the batch being posted; the oldest go first.
DEFAULT_MAX_QUEUE_SIZE: Final = 10_000
#: Seconds one POST may take, connection included, before it counts as failed.
DEFAULT_SEND_TIMEOUT: Final = 10.0
#: Seconds ``close()`` keeps trying to deliver what is buffered before it gives up.
DEFAULT_CLOSE_TIMEOUT: Final = 5.0
#: Bodies longer than this many bytes are gzip-compressed; None (the default) never compresses:
#: gzip costs the application more CPU per span than the rest of reporting (RATIONALE).
DEFAULT_GZIP_THRESHOLD: Final = None
#: Seconds before the first retry; each further failure doubles it, up to the maximum.
DEFAULT_RETRY_DELAY: Final = 1.0
#: Upper bound of the delay between two attempts, ``Retry-After`` included.
DEFAULT_RETRY_MAX_DELAY: Final = 30.0

#: gzip compression level of the bodies (1 fastest .. 9 smallest); see README for the measurement.
DEFAULT_GZIP_LEVEL: Final = 1

# 408 and 429 say "try again later"; every other 4xx says the request itself is wrong.
_RETRYABLE_4XX: Final = frozenset({408, 429})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
# Enough of an error answer to explain it in a log line.
_ERROR_EXCERPT_BYTES: Final = 512
# The b3-propagation spec asks reporters to send an explicit deny, so that a proxy in between
# does not start a trace of the reporting traffic itself. Only the single header: see the spec.
_REQUEST_HEADERS: Final = {"Content-Type": "application/json", "b3": "0"}


@dataclass(frozen=True, slots=True)
class _Answer:
    """How one POST ended: ``status`` is None when no HTTP answer came back."""

    status: int | None
    detail: str
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        status = self.status
        return status is None or status >= 500 or status in _RETRYABLE_4XX


def _retry_delay(
    failures: int, first: float, maximum: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after ``failures`` consecutive failed attempts.

    Exponential, with "equal jitter" (between half and all of the step) so that many processes
    that lost the collector at the same moment do not come back in lockstep. A ``Retry-After``
    from the collector is honoured, within ``maximum`` like everything else.
    """
    step = min(maximum, first * 2.0 ** min(failures - 1, 62))
    delay = step / 2 + random.random() * step / 2  # jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, maximum)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delay-seconds or HTTP-date), if valid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class ZipkinTransport(TransportABC):
    """An aiozipkin transport that posts strict Zipkin v2 JSON and never harms the application.

    ``send()`` is synchronous and cheap: it checks the record (by :func:`encode_span`'s rules),
    appends it to a buffer of at most ``max_queue_size`` spans (dropping the oldest when full)
    and returns. It never raises, never waits and performs no I/O. A background task, started on the first
    ``send()`` made inside a running event loop, posts batches of up to ``batch_size`` spans as
    soon as a batch is full or ``send_interval`` seconds after the previous post. Failed posts
    (no answer, timeout, 5xx, 408, 429) are retried with exponential backoff between
    ``retry_delay`` and ``retry_max_delay`` seconds, honouring ``Retry-After``; a batch refused
    with another 4xx is dropped and logged. Batches are encoded when they are posted; bodies
    above ``gzip_threshold`` bytes (None, the default: never) are gzipped at ``gzip_level``.

    The transport may be built outside any event loop; its ``aiohttp.ClientSession`` (with no
    trace configs, so its own posts are never traced) is created inside the background task.
    Use it from one event loop, and call :meth:`close` before that loop ends.

    >>> from aiozipkin import Sampler, Tracer, create_endpoint
    >>> async def main() -> None:
    ...     transport = ZipkinTransport("http://127.0.0.1:9411/api/v2/spans", batch_size=50)
    ...     tracer = Tracer(transport, Sampler(sample_rate=1.0), create_endpoint("checkout"))
    ...     with tracer.new_trace(sampled=True) as span:
    ...         span.name("charge card")
    ...     await tracer.close()  # flushes, for at most close_timeout seconds
    """

    def __init__(
        self,
        address: str | URL,
        *,
        send_interval: float = DEFAULT_SEND_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        gzip_threshold: int | None = DEFAULT_GZIP_THRESHOLD,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY,
    ) -> None:
        url = URL(address)
        # Configuration mistakes are the one thing worth raising for, and only here, at start-up.
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"zipkin address must be an absolute http(s) URL, got {address!r}")
        if url.path in ("", "/"):
            # Zipkin's own address, as in its UI links: spans go to its v2 endpoint.
            # (with_path drops the query; yarl 1.12, our oldest, has no keep_query option.)
            url = url.with_path(_SPANS_PATH).with_query(url.query)
        for name, count in (("batch_size", batch_size), ("max_queue_size", max_queue_size)):
            _require_type(name, count, int, "a whole number")
        if gzip_threshold is not None:
            _require_type("gzip_threshold", gzip_threshold, int, "a whole number or None")
        _require_type("gzip_level", gzip_level, int, "a whole number from 1 to 9")
        for name, seconds in (
            ("send_interval", send_interval),
            ("send_timeout", send_timeout),
            ("close_timeout", close_timeout),
            ("retry_delay", retry_delay),
            ("retry_max_delay", retry_max_delay),
        ):
            _require_type(name, seconds, (int, float), "a number of seconds")
        _require(send_interval > 0, "send_interval must be > 0")
        _require(batch_size >= 1, "batch_size must be >= 1")
        _require(max_queue_size >= 1, "max_queue_size must be >= 1")
        _require(send_timeout > 0, "send_timeout must be > 0")
        _require(close_timeout >= 0, "close_timeout must be >= 0")
        _require(gzip_threshold is None or gzip_threshold >= 0, "gzip_threshold must be >= 0")
        _require(1 <= gzip_level <= 9, f"gzip_level must be from 1 to 9, not {gzip_level!r}")
        _require(0 < retry_delay <= retry_max_delay, "need 0 < retry_delay <= retry_max_delay")

        self._address = url
        self._send_interval = float(send_interval)
        self._batch_size = batch_size
        self._send_timeout = float(send_timeout)
        self._close_timeout = float(close_timeout)
        self._gzip_threshold = gzip_threshold
        self._gzip_level = gzip_level
        self._retry_delay = float(retry_delay)
        self._retry_max_delay = float(retry_max_delay)

        self._buffer: _SpanBuffer[Span] = _SpanBuffer(max_queue_size)
        self._queued = self._buffer.items
        self._task: asyncio.Task[None] | None = None
        # Bound to the loop of the background task, so created by it.
        self._wake: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._failures = 0
        self._retry_at: float | None = None  # loop time of the next attempt while failing
        self._next_flush = 0.0  # loop time at which a partial batch is due

        self._received = 0
        self._sent = 0
        self._dropped_invalid = 0
        self._dropped_queue_full = 0
        self._dropped_rejected = 0
        self._dropped_closed = 0
        self._retries = 0

        interval = self._send_interval
        self._log_full = _DropLog(interval, f"buffer full, max_queue_size={max_queue_size}")
        self._log_invalid = _DropLog(interval, "invalid record")
        self._log_rejected = _DropLog(interval, "refused by the collector, not retried")
        self._log_closed = _DropLog(interval, "transport closed")
        self._failure_log_at = -math.inf
        # Says how many spans were lost if the transport is garbage-collected, or still alive
        # at interpreter exit, without close(); close() detaches it.
        self._unclosed = weakref.finalize(self, _warn_unclosed, self._buffer, str(url))

    @property
    def address(self) -> URL:
        """The collector URL spans are posted to (instrumentation uses it to skip these posts)."""
        return self._address

    def stats(self) -> ReportingStats:
        """A snapshot of the counters; see :class:`ReportingStats`."""
        return ReportingStats(
            received=self._received,
            sent=self._sent,
            queued=len(self._buffer),
            dropped_invalid=self._dropped_invalid,
            dropped_queue_full=self._dropped_queue_full,
            dropped_rejected=self._dropped_rejected,
            dropped_closed=self._dropped_closed,
            retries=self._retries,
        )

    def send(self, record: Record) -> None:
        """Queue ``record`` for the collector; never raises, never blocks, never awaits.

        The record is checked by :func:`encode_span`'s rules now, once; one that cannot become a
        valid span is counted in ``dropped_invalid`` and logged, never posted.
        """
        if self._closing:
            self._received += 1
            self._refuse_closed()
            return
        try:
            span = span_from_record(record)
        except InvalidSpanError as exc:
            self._received += 1
            self._dropped_invalid += 1
            self._log_invalid.add(1, str(exc))
            return
        except Exception as exc:
            # A record whose asdict() or contents misbehave must not reach the application.
            log.debug("cannot read record", exc_info=True)
            self._received += 1
            self._dropped_invalid += 1
            self._log_invalid.add(1, f"reading the record failed: {exc!r}")
            return
        self._send_span(span)

    def _send_span(self, span: Span) -> None:
        """:meth:`send` for a span aiozipkin_client built itself, valid by construction."""
        self._received += 1
        if self._closing:
            self._refuse_closed()
            return
        if self._buffer.append(span):
            self._dropped_queue_full += 1
            self._log_full.add(1, "the collector is unreachable or too slow")
        task = self._task
        if task is None or task.done():
            self._ensure_sender()
        wake = self._wake
        # The buffer's deque, measured without a call: this runs for every span.
        if wake is not None and len(self._queued) >= self._batch_size and not wake.is_set():
            wake.set()

    def _refuse_closed(self) -> None:
        self._dropped_closed += 1
        self._log_closed.add(1)

    async def close(self) -> None:
        """Deliver what is buffered within ``close_timeout`` seconds, then stop; idempotent.

        Returns once the background task and its session are gone, whether or not the collector
        answered; what could not be delivered is counted in ``dropped_closed``. Spans sent after
        ``close()`` are dropped the same way.
        """
        if not self._closing:
            self._closing = True
            self._unclosed.detach()  # from now on, what is lost is counted and logged here
            # One immediate last attempt, even if a backoff delay was running.
            self._retry_at = None
        if self._buffer and (self._task is None or self._task.done()):
            self._ensure_sender()
        task = self._task
        if task is None or task.done():
            self._discard_buffer()
            return
        if task.get_loop() is not asyncio.get_running_loop():
            log.warning("close() called from another event loop than the one sending spans")
            return
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self._close_timeout)
        finally:
            # Also reached when close() itself is cancelled: never leave the sender running.
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    def _ensure_sender(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # No loop yet (a synchronous caller): the next send() in a loop starts it.
        self._task = loop.create_task(self._run(), name="aiozipkin_client.reporting")
        self._task.add_done_callback(_log_crash)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self._next_flush = loop.time() + self._send_interval
        # No trace_configs: posting spans must never produce spans.
        session = self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._send_timeout)
        )
        try:
            while True:
                await self._wait_until_due(loop, wake)
                if not self._buffer:
                    if self._closing:
                        return
                    self._next_flush = loop.time() + self._send_interval
                    continue
                await self._post_oldest_batch(session, loop)
                self._next_flush = loop.time() + self._send_interval
        finally:
            self._wake = None
            self._session = None
            if self._closing:
                self._discard_buffer()
            await session.close()

    async def _wait_until_due(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        while True:
            now = loop.time()
            if self._retry_at is not None:
                if now >= self._retry_at:
                    return
                delay = self._retry_at - now
            elif self._closing or len(self._buffer) >= self._batch_size or now >= self._next_flush:
                return
            else:
                delay = self._next_flush - now
            wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await wake.wait()
            except TimeoutError:
                pass

    async def _post_oldest_batch(
        self, session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop
    ) -> None:
        batch = self._buffer.start_batch(self._batch_size)
        try:
            answer = await self._post(session, batch)
        except Exception as exc:
            # A bug of ours or of a library: retry (the buffer bounds the cost) and say so,
            # with the traceback once per outage rather than once per attempt.
            log.log(
                logging.DEBUG if self._failures else logging.ERROR,
                "unexpected error while posting spans",
                exc_info=True,
            )
            answer = _Answer(None, repr(exc))
        if answer.delivered:
            self._buffer.remove_batch()
            self._sent += len(batch)
            if self._failures:
                log.info("%s accepts spans again after %d failures", self._address, self._failures)
            self._failures = 0
            self._retry_at = None
        elif answer.retryable:
            lost = self._buffer.keep_batch()
            if lost:
                self._dropped_queue_full += lost
                self._log_full.add(lost, "the collector is unreachable or too slow")
            self._failures += 1
            self._retries += 1
            delay = _retry_delay(
                self._failures, self._retry_delay, self._retry_max_delay, answer.retry_after
            )
            self._retry_at = loop.time() + delay
            self._log_failure(answer, delay)
        else:
            self._buffer.remove_batch()
            self._dropped_rejected += len(batch)
            self._log_rejected.add(len(batch), answer.detail)
            self._failures = 0
            self._retry_at = None

    async def _post(self, session: aiohttp.ClientSession, batch: list[Span]) -> _Answer:
        body = encode_batch(batch)
        headers = dict(_REQUEST_HEADERS)
        if self._gzip_threshold is not None and len(body) > self._gzip_threshold:
            # mtime=0: the same spans always make the same bytes.
            body = gzip.compress(body, compresslevel=self._gzip_level, mtime=0)
            headers["Content-Encoding"] = "gzip"
        try:
            async with session.post(
                self._address, data=body, headers=headers, allow_redirects=False
            ) as response:
                # Reading the (normally empty) answer lets the connection be reused.
                excerpt = await response.content.read(_ERROR_EXCERPT_BYTES)
                retry_after = None
                if response.status in _RETRY_AFTER_STATUSES:
                    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                detail = f"HTTP {response.status} {excerpt.decode('utf-8', 'replace')!r}"
                return _Answer(response.status, detail, retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _Answer(None, repr(exc) if str(exc) else type(exc).__name__)

    def _log_failure(self, answer: _Answer, delay: float) -> None:
        # The first failure of an outage is always logged, the following ones once per interval.
        now = time.monotonic()
        if self._failures > 1 and now < self._failure_log_at:
            return
        self._failure_log_at = now + self._send_interval
        log.warning(
            "cannot deliver spans to %s (%s); %d buffered, retry #%d in %.3f s",
            self._address,
            answer.detail,
            len(self._buffer),
            self._failures,
            delay,
        )

    def _discard_buffer(self) -> None:
        lost = self._buffer.clear()
        if lost:
            self._dropped_closed += lost
            self._log_closed.add(lost, "not delivered within close_timeout")
        for drop_log in (self._log_full, self._log_invalid, self._log_rejected, self._log_closed):
            drop_log.flush()


def _warn_unclosed(buffer: _SpanBuffer[Span], address: str) -> None:
    # Never raises: it runs from the garbage collector or at interpreter exit.
    lost = len(buffer)
    if lost:
        log.warning(
            "ZipkinTransport for %s was never closed: %d buffered span%s lost. Close it before"
            " the event loop ends: `await tracer.close()`, or `async with create(...) as tracer`",
            address,
            lost,
            " was" if lost == 1 else "s were",
        )


def _log_crash(task: asyncio.Task[None]) -> None:
    # The sender catches what it expects; anything else is logged here (and so retrieved, which
    # keeps asyncio from reporting it at garbage collection). The next send() starts a new one.
    if not task.cancelled() and task.exception() is not None:
        log.error("span sender stopped", exc_info=task.exception())


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_type(name: str, value: object, kind: type | tuple[type, ...], described: str) -> None:
    # bool is an int to Python, never a size or a delay to a user.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {described}, not {value!r}")
