"""The demo: the three example services in one process, a few requests, their traces shown.

    python -m examples.demo                           # traces drawn in the terminal
    python -m examples.demo --zipkin http://localhost:9411   # or ZIPKIN_URL=...: sent to Zipkin

It starts ``frontend``, ``backend`` and ``inventory`` (see :mod:`examples.services`) on
127.0.0.1 with random ports, and sends them a few checkouts from a traced client of its own:
one that works, one for an order that does not exist (a 404: an error for the caller, not for
the servers), one where the inventory fails (an exception three services down), and one that is
not sampled (its ids still travel, with ``X-B3-Sampled: 0``, and nothing is recorded).

Without a Zipkin address, or when the one given is not reachable, spans are kept in memory and
each trace is drawn as a waterfall (:mod:`examples.waterfall`). With one, they are reported there
and the demo prints each trace's link in the Zipkin UI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TextIO

import aiohttp
import aiozipkin
from aiohttp import web
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import TransportABC
from yarl import URL

import aiozipkin_client
from examples.services import backend_app, frontend_app, inventory_app, open_tracer, zipkin_urls
from examples.waterfall import render

__all__ = ("SCENARIOS", "KeptSpans", "Scenario", "amain", "main")

# The services' own error logs (the inventory's traceback) would bury the waterfall; the error is
# on the span, which is the point of the demo.
_server_log = logging.getLogger("examples.demo.server")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One request the demo sends to the frontend, and the status it should get."""

    title: str
    order_id: str
    sampled: bool
    expected_status: int


