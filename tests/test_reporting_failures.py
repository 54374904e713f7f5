"""ZipkinTransport when the collector misbehaves: nothing reaches the application, spans wait in
a bounded buffer, are retried, and are delivered once the collector is back.

Nothing here asserts on speed: every wait is a bounded wait for an observable state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiozipkin.helpers import create_endpoint
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer

from aiozipkin_client.reporting import ZipkinTransport
from aiozipkin_client.reporting._transport import _parse_retry_after, _retry_delay
from tests.kit.collector import Collector, Mode, running_collector, transports_for, wait_until

ENDPOINT = create_endpoint("checkout")
Factory = Callable[..., ZipkinTransport]
LOGGER = "aiozipkin_client.reporting"


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with running_collector() as collector:
        yield collector


@pytest.fixture
async def make_transport(collector: Collector) -> AsyncIterator[Factory]:
    """Builds transports posting to the collector, with test-friendly delays; closes them all."""
    async with transports_for(collector, send_timeout=0.3, close_timeout=0.5) as make:
        yield make


def finish_spans(transport: ZipkinTransport, count: int) -> list[str]:
    """Report ``count`` finished root spans through a real Tracer; returns their ids."""
    tracer = Tracer(transport, Sampler(sample_rate=1.0), ENDPOINT)
    ids = []
    for _ in range(count):
        with tracer.new_trace(sampled=True) as span:
            span.name("op")
        ids.append(span.context.span_id)
    return ids


RECOVERABLE = [
    Mode.DOWN,
    Mode.SLOW,
    Mode.SERVER_ERROR,
    Mode.UNAVAILABLE,
    Mode.TOO_MANY_REQUESTS,
    Mode.RESET,
]


@pytest.mark.parametrize("mode", RECOVERABLE, ids=[mode.value for mode in RECOVERABLE])
async def test_spans_survive_an_outage_and_arrive_once(
    collector: Collector, make_transport: Factory, mode: Mode
) -> None:
    collector.slow_delay = 5.0  # well past send_timeout: the transport gives up first
    transport = make_transport()
    await collector.set_mode(mode)

    ids = finish_spans(transport, 5)  # would raise here if the failure reached the caller
    await wait_until(lambda: transport.stats().retries >= 3)
    if mode is Mode.SLOW:
        # Release only posts the collector knows are given up or still awaited: none of the
        # three abandoned ones may be answered 202 (that would deliver their spans twice).
        await collector.wait_for_abandoned(3)
    await collector.set_mode(Mode.OK)
    spans = await collector.wait_for_spans(5)
    await wait_until(lambda: transport.stats().sent == 5)

    assert sorted(span["id"] for span in spans) == sorted(ids)
    stats = transport.stats()
    assert (stats.queued, stats.dropped_queue_full, stats.dropped_rejected) == (0, 0, 0)
    if mode is not Mode.DOWN:
        assert {post.mode for post in collector.posts} == {mode, Mode.OK}


async def test_outage_is_logged_once_not_per_attempt(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport(send_interval=60)
    await collector.set_mode(Mode.SERVER_ERROR)

    with caplog.at_level(logging.INFO, LOGGER):
        finish_spans(transport, 1)
        await transport.close()  # one immediate attempt, then retries until close_timeout
        failures = [r for r in caplog.records if "cannot deliver" in r.getMessage()]

    assert transport.stats().retries >= 2
    assert len(failures) == 1
    assert "HTTP 500" in failures[0].getMessage()


async def test_recovery_is_logged(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport()
    await collector.set_mode(Mode.SERVER_ERROR)
    finish_spans(transport, 1)

    with caplog.at_level(logging.INFO, LOGGER):
        await wait_until(lambda: transport.stats().retries >= 1)
        await collector.set_mode(Mode.OK)
        await wait_until(lambda: transport.stats().sent == 1)

    assert any("accepts spans again" in message for message in caplog.messages)


async def test_rejected_batch_is_dropped_not_retried(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport()
    await collector.set_mode(Mode.BAD_REQUEST)

    with caplog.at_level(logging.WARNING, LOGGER):
        finish_spans(transport, 3)
        await wait_until(lambda: transport.stats().dropped_rejected == 3)
    await collector.set_mode(Mode.OK)
    (later,) = finish_spans(transport, 1)
    (delivered,) = await collector.wait_for_spans(1)
    await transport.close()

    assert delivered["id"] == later
    assert [post.mode for post in collector.posts] == [Mode.BAD_REQUEST, Mode.OK]
    stats = transport.stats()
    assert (stats.sent, stats.dropped_rejected, stats.retries) == (1, 3, 0)
    assert any("refused by the collector" in m and "HTTP 400" in m for m in caplog.messages)


@pytest.mark.parametrize("mode", [Mode.TOO_MANY_REQUESTS, Mode.UNAVAILABLE])
async def test_retry_after_is_honoured(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture, mode: Mode
) -> None:
    transport = make_transport(retry_delay=0.01, retry_max_delay=5.0)
    collector.retry_after = "1"
    await collector.set_mode(mode)

    with caplog.at_level(logging.WARNING, LOGGER):
        finish_spans(transport, 1)
        await wait_until(lambda: transport.stats().retries == 1)
    await collector.set_mode(Mode.OK)
    await collector.wait_for_spans(1)

    # Without Retry-After the first retry would come after 5-10 ms; with it, after 1 s.
    (failure,) = [m for m in caplog.messages if "cannot deliver" in m]
    assert "retry #1 in 1.000 s" in failure
    assert len(collector.posts) == 2


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)

    assert _parse_retry_after("7") == 7.0
    assert _parse_retry_after(" 0 ") == 0.0
    assert 100 < (_parse_retry_after(soon) or 0) <= 120
    assert _parse_retry_after(past) == 0.0
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after("-3") is None
    assert _parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_and_is_bounded() -> None:
    random.seed(5)
    for failures in range(1, 12):
        step = min(0.1 * 2 ** (failures - 1), 3.0)
        for _ in range(20):
            delay = _retry_delay(failures, 0.1, 3.0)
            assert step / 2 <= delay <= step
    assert _retry_delay(1, 0.1, 3.0, retry_after=2.0) == 2.0
    assert _retry_delay(1, 0.1, 3.0, retry_after=3600.0) == 3.0
    assert _retry_delay(10_000, 0.1, 3.0) <= 3.0


async def test_full_buffer_drops_the_oldest_and_stays_bounded(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    capacity, total = 1_000, 100_000
    transport = make_transport(max_queue_size=capacity, send_interval=60, batch_size=100)
    tracer = Tracer(transport, Sampler(sample_rate=1.0), ENDPOINT)
    await collector.set_mode(Mode.DOWN)
    span = tracer.new_trace(sampled=True)
    span.start()
    record = tracer._records[span.context]  # one record, re-sent with a new tag each time
    record.finish(None)
    longest = 0

    with caplog.at_level(logging.WARNING, LOGGER):
        for index in range(total):
            record.set_tag("index", index)
            transport.send(record)
            longest = max(longest, transport.stats().queued)
        full_warnings = [m for m in caplog.messages if "buffer full" in m]

    stats = transport.stats()
    assert longest == capacity
    assert (stats.queued, stats.dropped_queue_full) == (capacity, total - capacity)
    # send_interval is 60 s: the first drop is logged, the next 98,999 wait for the next report.
    assert len(full_warnings) == 1

    await collector.set_mode(Mode.OK)
    spans = await collector.wait_for_spans(capacity)
    assert [int(span["tags"]["index"]) for span in spans] == list(range(total - capacity, total))
    await wait_until(lambda: transport.stats().sent == capacity)


async def test_batch_pushed_out_during_a_failed_post_is_counted_once(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(max_queue_size=5, batch_size=5, send_timeout=0.3)
    collector.slow_delay = 5.0
    await collector.set_mode(Mode.SLOW)
    finish_spans(transport, 5)
    await collector.wait_for_arrivals(1)  # that post now hangs until send_timeout

    newer = finish_spans(transport, 5)  # pushes the whole in-flight batch out
    await wait_until(lambda: transport.stats().retries >= 1)
    # The collector has seen the client give up: releasing now cannot deliver that post.
    await collector.wait_for_abandoned(1)
    stats = transport.stats()
    assert (stats.queued, stats.dropped_queue_full) == (5, 5)

    await collector.set_mode(Mode.OK)
    spans = await collector.wait_for_spans(5)
    await wait_until(lambda: transport.stats().sent == 5)
    assert [span["id"] for span in spans] == newer
    stats = transport.stats()
    assert stats.received == stats.sent + stats.dropped_queue_full == 10


async def test_batch_pushed_out_during_a_successful_post_counts_as_sent(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(max_queue_size=5, batch_size=5, send_timeout=10)
    collector.slow_delay = 5.0
    await collector.set_mode(Mode.SLOW)
    first = finish_spans(transport, 5)
    await collector.wait_for_arrivals(1)

    newer = finish_spans(transport, 5)  # pushes the in-flight batch out of the buffer
    await collector.set_mode(Mode.OK)  # the held post is now answered 202
    spans = await collector.wait_for_spans(10)
    await wait_until(lambda: transport.stats().sent == 10)

    assert [span["id"] for span in spans] == first + newer
    assert transport.stats().dropped_queue_full == 0


async def test_application_is_not_held_up_by_a_hanging_collector(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(batch_size=5, send_timeout=30)
    collector.slow_delay = 30.0
    await collector.set_mode(Mode.SLOW)
    first = finish_spans(transport, 5)
    await collector.wait_for_arrivals(1)  # the collector now holds that post

    # While it hangs, the application keeps finishing spans and making its own requests.
    later = finish_spans(transport, 20)
    async with aiohttp.ClientSession() as session, session.get(collector.ping_url()) as answer:
        assert answer.status == 200
        assert await answer.text() == "pong"
    assert transport.stats().queued == 25
    assert transport.stats().sent == 0

    await collector.set_mode(Mode.OK)
    spans = await collector.wait_for_spans(25)
    assert sorted(span["id"] for span in spans) == sorted(first + later)


async def test_close_gives_up_after_close_timeout(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport(close_timeout=0.2)
    await collector.set_mode(Mode.DOWN)
    finish_spans(transport, 3)

    with caplog.at_level(logging.WARNING, LOGGER):
        await asyncio.wait_for(transport.close(), 10)

    stats = transport.stats()
    assert (stats.sent, stats.queued, stats.dropped_closed) == (0, 0, 3)
    assert any("dropped 3 spans (transport closed)" in m for m in caplog.messages)
    await transport.close()
    assert transport.stats().dropped_closed == 3


async def test_close_gives_up_on_a_hanging_collector(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(close_timeout=0.2, send_timeout=30)
    collector.slow_delay = 30.0
    await collector.set_mode(Mode.SLOW)
    finish_spans(transport, 2)
    await collector.wait_for_arrivals(1)

    await asyncio.wait_for(transport.close(), 10)

    assert transport.stats().dropped_closed == 2
    assert collector.spans == []


async def test_close_retries_a_failing_collector_until_it_recovers(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(close_timeout=10, send_interval=60)
    await collector.set_mode(Mode.SERVER_ERROR)
    ids = finish_spans(transport, 2)

    closing = asyncio.create_task(transport.close())
    await wait_until(lambda: transport.stats().retries >= 2)
    await collector.set_mode(Mode.OK)
    await asyncio.wait_for(closing, 10)

    assert [span["id"] for span in collector.spans] == ids
    assert transport.stats().dropped_closed == 0


async def test_cancelled_close_still_stops_the_sender(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(close_timeout=30)
    await collector.set_mode(Mode.DOWN)
    finish_spans(transport, 2)
    await wait_until(lambda: transport.stats().retries >= 1)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(transport.close(), 0.1)

    # No sender left running: its session is closed and nothing is posted any more.
    assert transport._session is None
    assert transport.stats().dropped_closed == 2


async def test_unexpected_error_while_posting_is_logged_and_retried(
    collector: Collector,
    make_transport: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = make_transport()
    real_post = ZipkinTransport._post
    calls = 0

    async def post_failing_once(self: ZipkinTransport, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("a bug")
        return await real_post(self, *args)

    monkeypatch.setattr(ZipkinTransport, "_post", post_failing_once)
    with caplog.at_level(logging.ERROR, LOGGER):
        ids = finish_spans(transport, 2)
        spans = await collector.wait_for_spans(2)

    assert [span["id"] for span in spans] == ids
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == "unexpected error while posting spans"
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], ZeroDivisionError)


async def test_a_crashed_sender_is_logged_and_replaced(
    collector: Collector,
    make_transport: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = make_transport()

    async def crash(self: ZipkinTransport, *args: Any) -> None:
        raise ZeroDivisionError("a bug outside the guarded POST")

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, LOGGER):
        patch.setattr(ZipkinTransport, "_post_oldest_batch", crash)
        finish_spans(transport, 1)
        await wait_until(lambda: any("sender stopped" in m for m in caplog.messages))
    later = finish_spans(transport, 1)  # starts a new sender, which delivers both
    spans = await collector.wait_for_spans(2)

    assert spans[-1]["id"] == later[0]
    assert transport.stats().dropped_closed == 0
