"""The memory check: resident memory stays within 5 MB over 100,000 traced requests, twice.

One long-lived session traced by this package (every signal and tag, reporting through
``aiozipkin_client.create``'s transport) sends 16 concurrent small GETs, as a busy service would,
every one under a sampled parent, so every request makes a span. Two runs:

* ``traced``: the collector is up and takes every span;
* ``collector_down``: the collector refuses connections the whole time (its address is a port
  bound on 127.0.0.1 but not listening), so every POST fails, the transport backs off and
  retries, and its bounded buffer (``max_queue_size``, 10,000 spans by default) drops the
  oldest spans. The warm-up is at least that long, so the buffer is already full when the
  measurement starts: what must not grow is everything else.

After a warm-up (connections, caches, the reporter's buffer and session, the allocator's arenas),
the resident set size (``VmRSS`` of ``/proc/self/status``) is read every 1,000 requests; a run
holds when neither the peak nor the final value is more than 5 MB above the starting value.
A leak of one small object per request (~100 bytes) would show as ~10 MB. The transport's own
counters (spans received, sent, dropped) are recorded beside the figures.
"""

from __future__ import annotations

import gc
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiozipkin.helpers import TraceContext

import aiozipkin_client

from .tracers import start_tracing
from .workloads import CONCURRENCY, concurrent_small, make_parents

__all__ = ("LIMIT_BYTES", "QUICK_REQUESTS", "REQUESTS", "RUNS", "check", "render", "rss_bytes")

REQUESTS: Final = 100_000
QUICK_REQUESTS: Final = 10_000
#: At least the transport's default max_queue_size, so the collector-down run starts full.
WARMUP: Final = 10_000
STEP: Final = 1_000
LIMIT_BYTES: Final = 5_000_000
CONFIG: Final = "aiozipkin_client"
RUNS: Final = ("traced", "collector_down")


def rss_bytes() -> int:
    """This process's resident set size now, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextmanager
def refused_address() -> Iterator[str]:
    """A collector URL on 127.0.0.1 whose port refuses every connection while in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Bound (so no one else gets the port) but not listening: connect() is refused.
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}/api/v2/spans"


def _no_scope(i: int) -> nullcontext[None]:
    return nullcontext()


async def _run(run: str, base: str, collector_url: str, requests: int) -> dict[str, Any]:
    print(f"memory ({run}): {WARMUP} warm-up requests, then {requests} traced requests ({CONFIG})")
    if run == "collector_down":
        print("  (the collector refuses connections: the transport's warnings are expected)")
    tracing = await start_tracing(CONFIG, collector_url)
    trace_id, span_id, _ = make_parents("sampled", 1)[0]
    parent = TraceContext(trace_id, None, span_id, True, False, False)
    started = time.perf_counter()
    async with aiohttp.ClientSession(trace_configs=tracing.trace_configs) as session:
        with aiozipkin_client.use_span(parent):
            await concurrent_small(session, base, range(WARMUP), _no_scope)
            gc.collect()
            start = rss_bytes()
            samples = [start]
            done = 0
            while done < requests:
                step = min(STEP, requests - done)
                await concurrent_small(session, base, range(step), _no_scope)
                done += step
                samples.append(rss_bytes())
            end = samples[-1]
        await tracing.close()
    # The transport behind aiozipkin_client.create's tracer, for its counters.
    transport = getattr(tracing.tracer, "_transport", None)
    reporting = (
        asdict(transport.stats())
        if isinstance(transport, aiozipkin_client.ZipkinTransport)
        else None
    )
    overflowed = reporting is not None and not reporting["sent"] and reporting["dropped_queue_full"]
    if run == "collector_down" and not overflowed:
        print(
            f"  ! {run}: the collector was meant to be unreachable and the buffer to overflow;"
            f" the transport's counters: {reporting}",
            file=sys.stderr,
        )
    peak = max(samples)
    growth = max(peak, end) - start
    return {
        "run": run,
        "config": CONFIG,
        "requests": requests,
        "warmup": WARMUP,
        "concurrency": CONCURRENCY,
        "start_bytes": start,
        "end_bytes": end,
        "peak_bytes": peak,
        "growth_bytes": growth,
        "limit_bytes": LIMIT_BYTES,
        "ok": growth <= LIMIT_BYTES,
        "seconds": time.perf_counter() - started,
        "reporting": reporting,
        "rss_every_1000": samples,
    }


async def check(base: str, collector_url: str, requests: int = REQUESTS) -> dict[str, Any]:
    """Both runs of ``requests`` traced requests after a warm-up; RSS at start, end and peak,
    per run, and ``ok`` when both hold."""
    results = {"traced": await _run("traced", base, collector_url, requests)}
    with refused_address() as refused:
        results["collector_down"] = await _run("collector_down", base, refused, requests)
    return {"ok": all(r["ok"] for r in results.values()), "runs": results}


_TITLES: Final = {"traced": "collector up", "collector_down": "collector refusing connections"}


def render(result: dict[str, Any]) -> str:
    mib = 1024 * 1024
    lines = []
    for run in result["runs"].values():
        verdict = "holds" if run["ok"] else "MISSED"
        line = (
            f"- Memory, {_TITLES.get(run['run'], run['run'])} ({run['config']},"
            f" {run['requests']:,} traced requests after {run['warmup']:,} warm-up,"
            f" {run['concurrency']} concurrent): RSS start {run['start_bytes'] / mib:.1f} MiB,"
            f" end {run['end_bytes'] / mib:.1f} MiB, peak {run['peak_bytes'] / mib:.1f} MiB;"
            f" growth {run['growth_bytes'] / 1e6:+.2f} MB (limit +5 MB: {verdict})"
        )
        stats = run.get("reporting")
        if stats:
            line += (
                f"; spans received {stats['received']:,}, sent {stats['sent']:,}, dropped"
                f" (buffer full) {stats['dropped_queue_full']:,}, dropped at close"
                f" {stats['dropped_closed']:,}, retries {stats['retries']:,}"
            )
        lines.append(line)
    return "\n".join(lines)