SCENARIOS: Final = (
    Scenario("checkout order 42", "42", sampled=True, expected_status=200),
    Scenario("checkout order 99 (no such order)", "99", sampled=True, expected_status=404),
    Scenario("checkout order 13 (the inventory fails)", "13", sampled=True, expected_status=502),
    Scenario("checkout order 42, not sampled", "42", sampled=False, expected_status=200),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a scenario's request got: its trace id and status."""

    scenario: Scenario
    trace_id: str
    status: int


class KeptSpans(TransportABC):
    """The embedded default: a transport that keeps every span, as Zipkin v2 JSON dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def send(self, record: Record) -> None:
        """Keep the span."""
        self.spans.append({k: v for k, v in record.asdict().items() if _present(v)})

    async def close(self) -> None:
        """Nothing to flush: the spans stay here for the demo to draw."""
        return None

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of one trace, in the order they were reported."""
        return [span for span in self.spans if span["traceId"] == trace_id]


def _present(value: object) -> bool:
    # As Zipkin v2 JSON: absent fields are left out, not null, false or empty.
    return value is not None and value is not False and value != [] and value != {}


@asynccontextmanager
async def _tracer(service: str, zipkin: str | None, kept: KeptSpans) -> AsyncIterator[Tracer]:
    if zipkin is not None:
        async with open_tracer(service, zipkin, sample_rate=1.0) as tracer:
            yield tracer
        return
    endpoint = aiozipkin.create_endpoint(service)
    tracer = aiozipkin.Tracer(kept, Sampler(sample_rate=1.0), endpoint)
    yield tracer
    await tracer.close()


@asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[URL]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, logger=_server_log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield URL.build(scheme="http", host="127.0.0.1", port=runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def _reachable(base: URL, timeout: float = 3.0) -> str | None:
    """None if a TCP connection to ``base`` opens, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(base.host, base.port)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    await writer.wait_closed()
    return None


async def _checkout(
    scenario: Scenario, tracer: Tracer, session: aiohttp.ClientSession, frontend: URL
) -> Outcome:
    # A local root span per scenario: its trace id is how the demo finds the trace afterwards,
    # and the client span of the request below is its child (use_span).
    with tracer.new_trace(sampled=scenario.sampled) as root:
        root.name(scenario.title)
        with aiozipkin_client.use_span(root):
            async with session.get(frontend / "checkout" / scenario.order_id) as response:
                await response.read()
                status = response.status
    return Outcome(scenario, root.context.trace_id, status)


async def _run_scenarios(zipkin: str | None, kept: KeptSpans) -> list[Outcome]:
    async with AsyncExitStack() as stack:
        # Entered first, closed last: every span of the servers and sessions is flushed.
        demo, frontend, backend, inventory = [
            await stack.enter_async_context(_tracer(name, zipkin, kept))
            for name in ("demo", "frontend", "backend", "inventory")
        ]
        inventory_url = await stack.enter_async_context(_serve(inventory_app(inventory)))
        backend_url = await stack.enter_async_context(_serve(backend_app(backend, inventory_url)))
        frontend_url = await stack.enter_async_context(_serve(frontend_app(frontend, backend_url)))
        config = aiozipkin_client.make_trace_config(demo, remote_service_name="frontend")
        session = await stack.enter_async_context(aiohttp.ClientSession(trace_configs=[config]))
        return [await _checkout(s, demo, session, frontend_url) for s in SCENARIOS]


def _can_draw_unicode(out: TextIO) -> bool:
    try:
        "█·└─✗".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _show_embedded(outcomes: Sequence[Outcome], kept: KeptSpans, out: TextIO) -> bool:
    ascii = not _can_draw_unicode(out)
    consistent = True
    for number, outcome in enumerate(outcomes, 1):
        title = f"{number}. {outcome.scenario.title} -> {outcome.status}, trace {outcome.trace_id}"
        spans = kept.trace(outcome.trace_id)
        if outcome.scenario.sampled:
            print(render(spans, title=title, ascii=ascii), file=out)
        else:
            print(title, file=out)
            print(
                f"  not sampled: {len(spans)} spans recorded; its ids still went to every"
                " service, with X-B3-Sampled: 0",
                file=out,
            )
            consistent = consistent and not spans
        print(file=out)
    return consistent


def _show_zipkin(outcomes: Sequence[Outcome], base: URL, out: TextIO) -> None:
    print(f"Spans reported to Zipkin at {base}:", file=out)
    for number, outcome in enumerate(outcomes, 1):
        head = f"{number}. {outcome.scenario.title} -> {outcome.status}"
        if outcome.scenario.sampled:
            print(f"{head}: {base}/zipkin/traces/{outcome.trace_id}", file=out)
        else:
            print(f"{head}: not sampled, nothing reported (trace {outcome.trace_id})", file=out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Three traced services, a few requests, and their traces.",
    )
    parser.add_argument(
        "--zipkin",
        default=None,
        help="Zipkin to report to, e.g. http://localhost:9411 (default: env ZIPKIN_URL;"
        " without either, traces are drawn in the terminal)",
    )
    return parser


async def amain(argv: Sequence[str], out: TextIO | None = None) -> int:
    """The demo, in a running event loop; returns the exit status."""
    out = out or sys.stdout
    options = _parser().parse_args(argv)
    zipkin: str | None = options.zipkin or os.environ.get("ZIPKIN_URL") or None
    base: URL | None = None
    if zipkin is not None:
        try:
            base, _ = zipkin_urls(zipkin)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        problem = await _reachable(base)
        if problem is not None:
            print(
                f"Zipkin at {base} is not reachable ({problem}): showing the traces here.\n",
                file=out,
            )
            zipkin = base = None

    _server_log.propagate = False
    if not _server_log.handlers:
        _server_log.addHandler(logging.NullHandler())

    kept = KeptSpans()
    outcomes = await _run_scenarios(zipkin, kept)
    as_expected = all(o.status == o.scenario.expected_status for o in outcomes)
    if base is None:
        as_expected = _show_embedded(outcomes, kept, out) and as_expected
    else:
        _show_zipkin(outcomes, base, out)
    return 0 if as_expected else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; ``argv`` without the program name (default: ``sys.argv[1:]``)."""
    return asyncio.run(amain(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
