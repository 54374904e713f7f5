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
from aiozipkin.helpers import TraceContext
from aiozipkin.tracer import Tracer

import aiozipkin_client
from aiozipkin_client import annotations as ann
from aiozipkin_client._dispatch import NOTHING_TO_DO, DirectSignal, use_direct_signals
from aiozipkin_client.client import SIGNALS, ClientTracing
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
    assert await signal.send("ok", 2, 3) == "returned"
    with pytest.raises(ValueError, match="from the receiver"):
        await signal.send("fail", 2, 3)
    # Other positional arguments go through aiosignal's own send(), which calls the receiver
    # with the same arguments and returns nothing.
    assert await signal.send("two", 2) is None
    assert await signal.send("four", 2, 3, 4) is None
    assert await signal.send("one") is None
    # Keywords, which aiohttp never passes, are refused before anything runs.
    with pytest.raises(TypeError):
        signal.send("kw", 2, 3, key=4)  # type: ignore[call-arg]
    assert calls == [("ok", 2, 3), ("fail", 2, 3), ("two", 2), ("four", 2, 3, 4), ("one",)]


def handled_signal(calls: list[object]) -> tuple[DirectSignal, Any]:
    """A signal made for a receiver that runs a plain function, with an idle rule."""

    def function(session: object, ctx: object, params: object) -> None:
        calls.append(params)

    async def receiver(*args: object) -> None:
        function(*args[:3])

    signal = DirectSignal(None, idle=("hop", None), handler=(receiver, function))
    return signal, receiver


async def test_a_signal_calls_the_plain_function_of_its_own_receiver() -> None:
    calls: list[object] = []
    signal, receiver = handled_signal(calls)
    signal.append(receiver)
    signal.freeze()
    idle, busy, bare = SimpleNamespace(hop=None), SimpleNamespace(hop="a hop"), SimpleNamespace()

    # The same finished awaitable every time, awaited as often as aiohttp sends: after the
    # function ran, or instead of it when the context says there is nothing to do (a context
    # without the attribute counts as having its idle value).
    for ctx, params in ((idle, "idle"), (busy, "busy"), (bare, "bare"), (busy, "again")):
        answer = signal.send("session", ctx, params)
        assert answer is NOTHING_TO_DO
        assert await answer is None
    assert calls == ["busy", "again"]
    # Other arguments go through aiosignal, which always calls the receiver.
    assert await signal.send("session", idle, "four", "arguments") is None
    assert calls == ["busy", "again", "four"]


async def test_beside_another_receiver_or_in_place_of_its_own_a_signal_is_aiosignals() -> None:
    calls: list[object] = []
    signal, receiver = handled_signal(calls)
    signal.append(receiver)

    async def users(*args: object) -> None:
        calls.append(("user's", args[2]))

    signal.append(users)
    signal.freeze()
    # Both run, each once, in order, whatever the context says.
    assert await signal.send("session", SimpleNamespace(hop=None), "both") is None
    assert calls == ["both", ("user's", "both")]

    calls.clear()
    replaced, _ = handled_signal(calls)
    replaced.append(users)  # only the user's receiver: its own rule does not apply
    replaced.freeze()
    assert await replaced.send("session", SimpleNamespace(hop=None), "only") is None
    assert calls == [("user's", "only")]


async def test_the_finished_awaitable_can_be_awaited_anywhere_any_number_of_times() -> None:
    async def awaits_it() -> object:
        return await NOTHING_TO_DO

    # In tasks of their own, side by side, and in this one: it never suspends or fails.
    results = await asyncio.gather(*(awaits_it() for _ in range(50)))
    assert results == [None] * 50
    for _ in range(50):
        assert await NOTHING_TO_DO is None


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


