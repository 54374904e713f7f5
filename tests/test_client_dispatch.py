"""aiohttp reaches our handlers directly, without aiosignal's loop, and nothing else changes.

``make_trace_config`` gives its trace config signals that hand aiohttp their only receiver's
coroutine (``aiozipkin_client._dispatch``). These tests drive real sessions against a local
backend and check that every signal our config receives skipped aiosignal's ``send()`` (on the
installed aiohttp: the matrix runs this on every supported version), that the spans and headers
are what they were, and that whatever is not the single-receiver case keeps aiosignal's
behaviour: a user's own receivers beside ours, a signal sent before it is frozen, a receiver
that raises.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiosignal import Signal
from aiozipkin.tracer import Tracer

import aiozipkin_client
from aiozipkin_client import annotations as ann
from aiozipkin_client._dispatch import DirectSignal, use_direct_signals
from aiozipkin_client.client import SIGNALS
from aiozipkin_client.parsers import ERROR
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, LoopbackResolver, refused_url
from tests.kit.signals import Observer

BODY_CHUNKS = 3


@pytest.fixture
def aiosignal_sends(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How often aiosignal's own ``Signal.send`` ran, by the ``id`` of the signal's owner."""
    sends: Counter[int] = Counter()
    original = Signal.send

    def counting_send(self: Signal, *args: Any, **kwargs: Any) -> Any:
        sends[id(self._owner)] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Signal, "send", counting_send)
    return sends


async def streamed_body() -> AsyncIterator[bytes]:
    for index in range(BODY_CHUNKS):
        yield b"chunk %d;" % index


async def test_every_signal_reaches_our_handlers_without_aiosignals_loop(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, aiosignal_sends: Counter[int]
) -> None:
    ours = aiozipkin_client.make_trace_config(tracer)
    # A plain config beside ours: what aiohttp sent, through aiosignal's send() (so the counter
    # sees aiohttp's path at all).
    observer = Observer()
    async with aiohttp.ClientSession(trace_configs=[ours, observer.config]) as session:
        async with session.get(backend.url / "redirect/1") as response:
            assert await response.text() == "ok"
        async with session.post(backend.url / "echo", data=streamed_body()) as response:
            assert response.status == 200
            await response.read()

    sent = observer.counts
    # The signals these requests fire, each at least once: a connection made and reused, a
    # redirect, the body's chunks, headers and the response.
    assert {
        "on_request_start",
        "on_request_redirect",
        "on_connection_create_start",
        "on_connection_create_end",
        "on_connection_reuseconn",
        "on_request_headers_sent",
        "on_request_chunk_sent",
        "on_response_chunk_received",
        "on_request_end",
    } <= set(sent)
    assert aiosignal_sends[id(observer.config)] == sum(sent.values())
    assert aiosignal_sends[id(ours)] == 0

    # Every one reached our handlers: each span has what its signals record, and carries the
    # ids its request arrived with.
    spans = {span["id"]: span for span in recorder.take(3)}
    first, second, post = (spans[request.b3()["x-b3-spanid"]] for request in backend.received)
    assert ann.REDIRECT in values(first)
    assert ann.CONNECTION_REUSED in values(second)
    assert {ann.WIRE_SEND, ann.WIRE_RECEIVE, ann.REQUEST_BODY_START, ann.REQUEST_BODY_END} <= set(
        values(post)
    )
    assert post["tags"][ann.REQUEST_SIZE] == str(len(backend.received[-1].body))
    assert backend.received[-1].body == b"".join(b"chunk %d;" % i for i in range(BODY_CHUNKS))


def values(span: dict[str, Any]) -> list[str]:
    return [annotation["value"] for annotation in span["annotations"]]


async def test_dns_queue_and_failure_signals_reach_our_handlers_directly_too(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, aiosignal_sends: Counter[int]
) -> None:
    ours = aiozipkin_client.make_trace_config(tracer)
    observer = Observer()
    connector = aiohttp.TCPConnector(limit=1, force_close=True, resolver=LoopbackResolver())
    async with aiohttp.ClientSession(
        trace_configs=[ours, observer.config], connector=connector
    ) as session:

        async def get_ok() -> None:
            async with session.get(backend.url.with_host("localhost") / "ok") as response:
                assert await response.text() == "ok"

        await get_ok()  # resolved: a DNS cache miss
        await asyncio.gather(get_ok(), get_ok())  # cache hits; one waits for the only connection
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(await refused_url())

    # The signals the first test's requests do not send.
    assert {
        "on_dns_resolvehost_start",
        "on_dns_resolvehost_end",
        "on_dns_cache_miss",
        "on_dns_cache_hit",
        "on_connection_queued_start",
        "on_connection_queued_end",
        "on_request_exception",
    } <= set(observer.counts)
    assert aiosignal_sends[id(observer.config)] == sum(observer.counts.values())
    assert aiosignal_sends[id(ours)] == 0
    spans = recorder.take(4)
    assert ann.DNS_CACHE_MISS in values(spans[0])
    assert any(ann.QUEUE.start in values(span) for span in spans[1:3])
    assert ERROR in spans[3]["tags"]


