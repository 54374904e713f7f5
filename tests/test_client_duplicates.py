"""Two tracing configs on one session make duplicate spans: said once, on the first request.

Each case sends several requests through a real session to a local backend and asserts the one
warning (per session) and the duplicate spans it warns about.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import aiohttp
import aiozipkin
import pytest
from aiozipkin.tracer import Tracer

import aiozipkin_client
from aiozipkin_client._duplicates import DuplicateCheck
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend

LOGGER = "aiozipkin_client"
TWO_OF_OURS = (
    "this ClientSession has 2 aiozipkin_client trace configs: each traces every request, so"
    " every request is reported 2 times. Give a session one tracing config: one"
    " make_trace_config(tracer)."
)
OURS_AND_AIOZIPKINS = (
    "this ClientSession has both aiozipkin_client's trace config and aiozipkin's own"
    " (aiozipkin.make_trace_config): each traces every request, so every request is reported"
    " 2 times, and aiozipkin's may send X-B3-Flags: 0. Give a session one tracing config: one"
    " make_trace_config(tracer)."
)


def duplicate_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and "this ClientSession has" in record.getMessage()
    ]


async def get_ok(session: aiohttp.ClientSession, backend: Backend, times: int) -> None:
    for _ in range(times):
        async with session.get(backend.url / "ok") as response:
            assert await response.text() == "ok"


async def test_two_of_our_configs_warn_once_per_session(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    configs = [aiozipkin_client.make_trace_config(tracer) for _ in range(2)]

    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(2):  # a second session with the same configs is warned about too
            async with aiohttp.ClientSession(trace_configs=configs) as session:
                await get_ok(session, backend, 3)

    assert duplicate_warnings(caplog) == [TWO_OF_OURS, TWO_OF_OURS]
    spans = recorder.take(12)  # what the warning is about: two CLIENT spans per request
    assert {span["kind"] for span in spans} == {"CLIENT"}


async def test_sessions_used_in_turn_are_each_warned_about_once(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The configs remember every session they looked at, not only the last one: two
    sessions taking turns with the same configs still make one warning each."""
    configs = [aiozipkin_client.make_trace_config(tracer) for _ in range(2)]

    with caplog.at_level(logging.WARNING, LOGGER):
        async with (
            aiohttp.ClientSession(trace_configs=configs) as first,
            aiohttp.ClientSession(trace_configs=configs) as second,
        ):
            for _ in range(3):
                await get_ok(first, backend, 1)
                await get_ok(second, backend, 1)

    assert duplicate_warnings(caplog) == [TWO_OF_OURS, TWO_OF_OURS]
    assert len(recorder.take(12)) == 12


