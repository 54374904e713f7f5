"""The memory check: resident memory stays within 5 MB over 100,000 traced requests.

One long-lived session traced by this package (every signal and tag, reporting through
``aiozipkin_client.create``) sends 16 concurrent small GETs, as a busy service would. After a
warm-up (connections, caches, the reporter's buffer and session, the allocator's arenas), the
resident set size (``VmRSS`` of ``/proc/self/status``) is read every 1,000 requests; the check
holds when neither the peak nor the final value is more than 5 MB above the starting value.
A leak of one small object per request (~100 bytes) would show as ~10 MB.
"""

from __future__ import annotations

import gc
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiozipkin.helpers import TraceContext

import aiozipkin_client

from .tracers import start_tracing
from .workloads import CONCURRENCY, concurrent_small, make_parents

__all__ = ("LIMIT_BYTES", "QUICK_REQUESTS", "REQUESTS", "check", "render", "rss_bytes")

REQUESTS: Final = 100_000
QUICK_REQUESTS: Final = 10_000
WARMUP: Final = 10_000
STEP: Final = 1_000
LIMIT_BYTES: Final = 5_000_000
CONFIG: Final = "aiozipkin_client"


def rss_bytes() -> int:
    """This process's resident set size now, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _no_scope(i: int) -> nullcontext[None]:
    return nullcontext()


async def check(base: str, collector_url: str, requests: int = REQUESTS) -> dict[str, Any]:
    """Send ``requests`` traced requests after a warm-up; RSS at start, end and peak."""
    print(f"memory: {WARMUP} warm-up requests, then {requests} traced requests ({CONFIG})")
    tracing = await start_tracing(CONFIG, collector_url)
    trace_id, span_id, _ = make_parents("sampled", 1)[0]
    parent = TraceContext(trace_id, None, span_id, True, False, False)
    started = time.perf_counter()
    async with aiohttp.ClientSession(trace_configs=tracing.trace_configs) as session:
        with aiozipkin_client.use_span(parent):
            await concurrent_small(session, base, WARMUP, _no_scope)
            gc.collect()
            start = rss_bytes()
            samples = [start]
            done = 0
            while done < requests:
                step = min(STEP, requests - done)
                await concurrent_small(session, base, step, _no_scope)
                done += step
                samples.append(rss_bytes())
            end = samples[-1]
        await tracing.close()
    peak = max(samples)
    growth = max(peak, end) - start
    result = {
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
        "rss_every_1000": samples,
    }
    return result


def render(result: dict[str, Any]) -> str:
    mib = 1024 * 1024
    verdict = "holds" if result["ok"] else "MISSED"
    return (
        f"Memory ({result['config']}, {result['requests']:,} traced requests after"
        f" {result['warmup']:,} warm-up, {result['concurrency']} concurrent): RSS start"
        f" {result['start_bytes'] / mib:.1f} MiB, end {result['end_bytes'] / mib:.1f} MiB,"
        f" peak {result['peak_bytes'] / mib:.1f} MiB; growth"
        f" {result['growth_bytes'] / 1e6:+.2f} MB (limit 5 MB: {verdict})"
    )