async def test_a_receiver_of_the_users_own_runs_beside_ours(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, aiosignal_sends: Counter[int]
) -> None:
    config = aiozipkin_client.make_trace_config(tracer)
    seen: list[tuple[str, str]] = []

    async def users_start(
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        seen.append(("start", params.url.path))

    async def users_end(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        seen.append(("end", str(params.response.status)))

    config.on_request_start.append(users_start)
    config.on_request_end.append(users_end)
    async with (
        aiohttp.ClientSession(trace_configs=[config]) as session,
        session.get(backend.url / "ok") as response,
    ):
        assert await response.text() == "ok"

    assert seen == [("start", "/ok"), ("end", "200")]
    # The two signals with two receivers went through aiosignal, the others did not.
    assert aiosignal_sends[id(config)] == 2
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "200"
    assert backend.take_one().b3()["x-b3-spanid"] == span["id"]


async def test_a_signal_sent_before_it_is_frozen_is_refused_as_aiosignal_refuses(
    tracer: Tracer,
) -> None:
    # No session has frozen either config yet.
    arguments: tuple[Any, ...] = (None, SimpleNamespace(), None)
    plain = aiohttp.TraceConfig()
    plain.on_request_start.append(_ignore)
    with pytest.raises(RuntimeError) as aiosignals:
        await plain.on_request_start.send(*arguments)

    config = aiozipkin_client.make_trace_config(tracer)
    with pytest.raises(RuntimeError) as ours:
        await config.on_request_start.send(*arguments)

    assert str(ours.value) == str(aiosignals.value)


async def _ignore(*_: object) -> None:
    return None


async def test_what_the_only_receiver_returns_or_raises_reaches_the_sender() -> None:
    signal = DirectSignal(None)
    calls: list[tuple[object, ...]] = []

    async def receiver(*args: object, **kwargs: object) -> str:
        calls.append((*args, *kwargs.values()))
        if args[0] == "fail":
            raise ValueError("from the receiver")
        return "returned"

    signal.append(receiver)
    signal.freeze()
    assert await signal.send("ok", 2) == "returned"
    with pytest.raises(ValueError, match="from the receiver"):
        await signal.send("fail", 3)
    # Keywords go through aiosignal's own send(), which returns nothing.
    assert await signal.send("kw", key=1) is None
    assert calls == [("ok", 2), ("fail", 3), ("kw", 1)]


def test_signals_aiohttp_keeps_elsewhere_or_with_receivers_are_left_alone() -> None:
    class Elsewhere(aiohttp.TraceConfig):
        def __init__(self) -> None:
            super().__init__()
            self.kept: Signal = Signal(self)

        @property
        def on_request_end(self) -> Signal:  # type: ignore[override]
            return self.kept

    config = Elsewhere()
    config.on_request_start.append(_ignore)
    before = {name: getattr(config, name) for name in SIGNALS}

    assert use_direct_signals(config, SIGNALS) is False

    after = {name: getattr(config, name) for name in SIGNALS}
    assert after["on_request_end"] is before["on_request_end"]
    assert after["on_request_start"] is before["on_request_start"]
    assert type(after["on_request_start"]) is Signal
    replaced = {name for name in SIGNALS if type(after[name]) is DirectSignal}
    assert replaced == set(SIGNALS) - {"on_request_start", "on_request_end"}
    # Nor was aiohttp's own attribute behind it, which the property no longer returns.
    hidden: Any = config._on_request_end
    assert type(hidden) is Signal

    fresh = aiohttp.TraceConfig()
    assert use_direct_signals(fresh, SIGNALS) is True
    assert all(type(getattr(fresh, name)) is DirectSignal for name in SIGNALS)


def test_a_replacement_the_property_does_not_return_is_undone() -> None:
    class Mapped(aiohttp.TraceConfig):
        """Reads on_request_end from a table of its own, filled from aiohttp's attribute."""

        def __init__(self) -> None:
            super().__init__()
            self.table = {"on_request_end": self._on_request_end}

        @property
        def on_request_end(self) -> Any:
            return self.table["on_request_end"]

    config = Mapped()
    aiohttps_own = config.on_request_end
    assert use_direct_signals(config, ["on_request_end"]) is False
    # Replaced and put back: freeze() and the property still see the same signal.
    hidden: Any = config._on_request_end
    assert hidden is aiohttps_own
    assert config.on_request_end is aiohttps_own
