"""Handler replay: what each tracer's own code costs per small GET, without the network.

``python -m bench.replay`` (``make bench-replay``) makes one real small GET to an aiohttp app on
127.0.0.1 with a recording ``TraceConfig``, keeps the signals aiohttp sent for it and their
parameters, and then calls each configuration's handlers with exactly those signals, in that
order, thousands of times, under a new parent per request (as ``make bench`` does). Each
replayed request gets its own URL (an id in the path, as in ``make bench``), its own headers
and its own parameter objects, all made before the timed loop: a URL object seen twice would
hand every later request the properties (path, host, string form) a tracer had already made
it compute. The only work timed is the tracers', each signal sent through its ``send()`` as
aiohttp sends it (aiosignal's loop for the empty config and aiozipkin; ours and the floors'
through ``aiozipkin_client._dispatch``): no sockets, no parsing, no event-loop turns, so the figures move by a few percent
between runs where the end-to-end benchmark's move by tens. It is a magnifying glass, not the
verdict: the targets are judged by ``make bench``, which also charges what this leaves out
(aiohttp's trace machinery, posting to the collector, the interpreter's caches shared with
aiohttp's own work).

``--instructions`` (``make bench-instructions``) counts instead of timing: it runs one block of
each configuration alone under valgrind (``cachegrind``, no cache simulation, a fixed string
hash seed), twice with different request counts, and divides the difference in instructions
executed by the difference in requests. The count is the same from run to run within a few
hundred instructions, whatever else the machine is doing, so a change of one per cent in a
tracer's own work shows; time on a shared VM cannot show that (it moved by 2x within seconds
while these counts were made). Instructions are not time (a cache miss costs more than an
addition), so this, too, is a magnifying glass: it needs valgrind on the PATH.

What each configuration's reporting costs is charged too: after each block, the spans it
reported are encoded as its sender would encode them (aiozipkin: ``json.dumps`` of
``Record.asdict()`` in batches of 100; ours and the same-spans floor: ``encode_batch`` in
batches of the transport's ``batch_size``, gzipped if its options say so), and nothing is posted.

Configurations: ``empty`` (an empty ``TraceConfig``: the loop every figure includes),
``aiozipkin``, ``aiozipkin_client`` (its defaults) and ``same_spans`` (``bench.floors``). The
report gives, per configuration, the median CPU time per request over the rounds; each tracer's
cost above ``empty``; and our cost over aiozipkin's and over the same-spans floor's, as the
median of the per-round ratios. ``--signals`` adds the time spent in each signal's handlers
(with a clock read around each, so the figures are a little higher).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import statistics
import time
from collections.abc import Callable, Sequence
from random import getrandbits
from types import SimpleNamespace
from typing import Any, Final

import aiohttp
import aiozipkin
import attr
from aiohttp import web
from aiozipkin.aiohttp_helpers import zipkin_context
from aiozipkin.helpers import TraceContext
from aiozipkin.record import Record
from multidict import CIMultiDict
from yarl import URL

import aiozipkin_client
from aiozipkin_client.client import SIGNALS
from aiozipkin_client.reporting import ZipkinTransport
from aiozipkin_client.reporting._model import encode_batch

from . import valgrind
from .floors import same_spans
from .run import frozen_heap
from .tracers import SERVICE

__all__ = ("main",)

#: Where the transports would post: nothing listens there, and nothing is ever posted.
_NOWHERE: Final = "http://127.0.0.1:9/api/v2/spans"
#: aiozipkin's sender posts its queue in batches of this many (its send_max_size).
_AIOZIPKIN_BATCH: Final = 100
CONFIGS: Final = ("empty", "aiozipkin", "aiozipkin_client", "same_spans")

Call = tuple[str, Any]
#: The request counts of the two counted runs of ``--instructions``.
_COUNTED_REQUESTS: Final = (500, 1500)


async def _capture(url: str) -> tuple[list[Call], aiohttp.ClientSession]:
    """The signals (and parameters) of a small GET on a pooled connection."""
    calls: list[Call] = []
    config = aiohttp.TraceConfig()
    for name in SIGNALS:

        async def record(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: Any, name: str = name
        ) -> None:
            calls.append((name, params))

        getattr(config, name).append(record)
    session = aiohttp.ClientSession(trace_configs=[config])
    for _ in range(2):  # the second one reuses the connection the first one opened
        calls.clear()
        async with session.get(url) as response:
            await response.read()
    return calls, session


class _Setup:
    """One configuration: its trace config and what reporting its spans costs."""

    def __init__(
        self, config: aiohttp.TraceConfig, finish: Callable[[], int], close: Callable[[], Any]
    ) -> None:
        self.config = config
        #: Encode what was reported since the last call, as the sender would; returns the count.
        self.finish = finish
        self.close = close


def _transport_finish(transport: ZipkinTransport) -> Callable[[], int]:
    def finish() -> int:
        spans = list(transport._buffer.items)
        size = transport._batch_size
        for start in range(0, len(spans), size):
            body = encode_batch(spans[start : start + size])
            threshold = transport._gzip_threshold
            if threshold is not None and len(body) > threshold:
                gzip.compress(body, compresslevel=transport._gzip_level, mtime=0)
        transport._buffer.clear()
        return len(spans)

    return finish


async def _setups(sampled: bool) -> dict[str, _Setup]:
    endpoint = aiozipkin.create_endpoint(SERVICE, ipv4="127.0.0.1")
    rate = 1.0 if sampled else 0.0

    azk = await aiozipkin.create(_NOWHERE, endpoint, sample_rate=rate)
    records: list[dict[str, Any]] = []

    def keep(record: Record) -> None:
        records.append(record.asdict())  # what aiozipkin's Transport.send() does

    azk._transport.send = keep  # type: ignore[method-assign]

    def azk_finish() -> int:
        for start in range(0, len(records), _AIOZIPKIN_BATCH):
            json.dumps(records[start : start + _AIOZIPKIN_BATCH]).encode()
        count = len(records)
        records.clear()
        return count

    ours = await aiozipkin_client.create(_NOWHERE, endpoint, sample_rate=rate)
    assert isinstance(ours._transport, ZipkinTransport)
    floor_transport = ZipkinTransport(_NOWHERE)

    async def nothing() -> None:
        return None

    return {
        "empty": _Setup(aiohttp.TraceConfig(), lambda: 0, nothing),
        "aiozipkin": _Setup(aiozipkin.make_trace_config(azk), azk_finish, azk.close),
        "aiozipkin_client": _Setup(
            aiozipkin_client.make_trace_config(ours),
            _transport_finish(ours._transport),
            ours.close,
        ),
        "same_spans": _Setup(
            same_spans(floor_transport, SERVICE, "127.0.0.1"),
            _transport_finish(floor_transport),
            floor_transport.close,
        ),
    }


def _fresh(calls: Sequence[Call], origin: str, count: int) -> list[list[Call]]:
    """``count`` requests' own copies of the captured signals: request ``i`` has its own URL
    (``/items/i``), its own headers (with the captured content; parameters that shared a headers
    object share its copy) and its own parameter objects."""
    requests = []
    for i in range(count):
        url = URL(f"{origin}/items/{i}")
        copies: dict[int, CIMultiDict[str]] = {}
        request = []
        for name, params in calls:
            changes: dict[str, Any] = {}
            if hasattr(params, "url"):
                changes["url"] = url
            headers = getattr(params, "headers", None)
            if headers is not None:
                if id(headers) not in copies:
                    copies[id(headers)] = CIMultiDict(headers)
                changes["headers"] = copies[id(headers)]
            request.append((name, attr.evolve(params, **changes) if changes else params))
        requests.append(request)
    return requests


def _parents(count: int, sampled: bool) -> list[TraceContext]:
    return [
        TraceContext(
            f"{getrandbits(128):032x}", None, f"{getrandbits(64):016x}", sampled, False, False
        )
        for _ in range(count)
    ]


async def _block(
    setup: _Setup,
    requests: Sequence[Sequence[Call]],
    session: aiohttp.ClientSession,
    parents: Sequence[TraceContext],
    per_signal: dict[str, float] | None,
) -> tuple[float, int]:
    """CPU microseconds per request for one block, and the spans it reported; request ``i``
    replays ``requests[i]`` under ``parents[i]``."""
    config = setup.config
    # Sent as aiohttp sends them: through each signal's send(), frozen as a session freezes
    # them (aiosignal's loop for the empty config and aiozipkin, ours through _dispatch).
    config.freeze()
    signals = {name: getattr(config, name) for name in SIGNALS}
    rows = [
        (parent, [(name, signals[name], params) for name, params in request])
        for parent, request in zip(parents, requests, strict=True)
    ]
    make_context = config._trace_config_ctx_factory
    gc.collect()
    started = time.process_time()
    for parent, handlers in rows:
        token = zipkin_context.set(parent)
        context = make_context(trace_request_ctx=None)
        for name, signal, params in handlers:
            if per_signal is None:
                await signal.send(session, context, params)
            else:
                clock = time.perf_counter_ns()
                await signal.send(session, context, params)
                per_signal[name] = per_signal.get(name, 0.0) + time.perf_counter_ns() - clock
        zipkin_context.reset(token)
    clock = time.perf_counter_ns()
    spans = setup.finish()
    if per_signal is not None:
        per_signal["(reporting)"] = per_signal.get("(reporting)", 0.0) + (
            time.perf_counter_ns() - clock
        )
    return (time.process_time() - started) / len(parents) * 1e6, spans


def _ratio(ours: Sequence[float], theirs: Sequence[float], empty: Sequence[float]) -> float:
    return statistics.median(
        (mine - base) / (other - base)
        for mine, other, base in zip(ours, theirs, empty, strict=True)
    )


async def _run(args: argparse.Namespace) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    origin = f"http://127.0.0.1:{port}"
    calls, session = await _capture(f"{origin}/hello")
    setups = await _setups(not args.unsampled)
    configs = CONFIGS if args.only is None else (args.only,)
    times: dict[str, list[float]] = {name: [] for name in configs}
    signals: dict[str, dict[str, float]] | None = (
        {name: {} for name in configs} if args.signals else None
    )
    try:
        for name in configs:  # warm-up, not counted
            await _block(
                setups[name],
                _fresh(calls, origin, 200),
                session,
                _parents(200, not args.unsampled),
                None,
            )
        for round_ in range(1 if args.only else args.rounds):
            parents = _parents(args.requests, not args.unsampled)
            order = configs[round_ % len(configs) :] + configs[: round_ % len(configs)]
            # Every block's own requests, made before any is timed, then kept out of the
            # collector's view (a full collection of them would land in some block's time).
            requests = {name: _fresh(calls, origin, args.requests) for name in order}
            with frozen_heap():
                for name in order:
                    cpu, spans = await _block(
                        setups[name],
                        requests.pop(name),
                        session,
                        parents,
                        None if signals is None else signals[name],
                    )
                    expected = 0 if args.unsampled or name == "empty" else len(parents)
                    if spans != expected:
                        raise SystemExit(f"{name} reported {spans} spans, expected {expected}")
                    times[name].append(cpu)
    finally:
        for setup in setups.values():
            await setup.close()
        await session.close()
        await runner.cleanup()
    if args.only is not None:
        return
    _report(args, calls, times, signals)


def _report(
    args: argparse.Namespace,
    calls: Sequence[Call],
    times: dict[str, list[float]],
    signals: dict[str, dict[str, float]] | None,
) -> None:
    mode = "unsampled" if args.unsampled else "sampled"
    print(
        f"handler replay, {mode} small GET on a pooled connection; {args.rounds} rounds of"
        f" {args.requests} requests; signals: {', '.join(name for name, _ in calls)}"
    )
    empty = statistics.median(times["empty"])
    for name in CONFIGS:
        median = statistics.median(times[name])
        above = "" if name == "empty" else f"  ({median - empty:.2f} above empty)"
        print(f"  {name:17s} {median:6.2f} us/request{above}")
    ours, base = times["aiozipkin_client"], times["empty"]
    print(
        f"  aiozipkin_client over aiozipkin: {_ratio(ours, times['aiozipkin'], base):.3f};"
        f" same_spans over aiozipkin: {_ratio(times['same_spans'], times['aiozipkin'], base):.3f}"
        " (medians of per-round ratios, above empty)"
    )
    if signals is not None:
        total = args.rounds * args.requests
        names = [name for name, _ in calls] + ["(reporting)"]
        print("  per signal, us/request (clock reads included):")
        for signal in names:
            cells = "  ".join(
                f"{config}={signals[config].get(signal, 0.0) / total / 1000:5.2f}"
                for config in CONFIGS[1:]
            )
            print(f"    {signal:28s} {cells}")


def _instructions(args: argparse.Namespace) -> None:
    valgrind.require_valgrind("--instructions")
    few, many = _COUNTED_REQUESTS
    unsampled = ["--unsampled"] if args.unsampled else []
    counted = valgrind.per_request(
        {config: (["bench.replay", "--only", config, *unsampled], few, many) for config in CONFIGS}
    )
    per_request = {config: events["instructions"] for config, events in counted.items()}
    mode = "unsampled" if args.unsampled else "sampled"
    print(
        f"instructions per replayed {mode} small GET (one block of {many} requests minus one of"
        f" {few}, PYTHONHASHSEED=0):"
    )
    empty = per_request["empty"]
    for config, count in per_request.items():
        above = "" if config == "empty" else f"  ({count - empty:,.0f} above empty)"
        print(f"  {config:17s} {count:9,.0f}{above}")
    ours = per_request["aiozipkin_client"] - empty
    for other in ("aiozipkin", "same_spans"):
        print(f"  aiozipkin_client over {other}: {ours / (per_request[other] - empty):.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (11)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per block (3000)")
    parser.add_argument("--unsampled", action="store_true", help="parents that are not sampled")
    parser.add_argument("--signals", action="store_true", help="time each signal's handlers")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind instead of timing (see above)",
    )
    parser.add_argument(
        "--only", choices=CONFIGS, help="one unreported block of this configuration alone"
    )
    args = parser.parse_args(argv)
    if args.instructions:
        _instructions(args)
    else:
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