async def test_a_session_is_looked_at_only_when_the_session_changes(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cost the module's docstring promises: requests on the session of the request before
    skip the check; a config shared by sessions in turn checks at each change, and looks at
    each session's configs once."""
    calls: list[aiohttp.ClientSession] = []
    looks: list[aiohttp.ClientSession] = []
    check, look_at = DuplicateCheck.check, DuplicateCheck._look_at

    def counted_check(self: DuplicateCheck, session: aiohttp.ClientSession) -> None:
        calls.append(session)
        check(self, session)

    def counted_look(self: DuplicateCheck, session: aiohttp.ClientSession) -> None:
        looks.append(session)
        look_at(self, session)

    monkeypatch.setattr(DuplicateCheck, "check", counted_check)
    monkeypatch.setattr(DuplicateCheck, "_look_at", counted_look)
    config = aiozipkin_client.make_trace_config(tracer)
    async with (
        aiohttp.ClientSession(trace_configs=[config]) as first,
        aiohttp.ClientSession(trace_configs=[config]) as second,
    ):
        await get_ok(first, backend, 4)
        assert (calls, looks) == ([first], [first])
        for _ in range(2):
            await get_ok(second, backend, 1)
            await get_ok(first, backend, 1)
    assert calls == [first, second, first, second, first]
    assert looks == [first, second]
    assert len(recorder.take(8)) == 8


async def test_the_same_config_twice_is_a_duplicate(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    config = aiozipkin_client.make_trace_config(tracer)

    with caplog.at_level(logging.WARNING, LOGGER):
        async with aiohttp.ClientSession(trace_configs=[config, config]) as session:
            await get_ok(session, backend, 2)

    assert duplicate_warnings(caplog) == [TWO_OF_OURS]
    recorder.take(4)


@pytest.mark.parametrize("aiozipkin_first", [True, False], ids=["aiozipkin-first", "ours-first"])
async def test_ours_beside_aiozipkins_client_config_warns_once(
    tracer: Tracer,
    recorder: SpanRecorder,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    aiozipkin_first: bool,
) -> None:
    ours, theirs = aiozipkin_client.make_trace_config(tracer), aiozipkin.make_trace_config(tracer)
    configs = [theirs, ours] if aiozipkin_first else [ours, theirs]

    with caplog.at_level(logging.WARNING, LOGGER):
        async with aiohttp.ClientSession(trace_configs=configs) as session:
            with tracer.new_trace(sampled=True) as root:
                # aiozipkin's config traces only requests given a parent this way.
                parent = {"span_context": root.context}
                for _ in range(3):
                    async with session.get(backend.url / "ok", trace_request_ctx=parent) as resp:
                        await resp.read()

    assert duplicate_warnings(caplog) == [OURS_AND_AIOZIPKINS]
    names = sorted(span.get("name", "") for span in recorder.take(7))
    assert names == ["client GET /ok"] * 3 + ["get"] * 3 + ["unknown"]  # "unknown": the root
    # The headers sent are those of whichever config ran last (ours replaces all B3 headers).
    flags = {received.b3().get("x-b3-flags") for received in backend.received}
    assert flags == ({None} if aiozipkin_first else {"0"})


async def test_three_configs_with_aiozipkins_name_them_all(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    configs = [
        aiozipkin_client.make_trace_config(tracer),
        aiozipkin.make_trace_config(tracer),
        aiozipkin_client.make_trace_config(tracer),
    ]

    with caplog.at_level(logging.WARNING, LOGGER):
        async with aiohttp.ClientSession(trace_configs=configs) as session:
            await get_ok(session, backend, 1)  # no parent: aiozipkin's config records nothing

    (message,) = duplicate_warnings(caplog)
    assert message.startswith(
        "this ClientSession has 2 aiozipkin_client trace configs and aiozipkin's own client"
        " trace config (aiozipkin.make_trace_config): each traces every request, so every"
        " request is reported 3 times, and aiozipkin's may send X-B3-Flags: 0."
    )
    recorder.take(2)


async def test_one_config_per_session_says_nothing(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    config = aiozipkin_client.make_trace_config(tracer)

    with caplog.at_level(logging.DEBUG, LOGGER):
        # One config shared by two sessions is normal: each session traces its requests once.
        async with (
            aiohttp.ClientSession(trace_configs=[config]) as first,
            aiohttp.ClientSession(trace_configs=[config]) as second,
        ):
            await get_ok(first, backend, 2)
            await get_ok(second, backend, 2)
            await get_ok(first, backend, 1)

    assert duplicate_warnings(caplog) == []
    assert caplog.records == []
    recorder.take(5)


# The script a fresh interpreter runs: every module of the package imported, then one request
# through a session with two of our configs (so the look at the session runs in full) to a
# server with our middleware. Prints the OpenTelemetry modules loaded by then.
NO_OPENTELEMETRY = textwrap.dedent(
    """
    import asyncio, pkgutil, sys
    import aiohttp, aiozipkin
    from aiohttp import web
    from aiozipkin.sampler import Sampler
    from aiozipkin.transport import StubTransport
    import aiozipkin_client

    for module in pkgutil.walk_packages(aiozipkin_client.__path__, "aiozipkin_client."):
        __import__(module.name)

    async def ok(request):
        return web.Response(text="ok")

    async def main():
        transport = StubTransport()
        tracer = aiozipkin.Tracer(
            transport, Sampler(sample_rate=1.0), aiozipkin.create_endpoint("app")
        )
        app = web.Application()
        app.router.add_get("/ok", ok)
        aiozipkin_client.setup(app, tracer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        configs = [aiozipkin_client.make_trace_config(tracer) for _ in range(2)]
        async with aiohttp.ClientSession(trace_configs=configs) as session:
            async with session.get(f"http://127.0.0.1:{port}/ok") as response:
                assert await response.text() == "ok"
        await runner.cleanup()
        await tracer.close()
        assert len(transport.records) == 3, transport.records  # two CLIENT spans, one SERVER

    asyncio.run(main())
    print(sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))
    """
)


def test_the_package_never_imports_opentelemetry() -> None:
    """OpenTelemetry is recognised by module name only: a user without it (or who has it and
    does not use it) must not pay for importing it. The suite's own process has imported it
    long ago, so a fresh interpreter is asked."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", NO_OPENTELEMETRY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The warning (through logging's last resort) shows the look at the session ran.
    assert (done.returncode, done.stderr) == (0, TWO_OF_OURS + "\n")
    assert done.stdout == "[]\n"