@pytest.fixture
def handler_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each of our signal handlers was really called, by signal name."""
    calls: Counter[str] = Counter()
    for name in SIGNALS:
        original = getattr(ClientTracing, name)

        def counting(
            self: ClientTracing,
            session: aiohttp.ClientSession,
            ctx: SimpleNamespace,
            params: Any,
            _original: Any = original,
            _name: str = name,
        ) -> None:
            calls[_name] += 1
            _original(self, session, ctx, params)

        monkeypatch.setattr(ClientTracing, name, counting)
    return calls


PARENT_TRACE = "463ac35c9f6413ad48485a3953bb6124"
PARENT_SPAN = "a2fb4a1d1a96d312"


async def redirect_and_upload(
    config: aiohttp.TraceConfig, observer: Observer, backend: Backend, sampled: bool
) -> None:
    parent = TraceContext(PARENT_TRACE, None, PARENT_SPAN, sampled, False, False)
    request_ctx = {"span_context": parent}
    async with aiohttp.ClientSession(trace_configs=[config, observer.config]) as session:
        async with session.get(
            backend.url / "redirect/1", trace_request_ctx=request_ctx
        ) as response:
            assert await response.text() == "ok"
        async with session.post(
            backend.url / "echo", data=streamed_body(), trace_request_ctx=request_ctx
        ) as response:
            assert await response.read() == b"".join(b"chunk %d;" % i for i in range(BODY_CHUNKS))


async def test_a_request_not_sampled_calls_only_the_handlers_that_carry_its_ids(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    handler_calls: Counter[str],
) -> None:
    observer = Observer()
    await redirect_and_upload(aiozipkin_client.make_trace_config(tracer), observer, backend, False)

    # aiohttp sent every signal of a request; ours answered all but these without a call.
    assert {
        "on_connection_create_start",
        "on_connection_reuseconn",
        "on_request_headers_sent",
        "on_request_chunk_sent",
        "on_response_chunk_received",
        "on_request_end",
    } <= set(observer.counts)
    assert handler_calls == {"on_request_start": 2, "on_request_redirect": 1}
    # And every hop still carried the parent's trace, a span id of its own and the decision.
    hops = [request.b3() for request in backend.received]
    assert [request.path for request in backend.received] == ["/redirect/1", "/ok", "/echo"]
    assert all(hop["x-b3-traceid"] == PARENT_TRACE for hop in hops)
    assert all(hop["x-b3-parentspanid"] == PARENT_SPAN for hop in hops)
    assert all(hop["x-b3-sampled"] == "0" for hop in hops)
    assert len({hop["x-b3-spanid"] for hop in hops}) == 3
    recorder.expect_none()


async def test_a_sampled_request_calls_every_handler_while_its_span_is_open(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    handler_calls: Counter[str],
) -> None:
    observer = Observer()
    await redirect_and_upload(aiozipkin_client.make_trace_config(tracer), observer, backend, True)

    spans = recorder.take(3)
    # Each signal reached our handler as often as aiohttp sent it, but the body's last read:
    # aiohttp sends it once the body is in, after the span ended with the body (so it has
    # nothing to do, and it is answered for).
    assert {
        name: count
        for name, count in observer.counts.items()
        if name != "on_response_chunk_received"
    } == {
        name: count for name, count in handler_calls.items() if name != "on_response_chunk_received"
    }
    assert (
        handler_calls["on_response_chunk_received"] < observer.counts["on_response_chunk_received"]
    )
    hops = [request.b3() for request in backend.received]
    assert [span["id"] for span in spans] == [hop["x-b3-spanid"] for hop in hops]
    assert all(hop["x-b3-sampled"] == "1" for hop in hops)
    assert ann.REQUEST_BODY_END in values(spans[2])


async def test_an_excluded_request_reaches_only_the_start_and_redirect_handlers(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    handler_calls: Counter[str],
) -> None:
    observer = Observer()
    config = aiozipkin_client.make_trace_config(tracer, exclude_urls=[r"/(redirect|ok|echo)"])
    await redirect_and_upload(config, observer, backend, True)

    assert observer.counts["on_request_redirect"] == 1
    # A redirect is always looked at (a request not sampled has no hop but needs new ids);
    # here it finds nothing to do.
    assert handler_calls == {"on_request_start": 2, "on_request_redirect": 1}
    assert [request.b3() for request in backend.received] == [{}, {}, {}]
    recorder.expect_none()
