"""ZipkinTransport and create() against a strict local collector: what is posted, and how.

Every body the collector receives is validated against the kit's Zipkin v2 schema (plus the
spec's prose rules); the ``collector`` fixture fails the test if any body was invalid.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiozipkin.helpers import CLIENT, SERVER, TraceContext, create_endpoint
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from yarl import URL

from aiozipkin_client.reporting import ReportingStats, ZipkinTransport, create
from tests.kit.collector import Collector, running_collector, transports_for, wait_until

ENDPOINT = create_endpoint("checkout", ipv4="127.0.0.1", port=8080)
Factory = Callable[..., ZipkinTransport]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    async with running_collector() as collector:
        yield collector


@pytest.fixture
async def make_transport(collector: Collector) -> AsyncIterator[Factory]:
    """Builds transports posting to the collector, with test-friendly delays; closes them all."""
    async with transports_for(collector, send_timeout=2.0, close_timeout=2.0) as make:
        yield make


def tracer_for(transport: ZipkinTransport) -> Tracer:
    return Tracer(transport, Sampler(sample_rate=1.0), ENDPOINT)


def finish_spans(tracer: Tracer, count: int, **tags: str) -> list[str]:
    """Report ``count`` finished root spans; returns their ids in order."""
    ids = []
    for index in range(count):
        with tracer.new_trace(sampled=True) as span:
            span.name(f"op {index}")
            for key, value in tags.items():
                span.tag(key, value)
        ids.append(span.context.span_id)
    return ids


def accounted(stats: ReportingStats) -> int:
    return (
        stats.sent
        + stats.queued
        + stats.dropped_invalid
        + stats.dropped_queue_full
        + stats.dropped_rejected
        + stats.dropped_closed
    )


async def test_posts_every_kind_of_span_as_valid_json_with_b3_deny(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport()
    tracer = tracer_for(transport)
    with tracer.new_trace(sampled=True) as root:
        root.name("Checkout").kind(SERVER).tag("note", "naïve ☕ 東京")
        with root.new_child("GET", CLIENT) as child:
            child.remote_endpoint("Inventory", ipv4="127.0.0.1", port=0)
            child.annotate("ws")
            child.annotate("")
    with tracer.new_trace(sampled=True, debug=True):
        pass
    incoming = TraceContext("a" * 32, "b" * 16, "c" * 16, sampled=True, debug=False, shared=True)
    with tracer.join_span(incoming):
        pass
    unfinished = Record(tracer.new_trace(sampled=True).context, ENDPOINT).start(1)
    transport.send(unfinished)

    spans = await collector.wait_for_spans(5)
    await wait_until(lambda: transport.stats().sent == 5)

    assert len(spans) == 5
    by_id = {span["id"]: span for span in spans}
    assert by_id[root.context.span_id]["tags"] == {"note": "naïve ☕ 東京"}
    assert by_id[child.context.span_id]["remoteEndpoint"] == {
        "serviceName": "inventory",
        "ipv4": "127.0.0.1",
    }
    assert by_id[child.context.span_id]["parentId"] == root.context.span_id
    assert "duration" not in by_id[unfinished.context.span_id]
    for post in collector.posts:
        assert post.headers["Content-Type"] == "application/json"
        assert post.headers.getall("b3") == ["0"]
        assert [name for name in post.headers if name.lower().startswith("x-b3-")] == []
    assert transport.stats() == ReportingStats(
        received=5,
        sent=5,
        queued=0,
        dropped_invalid=0,
        dropped_queue_full=0,
        dropped_rejected=0,
        dropped_closed=0,
        retries=0,
    )


async def test_own_session_has_no_trace_configs(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport()
    finish_spans(tracer_for(transport), 1)
    await collector.wait_for_spans(1)

    # White-box on purpose: a traced reporting session would trace its own posts, forever.
    session = transport._session
    assert isinstance(session, aiohttp.ClientSession)
    assert session.trace_configs == []


def test_address_is_the_collector_url() -> None:
    transport = ZipkinTransport("http://127.0.0.1:9411/api/v2/spans")

    assert transport.address == URL("http://127.0.0.1:9411/api/v2/spans")
    assert isinstance(transport.address, URL)


@pytest.mark.parametrize(
    ("address", "completed"),
    [
        ("http://127.0.0.1:9411", "http://127.0.0.1:9411/api/v2/spans"),
        ("http://127.0.0.1:9411/", "http://127.0.0.1:9411/api/v2/spans"),
        ("https://127.0.0.1", "https://127.0.0.1/api/v2/spans"),
        # A path is the user's choice (a proxy's prefix, say): kept as it is.
        ("http://127.0.0.1:9411/zipkin/api/v2/spans", "http://127.0.0.1:9411/zipkin/api/v2/spans"),
        ("http://127.0.0.1:9411/api/v2/spans", "http://127.0.0.1:9411/api/v2/spans"),
    ],
)
async def test_address_without_a_path_gets_the_v2_span_endpoint(
    address: str, completed: str
) -> None:
    assert ZipkinTransport(address).address == URL(completed)
    async with create(address, ENDPOINT) as tracer:  # nothing sent: closing posts nothing
        transport = tracer._transport
        assert isinstance(transport, ZipkinTransport)
        assert transport.address == URL(completed)


async def test_spans_reach_a_collector_given_by_its_address_alone(collector: Collector) -> None:
    transport = ZipkinTransport(str(collector.url.origin()), send_interval=0.05)
    try:
        ids = finish_spans(tracer_for(transport), 2)
        spans = await collector.wait_for_spans(2)
    finally:
        await transport.close()

    assert [span["id"] for span in spans] == ids
    assert [post.status for post in collector.posts] == [202]


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9411/api/v2/spans", "/api/v2/spans", "ftp://127.0.0.1/x"]
)
def test_address_must_be_an_absolute_http_url(address: str) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        ZipkinTransport(address)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"max_queue_size": 0}, "max_queue_size must be >= 1"),
        ({"send_interval": 0}, "send_interval must be > 0"),
        ({"send_timeout": 0}, "send_timeout must be > 0"),
        ({"close_timeout": -1}, "close_timeout must be >= 0"),
        ({"gzip_threshold": -1}, "gzip_threshold must be >= 0"),
        ({"gzip_level": 0}, "gzip_level must be from 1 to 9, not 0"),
        ({"gzip_level": 10}, "gzip_level must be from 1 to 9, not 10"),
        ({"retry_delay": 0}, "need 0 < retry_delay <= retry_max_delay"),
        ({"retry_delay": 2, "retry_max_delay": 1}, "need 0 < retry_delay <= retry_max_delay"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ZipkinTransport("http://127.0.0.1:9411/api/v2/spans", **options)


async def test_full_batches_are_posted_without_waiting_for_the_interval(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(batch_size=3, send_interval=60)
    ids = finish_spans(tracer_for(transport), 7)

    posts = await collector.wait_for_posts(2)
    await wait_until(lambda: transport.stats().sent == 6)

    assert [[span["id"] for span in post.spans] for post in posts] == [ids[0:3], ids[3:6]]
    assert transport.stats().queued == 1
    await transport.close()
    assert [span["id"] for span in collector.posts[2].spans] == ids[6:]
    assert len(collector.posts) == 3


async def test_partial_batch_is_posted_after_send_interval(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(batch_size=100, send_interval=0.05)
    ids = finish_spans(tracer_for(transport), 2)

    (post,) = await collector.wait_for_posts(1)

    assert [span["id"] for span in post.spans] == ids
    await wait_until(lambda: transport.stats().sent == 2)


async def test_close_delivers_what_is_buffered(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport(batch_size=100, send_interval=60)
    ids = finish_spans(tracer_for(transport), 3)
    assert collector.posts == []

    await transport.close()

    assert [span["id"] for span in collector.spans] == ids
    assert transport.stats().sent == 3


async def test_large_bodies_are_gzipped(collector: Collector, make_transport: Factory) -> None:
    transport = make_transport(batch_size=20, send_interval=60, gzip_threshold=1024)
    ids = finish_spans(tracer_for(transport), 20, payload="x" * 100)

    (post,) = await collector.wait_for_posts(1)

    assert post.headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(post.body)
    assert len(plain) > 1024
    assert [span["id"] for span in json.loads(plain)] == ids


@pytest.mark.parametrize("level", [None, 1, 9])
async def test_bodies_are_gzipped_at_the_level_asked_for(
    collector: Collector, make_transport: Factory, level: int | None
) -> None:
    options = {} if level is None else {"gzip_level": level}
    transport = make_transport(batch_size=20, send_interval=60, gzip_threshold=0, **options)
    finish_spans(tracer_for(transport), 20, payload="x" * 100)

    (post,) = await collector.wait_for_posts(1)

    plain = gzip.decompress(post.body)
    # The two levels give different bytes for this body, so the comparison below can tell.
    assert gzip.compress(plain, compresslevel=1, mtime=0) != gzip.compress(
        plain, compresslevel=9, mtime=0
    )
    expected = 1 if level is None else level  # the default is level 1
    assert post.body == gzip.compress(plain, compresslevel=expected, mtime=0)


async def test_small_bodies_are_not_gzipped(collector: Collector, make_transport: Factory) -> None:
    transport = make_transport(gzip_threshold=1024)
    finish_spans(tracer_for(transport), 1)

    (post,) = await collector.wait_for_posts(1)

    assert "Content-Encoding" not in post.headers
    assert len(post.body) <= 1024
    assert json.loads(post.body) == post.spans


async def test_bodies_are_not_gzipped_by_default(
    collector: Collector, make_transport: Factory
) -> None:
    # The default favours the application's CPU (see RATIONALE, *Performance*).
    transport = make_transport(batch_size=20, send_interval=60)
    ids = finish_spans(tracer_for(transport), 20, payload="x" * 100)

    (post,) = await collector.wait_for_posts(1)

    assert "Content-Encoding" not in post.headers
    assert len(post.body) > 1024
    assert [span["id"] for span in json.loads(post.body)] == ids


async def test_a_full_default_batch_is_500_spans_in_one_post(
    collector: Collector, make_transport: Factory
) -> None:
    # No interval flush can interfere: only a full batch (or close) posts.
    transport = make_transport(send_interval=60)
    ids = finish_spans(tracer_for(transport), 501)

    (post,) = await collector.wait_for_posts(1)

    assert [span["id"] for span in json.loads(post.body)] == ids[:500]
    await wait_until(lambda: transport.stats().sent == 500)
    assert transport.stats().queued == 1
    assert len(collector.posts) == 1


async def test_gzip_can_be_turned_off(collector: Collector, make_transport: Factory) -> None:
    transport = make_transport(batch_size=20, gzip_threshold=None)
    finish_spans(tracer_for(transport), 20, payload="x" * 100)

    (post,) = await collector.wait_for_posts(1)

    assert "Content-Encoding" not in post.headers
    assert len(post.body) > 1024


async def test_invalid_record_is_dropped_and_the_batch_delivered(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport(batch_size=3, send_interval=60)
    tracer = tracer_for(transport)
    first = finish_spans(tracer, 1)
    zero_ids = TraceContext("0" * 16, None, "1" * 16, sampled=True, debug=False, shared=False)
    with caplog.at_level(logging.WARNING, "aiozipkin_client.reporting"), tracer.to_span(zero_ids):
        pass
    rest = finish_spans(tracer, 2)

    (post,) = await collector.wait_for_posts(1)

    assert [span["id"] for span in post.spans] == first + rest
    assert transport.stats().dropped_invalid == 1
    assert any("invalid record" in m and "traceId" in m for m in caplog.messages)


class _Broken(Record):
    def asdict(self) -> dict[str, Any]:
        raise RuntimeError("broken record")


async def test_record_that_fails_to_encode_never_raises_into_the_app(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport()
    context = TraceContext("a" * 16, None, "b" * 16, sampled=True, debug=False, shared=False)

    transport.send(_Broken(context, ENDPOINT))
    finish_spans(tracer_for(transport), 1)

    await collector.wait_for_spans(1)
    await wait_until(lambda: transport.stats().sent == 1)
    assert transport.stats().dropped_invalid == 1


async def test_lone_surrogate_does_not_poison_the_batch(
    collector: Collector, make_transport: Factory
) -> None:
    transport = make_transport()
    tracer = tracer_for(transport)
    with tracer.new_trace(sampled=True) as span:
        span.tag("bad", "half \ud800 pair")

    (received,) = await collector.wait_for_spans(1)

    assert received["tags"] == {"bad": "half ? pair"}


async def test_send_after_close_is_counted_not_raised(
    collector: Collector, make_transport: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make_transport()
    tracer = tracer_for(transport)
    await transport.close()

    with caplog.at_level(logging.WARNING, "aiozipkin_client.reporting"):
        finish_spans(tracer, 2)

    assert transport.stats().dropped_closed == 2
    assert transport.stats().received == 2
    assert any("transport closed" in message for message in caplog.messages)
    assert collector.posts == []


async def test_close_is_idempotent(collector: Collector, make_transport: Factory) -> None:
    unused = make_transport()
    await unused.close()
    await unused.close()
    used = make_transport()
    finish_spans(tracer_for(used), 2)

    await asyncio.gather(used.close(), used.close())
    await used.close()

    assert used.stats().sent == 2
    assert len(collector.spans) == 2


async def test_every_record_is_accounted_for(collector: Collector, make_transport: Factory) -> None:
    transport = make_transport(batch_size=4)
    tracer = tracer_for(transport)
    finish_spans(tracer, 9)
    with tracer.to_span(TraceContext("0" * 16, None, "1" * 16, True, False, False)):
        pass

    await collector.wait_for_spans(9)
    await transport.close()

    stats = transport.stats()
    assert stats.received == 10
    assert accounted(stats) == 10
    assert (stats.sent, stats.dropped_invalid) == (9, 1)


async def test_create_is_a_drop_in_for_aiozipkin_create(collector: Collector) -> None:
    async with create(str(collector.url), ENDPOINT, sample_rate=1.0, send_interval=0.05) as tracer:
        assert isinstance(tracer, Tracer)
        with tracer.new_trace() as span:
            span.name("charge card")

    (received,) = collector.spans
    assert received["id"] == span.context.span_id
    assert received["name"] == "charge card"
    # Only this package's transport sends the explicit B3 deny.
    assert collector.posts[0].headers["b3"] == "0"


async def test_create_result_can_be_awaited(collector: Collector) -> None:
    tracer = await create(collector.url, ENDPOINT, sample_rate=1.0, batch_size=1)
    with tracer.new_trace() as span:
        span.name("awaited")

    (received,) = await collector.wait_for_spans(1)
    await tracer.close()

    assert received["id"] == span.context.span_id


async def test_create_honours_sample_rate(collector: Collector) -> None:
    async with create(collector.url, ENDPOINT, sample_rate=0.0, send_interval=0.05) as tracer:
        with tracer.new_trace() as span:
            span.name("not sampled")

    assert span.is_noop
    assert collector.posts == []


def test_create_rejects_bad_options_at_the_call() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        create("http://127.0.0.1:9411/api/v2/spans", ENDPOINT, batch_size=0)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"batch_size": "100"}, TypeError, "batch_size must be a whole number, not '100'"),
        ({"batch_size": 100.0}, TypeError, "batch_size must be a whole number, not 100.0"),
        ({"max_queue_size": True}, TypeError, "max_queue_size must be a whole number, not True"),
        (
            {"gzip_threshold": 1.5},
            TypeError,
            "gzip_threshold must be a whole number or None, not 1.5",
        ),
        ({"send_timeout": "10"}, TypeError, "send_timeout must be a number of seconds, not '10'"),
        ({"gzip_level": 6.0}, TypeError, "gzip_level must be a whole number from 1 to 9, not 6.0"),
        ({"retry_delay": None}, TypeError, "retry_delay must be a number of seconds, not None"),
    ],
)
def test_options_of_the_wrong_kind_fail_at_construction(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        ZipkinTransport("http://127.0.0.1:9411/api/v2/spans", **options)
    with pytest.raises(error, match=re.escape(message)):
        create("http://127.0.0.1:9411/api/v2/spans", ENDPOINT, **options)


@pytest.mark.parametrize(
    ("endpoint", "options", "error", "message"),
    [
        (
            "checkout",
            {},
            TypeError,
            "local_endpoint must be an aiozipkin Endpoint, such as"
            " aiozipkin.create_endpoint('checkout'), not 'checkout'",
        ),
        (ENDPOINT, {"sample_rate": 10}, ValueError, "sample_rate must be from 0.0 to 1.0, not 10"),
        (ENDPOINT, {"sample_rate": -0.5}, ValueError, "from 0.0 to 1.0, not -0.5"),
        (ENDPOINT, {"sample_rate": "0.1"}, TypeError, "sample_rate must be a number"),
    ],
)
def test_create_checks_its_own_options(
    endpoint: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        create("http://127.0.0.1:9411/api/v2/spans", endpoint, **options)


def test_transport_can_be_built_and_fed_outside_an_event_loop() -> None:
    collector = Collector()
    transport = ZipkinTransport(collector.url, send_interval=0.05)
    tracer = tracer_for(transport)
    early = finish_spans(tracer, 1)  # no event loop exists yet: buffered

    async def main() -> list[dict[str, Any]]:
        await collector.start()
        try:
            late = finish_spans(tracer, 1)
            spans = await collector.wait_for_spans(2)
            await transport.close()
            assert [span["id"] for span in spans] == early + late
            return spans
        finally:
            await collector.stop()

    spans = asyncio.run(main())

    assert len(spans) == 2
    assert collector.invalid == []
    assert transport.stats().sent == 2


def test_close_alone_flushes_spans_sent_outside_a_loop() -> None:
    collector = Collector()
    transport = ZipkinTransport(collector.url, send_interval=60)
    ids = finish_spans(tracer_for(transport), 2)

    async def main() -> None:
        await collector.start()
        try:
            await transport.close()
        finally:
            await collector.stop()

    asyncio.run(main())

    assert [span["id"] for span in collector.spans] == ids
    assert transport.stats().sent == 2


UNCLOSED = "ZipkinTransport for http://127.0.0.1:9411/api/v2/spans was never closed"


def unclosed_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if "was never closed" in m]


def test_a_transport_collected_with_spans_buffered_says_how_many_were_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = ZipkinTransport("http://127.0.0.1:9411", send_interval=60)
    finish_spans(tracer_for(transport), 3)  # no event loop: they wait in the buffer
    assert transport.stats().queued == 3

    with caplog.at_level(logging.WARNING, "aiozipkin_client.reporting"):
        del transport
        gc.collect()

    assert unclosed_warnings(caplog) == [
        f"{UNCLOSED}: 3 buffered spans were lost. Close it before the event loop ends:"
        " `await tracer.close()`, or `async with create(...) as tracer`"
    ]


async def test_closed_or_empty_transports_are_collected_silently(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "aiozipkin_client.reporting"):
        empty = ZipkinTransport(collector.url)
        closed = ZipkinTransport(collector.url, send_interval=60)
        finish_spans(tracer_for(closed), 2)
        await closed.close()
        assert closed.stats().sent == 2
        del empty, closed
        gc.collect()

    assert unclosed_warnings(caplog) == []


def test_a_transport_left_at_interpreter_exit_says_how_many_were_lost() -> None:
    script = """
import aiozipkin
from aiozipkin.sampler import Sampler
from aiozipkin_client import ZipkinTransport

transport = ZipkinTransport("http://127.0.0.1:9411", send_interval=60)
tracer = aiozipkin.Tracer(transport, Sampler(sample_rate=1.0), aiozipkin.create_endpoint("job"))
for _ in range(2):
    with tracer.new_trace(sampled=True):
        pass
print("queued", transport.stats().queued)
"""  # exits without close(), the transport still referenced by a module global
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stdout) == (0, "queued 2\n")
    assert done.stderr == (
        f"{UNCLOSED}: 2 buffered spans were lost. Close it before the event loop ends:"
        " `await tracer.close()`, or `async with create(...) as tracer`\n"
    )
