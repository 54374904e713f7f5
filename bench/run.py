"""Run the benchmark: client CPU time and wall time per request, per tracer, interleaved.

The server and the collector run in a child process (``bench.server``), pinned to CPU 1 while
this process is pinned to CPU 0, so the CPU time measured here is the client's alone:
``time.process_time()`` counts every thread of this process, so exporter threads and background
reporting tasks are charged too.

One *block* is one configuration running one case for a fixed number of requests with its own
session and tracer. A round runs, case by case, one block per configuration, the blocks cut into
*slices* (500 small GETs or 100 large requests: ``bench.workloads``) and interleaved: the first
slice of every configuration, then the second of every one, and so on, in orders where each
configuration follows every other equally often (:func:`balanced_order`). A slice's measured
time starts before its first request and ends when its tracer has flushed the slice's spans to
the collector (``Tracing.flush``) and the garbage the slice left was collected; the collector's
count after each slice checks that every span of that slice, and no other, arrived, so no post
is charged to another configuration. A block's time is the sum of its slices'. Why slices: the
machine's speed drifts over seconds (consecutive blocks of the earlier, whole-block design were
correlated, r = 0.6), and configurations measured 50-100 ms apart see nearly the same machine:
for the same running time, the ratios' intervals came out three to four times narrower.
Sessions, tracers and parents are made before the slices, and what exists then is frozen out of
the garbage collector's view (``gc.freeze``), so the collection that ends each slice looks only
at what the slices made. Each request is made under its own parent, sampled as the case says
(sampled, unsampled, or exactly 1 in 100: ``bench.workloads``); the parents are made and turned
into each tracer's form before the measured time (``bench.tracers``).

The report gives, per case and configuration, the median over rounds of the CPU and wall time
per request, and each configuration's *overhead*: the median over rounds of (traced minus
untraced CPU time per request), both measured in the same round. *Above aiohttp* is the same
with the empty ``TraceConfig`` floor (``bench.floors``) in place of "untraced": the part of an
overhead that is the tracer's own, once aiohttp's price for having a trace config at all is
taken out.

Our overhead is then divided by each other tracer's (ratios of the medians), plainly and above
aiohttp, and the targets of issue #11 (:data:`TARGETS`) are judged on the plain ratios: each
verdict is printed as holds or MISSED, with the ratio above aiohttp beside it. Beside each
verdict goes a 90% bootstrap interval of its ratio (:func:`ratio_interval`, drawn from the
run's own rounds), and whether the target lies inside it: when it does, the verdict is the
noise's, not the code's. The memory check (``bench.memory``) follows the timed rounds.
``--summarise RESULT`` computes the figures, intervals and verdicts again from the samples an
earlier run saved, without running anything.

Duration: a full run (``python -m bench``) is 8 cases x 8 configurations x :data:`ROUNDS` rounds
(30: the unsampled overheads are small, so their medians need more rounds than the sampled ones
did) plus the two 100,000-request memory runs. On a 2-CPU VM a round takes about 30 s (3,000
requests per small-GET block, 300 per 1 MiB block, in 6 or 3 slices, plus setting up each
block and a count of the collector's spans after each slice), and the whole about 16 minutes.
``--quick`` is a smoke run of the same (every case and configuration, a tenth of the requests,
:data:`QUICK_ROUNDS` rounds, 10,000-request memory runs): about a minute, and it writes nothing
unless asked to; its figures are too few to judge anything by.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import aiohttp

from . import memory
from .floors import FLOORS
from .server import SPANS_PATH, CollectorStats, pin_to_cpu, serve
from .tracers import CONFIGS, TRACERS, Tracing, start_tracing
from .workloads import CASES, Case, Parent, Scope, make_parents

__all__ = ("main",)

RESULTS: Final = Path(__file__).parent / "results"
#: Rounds of a full run, and of a --quick one.
ROUNDS: Final = 30
QUICK_ROUNDS: Final = 2
CLIENT_CPU: Final = 0
SERVER_CPU: Final = 1
OURS: Final = "aiozipkin_client"
#: The floor the "above aiohttp" figures subtract: aiohttp's cost of an empty trace config.
FLOOR: Final = "empty_config"
OTHERS: Final = ("aiozipkin", "opentelemetry")
#: The floor with our headers and spans and the least code (``bench.floors.same_spans``).
SAME_SPANS: Final = "same_spans"


#: The bootstrap interval of each ratio (:func:`ratio_interval`): draws, coverage, and the
#: fewest paired rounds it is computed for.
RESAMPLES: Final = 2000
INTERVAL: Final = 0.90
MIN_ROUNDS: Final = 5


@dataclass(frozen=True)
class Target:
    """Our overhead is at most ``limit`` times ``other``'s, in each of ``cases``."""

    cases: tuple[str, ...]
    other: str
    limit: float


#: The targets of issue #11 (item 4). The 1%-sampled cases have none: their ratios are shown.
TARGETS: Final = (
    Target(("sequential_small", "concurrent_small"), "aiozipkin", 0.85),
    Target(("sequential_small", "concurrent_small"), "opentelemetry", 0.33),
    Target(("sequential_small_unsampled", "concurrent_small_unsampled"), "aiozipkin", 0.75),
    Target(("download_1mib", "upload_streamed"), "aiozipkin", 1.0),
)


@dataclass
class Sample:
    """One measured block."""

    config: str
    case: str
    round: int
    requests: int
    cpu_us: float  # client CPU time per request, microseconds
    wall_us: float  # wall time per request, microseconds
    collector: CollectorStats
    #: Slices after which the collector had not got exactly that slice's spans (0 in a sound
    #: run: otherwise some reporting was charged to the wrong slice); None in the results of
    #: the earlier whole-block design, which had no slices to check.
    failed_checks: int | None = None


@dataclass
class Server:
    base: str
    collector_url: str
    pinned: bool
    process: multiprocessing.process.BaseProcess
    conn: Any = field(repr=False)

    def stop(self) -> None:
        self.conn.close()
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def start_server() -> Server:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve, args=(theirs, SERVER_CPU), daemon=True)
    process.start()
    theirs.close()
    if not ours.poll(30):
        process.terminate()
        raise RuntimeError("the benchmark server did not start")
    port, pinned = ours.recv()
    base = f"http://127.0.0.1:{port}"
    return Server(base, base + SPANS_PATH, pinned, process, ours)


async def collector_stats(stats_session: aiohttp.ClientSession, base: str) -> CollectorStats:
    async with stats_session.get(f"{base}/_stats") as response:
        return CollectorStats(**await response.json())


@dataclass
class _Block:
    """One configuration's block of one case in one round, open across its slices."""

    tracing: Tracing
    session: aiohttp.ClientSession
    parents: list[Parent]
    scope: Scope
    cpu: float = 0.0  # seconds, summed over the slices
    wall: float = 0.0
    stats: CollectorStats = field(default_factory=CollectorStats)
    failed_checks: int = 0


def _added(a: CollectorStats, b: CollectorStats) -> CollectorStats:
    return CollectorStats(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(a)})


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then keep everything that exists now out of the garbage collector's view until
    the block ends (``gc.freeze``): a collection inside a measured slice then looks only at what
    the slices made, not at every module's objects and every block's set-up."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def balanced_order(items: Sequence[str], index: int) -> list[str]:
    """The ``index``-th order of ``items`` in a Williams design.

    Over ``len(items)`` consecutive orders (twice that for an odd count) every item takes every
    position equally often and follows every other item equally often, so whatever one slice
    leaves behind (caches, a thread still winding down) is not always met by the same
    configuration, as it would be with plain rotations.
    """
    n = len(items)
    # First order: 0, 1, n-1, 2, n-2, ...; the others add a constant, modulo n.
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(k + shift) % n for k in first] for shift in range(n)]
    if n % 2:
        orders += [order[::-1] for order in orders]
    return [items[k] for k in orders[index % len(orders)]]


async def measure(
    case: Case,
    configs: Sequence[str],
    requests: int,
    round_: int,
    server: Server,
    stats_session: aiohttp.ClientSession,
) -> list[Sample]:
    """One block of ``requests`` per configuration, the blocks run in interleaved slices."""
    if requests % case.slices:
        raise ValueError(f"{requests} requests cannot be cut into {case.slices} equal slices")
    size = requests // case.slices
    blocks: dict[str, _Block] = {}
    async with contextlib.AsyncExitStack() as stack:
        for config in configs:
            parents = make_parents(case.sampling, requests)
            tracing = await start_tracing(config, server.collector_url, case.sampling)
            stack.push_async_callback(tracing.close)
            session = aiohttp.ClientSession(trace_configs=tracing.trace_configs)
            stack.push_async_callback(session.close)
            blocks[config] = _Block(tracing, session, parents, tracing.scope(parents))
        # What exists now (the run's samples, every block's parents and tracer) is left out of
        # the collections from here on: a full collection of it would cost tens of milliseconds,
        # in whichever slice it fell. Each slice ends with a collection of what the slices
        # made, inside its measured time: it pays for its own garbage and leaves none behind.
        stack.enter_context(frozen_heap())
        for slice_ in range(case.slices):
            indices = range(slice_ * size, (slice_ + 1) * size)
            for config in balanced_order(configs, round_ * case.slices + slice_):
                block = blocks[config]
                cpu = time.process_time()
                wall = time.perf_counter()
                await case.run(block.session, server.base, indices, block.scope)
                await block.tracing.flush()
                gc.collect()
                block.wall += time.perf_counter() - wall
                block.cpu += time.process_time() - cpu
                # Every slice's spans, and only they, must have reached the collector: a post
                # that ran in another configuration's slice would be charged to the wrong one.
                stats = await collector_stats(stats_session, server.base)
                expected = block.tracing.expected_spans(block.parents[indices.start : indices.stop])
                if stats.spans != expected or stats.invalid_posts:
                    block.failed_checks += 1
                    print(
                        f"  ! {config}/{case.name}, slice {slice_ + 1}: the collector got"
                        f" {stats.spans} spans ({stats.invalid_posts} invalid posts),"
                        f" expected {expected}",
                        file=sys.stderr,
                    )
                block.stats = _added(block.stats, stats)
    # Closing flushed nothing more, or it went to no slice: say so.
    late = await collector_stats(stats_session, server.base)
    if late.posts:
        print(
            f"  ! {case.name}: {late.spans} spans reached the collector after the last slice",
            file=sys.stderr,
        )
    return [
        Sample(
            config,
            case.name,
            round_,
            requests,
            block.cpu / requests * 1e6,
            block.wall / requests * 1e6,
            block.stats,
            block.failed_checks,
        )
        for config, block in blocks.items()
    ]


async def run_rounds(
    cases: Sequence[Case], configs: Sequence[str], rounds: int, quick: bool, server: Server
) -> list[Sample]:
    samples: list[Sample] = []
    async with aiohttp.ClientSession() as stats_session:
        await collector_stats(stats_session, server.base)
        # One short unmeasured pass: imports, code paths and the server's first connections.
        for case in cases:
            warm_up = case.slices * max(5, case.quick // (10 * case.slices))
            await measure(case, configs, warm_up, -1, server, stats_session)
        for round_ in range(rounds):
            started = time.perf_counter()
            for case in cases:
                count = case.quick if quick else case.requests
                samples += await measure(case, configs, count, round_, server, stats_session)
            print(f"  round {round_ + 1}/{rounds} done in {time.perf_counter() - started:.1f} s")
    return samples


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarise(
    samples: Sequence[Sample], cases: Sequence[Case], configs: Sequence[str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for case in cases:
        by_config = {
            c: [s for s in samples if s.case == case.name and s.config == c] for c in configs
        }
        baseline = {s.round: s.cpu_us for s in by_config["none"]}
        floor = {s.round: s.cpu_us for s in by_config.get(FLOOR, ())}
        rows: dict[str, Any] = {}
        overheads: dict[str, dict[int, float]] = {}
        for config, mine in by_config.items():
            cpu = [s.cpu_us for s in mine]
            wall = [s.wall_us for s in mine]
            row: dict[str, Any] = {
                "cpu_us": statistics.median(cpu),
                "cpu_us_iqr": _quartiles(cpu),
                "wall_us": statistics.median(wall),
                "failed_checks": _total_failed_checks(mine),
            }
            if config != "none":
                paired = {
                    s.round: s.cpu_us - baseline[s.round] for s in mine if s.round in baseline
                }
                overheads[config] = paired
                row["overhead_us"] = statistics.median(paired.values())
                row["overhead_us_iqr"] = _quartiles(list(paired.values()))
            above = [s.cpu_us - floor[s.round] for s in mine if s.round in floor]
            if config in TRACERS[1:] and above:
                row["above_aiohttp_us"] = statistics.median(above)
                row["above_aiohttp_us_iqr"] = _quartiles(above)
            if config in TRACERS[1:]:
                spans = sum(s.collector.spans for s in mine)
                requests = sum(s.requests for s in mine)
                row["spans_per_request"] = spans / requests
                row["tags_per_span"] = sum(s.collector.tags for s in mine) / max(spans, 1)
                row["annotations_per_span"] = sum(s.collector.annotations for s in mine) / max(
                    spans, 1
                )
                row["json_bytes_per_span"] = sum(s.collector.json_bytes for s in mine) / max(
                    spans, 1
                )
                row["wire_bytes_per_span"] = sum(s.collector.wire_bytes for s in mine) / max(
                    spans, 1
                )
            rows[config] = row
        if OURS in rows:
            ours = rows[OURS]
            for other in OTHERS:
                theirs = rows.get(other, {})
                for key, name in (
                    ("overhead_us", f"ratio_to_{other}"),
                    ("above_aiohttp_us", f"ratio_above_aiohttp_to_{other}"),
                ):
                    ratio = _divide(ours.get(key), theirs.get(key))
                    if ratio is not None:
                        ours[name] = ratio
                interval = ratio_interval(overheads.get(OURS, {}), overheads.get(other, {}))
                if interval is not None:
                    ours[f"ratio_to_{other}_interval"] = interval
        summary[case.name] = {"title": case.title, "sampling": case.sampling, "configs": rows}
    return summary


def _total_failed_checks(samples: Sequence[Sample]) -> int | None:
    counts = [s.failed_checks for s in samples]
    return None if None in counts else sum(c for c in counts if c is not None)


def ratio_interval(ours: dict[int, float], theirs: dict[int, float]) -> tuple[float, float] | None:
    """A bootstrap interval for the ratio of our median overhead to theirs.

    The rounds are drawn again with replacement :data:`RESAMPLES` times, our overhead and
    theirs from the same rounds (each was measured against its own round's untraced block), and
    the ratio of the medians computed for each draw; the interval holds the middle
    :data:`INTERVAL` of those ratios. It says how far the ratio could move had the machine's
    noise fallen otherwise, within this run; a drift that lasts the whole run is not in it. The
    draws are seeded, so the same samples give the same interval. None with fewer than
    :data:`MIN_ROUNDS` paired rounds, or when their overhead is not above zero in too many
    draws to say anything.
    """
    rounds = sorted(ours.keys() & theirs.keys())
    if len(rounds) < MIN_ROUNDS:
        return None
    draw = random.Random(0).choices
    ratios: list[float] = []
    for _ in range(RESAMPLES):
        picked = draw(rounds, k=len(rounds))
        ratio = _divide(
            statistics.median(ours[r] for r in picked),
            statistics.median(theirs[r] for r in picked),
        )
        if ratio is not None:
            ratios.append(ratio)
    if len(ratios) < RESAMPLES * INTERVAL:
        return None
    ratios.sort()
    cut = (1 - INTERVAL) / 2
    return ratios[int(cut * len(ratios))], ratios[int((1 - cut) * len(ratios)) - 1]


def _divide(ours: float | None, theirs: float | None) -> float | None:
    # A ratio to an overhead that is not above zero (noise, in a quick run) says nothing.
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Whether each target of issue #11 holds, per case that was run."""
    verdicts: list[dict[str, Any]] = []
    for target in TARGETS:
        for name in target.cases:
            if name not in summary:
                continue
            configs = summary[name]["configs"]
            ours = configs.get(OURS, {})
            ratio = ours.get(f"ratio_to_{target.other}")
            interval = ours.get(f"ratio_to_{target.other}_interval")
            # What the same spans cost with the least code, over the other tracer's overhead: a
            # target below this is below the floor of producing and shipping our spans at all.
            floor = _divide(
                configs.get(SAME_SPANS, {}).get("overhead_us"),
                configs.get(target.other, {}).get("overhead_us"),
            )
            verdicts.append(
                {
                    "case": name,
                    "other": target.other,
                    "limit": target.limit,
                    "ratio": ratio,
                    "ratio_above_aiohttp": ours.get(f"ratio_above_aiohttp_to_{target.other}"),
                    "same_spans_ratio": floor,
                    "ok": None if ratio is None else ratio <= target.limit,
                    "interval": interval,
                    "clear": _clear(interval, target.limit),
                }
            )
    return verdicts


def _clear(interval: Sequence[float] | None, limit: float) -> bool | None:
    """True if the whole interval holds the target, False if none of it does, else None."""
    if interval is None:
        return None
    low, high = interval
    if high <= limit:
        return True
    if low > limit:
        return False
    return None


def machine() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in (
        "aiohttp",
        "aiozipkin",
        "multidict",
        "yarl",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-aiohttp-client",
        "opentelemetry-exporter-zipkin-json",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": versions,
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "aiozipkin_client"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{'+dirty' if dirty else ''}"


LABELS: Final = {
    "none": "no tracing",
    "aiozipkin": "aiozipkin",
    "opentelemetry": "OpenTelemetry",
    "aiozipkin_client": "aiozipkin_client",
    "empty_config": "(floor) empty TraceConfig",
    "listen_only": "(floor) 16 empty handlers",
    "bare_recorder": "(floor) bare recorder",
    "same_spans": "(floor) same spans, least code",
}


def render(result: dict[str, Any]) -> str:
    """The result as Markdown tables (also what is printed)."""
    lines: list[str] = []
    info = result["machine"]
    lines.append(
        f"`{result['command']}` on {info['cpu']} ({info['cpus']} CPUs), {info['platform']}, "
        f"Python {info['python']}; commit {info['commit']}; {result['rounds']} rounds, "
        f"client pinned to CPU {CLIENT_CPU} and server to CPU {SERVER_CPU}: {result['pinned']}."
    )
    if result["cases"]:
        lines.extend(_render_times(result))
    if result.get("targets"):
        lines.extend(_render_targets(result))
    if result.get("memory"):
        lines.append("")
        lines.append("Memory (RSS over traced requests; limit +5 MB):")
        lines.append("")
        lines.append(memory.render(result["memory"]))
    return "\n".join(lines) + "\n"


def _render_times(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "CPU and wall time are client-process medians per request, in microseconds; overhead is"
        " the median of (traced - untraced) CPU per request within a round, and above aiohttp"
        " the median of (traced - empty TraceConfig); IQR in brackets. The ratios are"
        " aiozipkin_client's overhead over the other tracer's, plainly and above aiohttp.",
        "",
        "| case | tracer | CPU µs/req | wall µs/req | overhead µs/req | above aiohttp µs/req"
        " | vs aiozipkin | vs OpenTelemetry | vs aiozipkin above aiohttp"
        " | vs OpenTelemetry above aiohttp |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result_case in result["cases"].values():
        for config, row in result_case["configs"].items():
            lines.append(
                f"| {result_case['title']} | {LABELS.get(config, config)} | {row['cpu_us']:.1f} |"
                f" {row['wall_us']:.1f} | {_spread(row, 'overhead_us')} |"
                f" {_spread(row, 'above_aiohttp_us')} |"
                f" {_ratio(row.get('ratio_to_aiozipkin'))} |"
                f" {_ratio(row.get('ratio_to_opentelemetry'))} |"
                f" {_ratio(row.get('ratio_above_aiohttp_to_aiozipkin'))} |"
                f" {_ratio(row.get('ratio_above_aiohttp_to_opentelemetry'))} |"
            )
    lines.append("")
    lines.append("What each tracer delivered to the collector (per span, all rounds):")
    lines.append("")
    lines.append("| case | tracer | spans/req | tags | annotations | JSON bytes | bytes posted |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for result_case in result["cases"].values():
        for config, row in result_case["configs"].items():
            if config not in TRACERS[1:]:
                continue
            lines.append(
                f"| {result_case['title']} | {LABELS.get(config, config)} |"
                f" {row['spans_per_request']:.2f} | {row['tags_per_span']:.1f} |"
                f" {row['annotations_per_span']:.1f} | {row['json_bytes_per_span']:.0f} |"
                f" {row['wire_bytes_per_span']:.0f} |"
            )
    rows = [
        (result_case["title"], config, row.get("failed_checks"))
        for result_case in result["cases"].values()
        for config, row in result_case["configs"].items()
    ]
    failed = [
        f"{LABELS.get(config, config)} in {title}: {count}"
        for title, config, count in rows
        if count
    ]
    lines.append("")
    if any(count is None for _, _, count in rows):
        lines.append("This run measured whole blocks, before the per-slice check of the collector.")
    elif failed:
        lines.append(
            "SLICES WHOSE SPANS DID NOT ALL REACH THE COLLECTOR IN THE SLICE (their reporting"
            " was charged to another slice; these figures are suspect): " + "; ".join(failed)
        )
    else:
        lines.append("Every slice's spans, and no others, reached the collector within the slice.")
    return lines


def _render_targets(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Targets (issue #11): aiozipkin_client's overhead over the other tracer's, medians of"
        " interleaved rounds, judged as holds or MISSED; beside each, the ratio's 90% bootstrap"
        " interval over this run's rounds (when the target lies inside it, the noise decides"
        " the verdict), the same ratio above"
        " aiohttp's own cost (both overheads minus the empty-TraceConfig floor's), and the"
        " same-spans floor's overhead over the other tracer's (a target below it is below what"
        " making and shipping these spans costs in Python at all), shown, not judged:",
        "",
    ]
    for verdict in result["targets"]:
        title = result["cases"][verdict["case"]]["title"]
        other = LABELS.get(verdict["other"], verdict["other"])
        lines.append(
            f"- {title}: {_ratio(verdict['ratio']) or 'n/a'} x {other}'s"
            f" (target <= {verdict['limit']:.2f}: {_ok(verdict['ok'])};"
            f" {_interval(verdict)};"
            f" above aiohttp: {_ratio(verdict['ratio_above_aiohttp']) or 'n/a'};"
            f" the same spans with the least code:"
            f" {_ratio(verdict.get('same_spans_ratio')) or 'n/a'})"
        )
    untargeted = [
        c for c in result["cases"].values() if c["sampling"] not in ("sampled", "unsampled")
    ]
    for result_case in untargeted:
        ours = result_case["configs"].get(OURS, {})
        lines.append(
            f"- {result_case['title']} (no target): "
            + ", ".join(
                f"{_ratio(ours.get(f'ratio_to_{other}')) or 'n/a'} x {LABELS[other]}'s"
                f" (above aiohttp: {_ratio(ours.get(f'ratio_above_aiohttp_to_{other}')) or 'n/a'})"
                for other in OTHERS
            )
        )
    return lines


def _spread(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return ""
    low, high = row[f"{key}_iqr"]
    return f"{row[key]:.1f} [{low:.1f}, {high:.1f}]"


def _interval(verdict: dict[str, Any]) -> str:
    interval = verdict.get("interval")
    if interval is None:
        return "no interval (too few rounds)"
    low, high = interval
    where = {
        True: "all of it within the target",
        False: "all of it beyond the target",
        None: "the target inside it: the noise decides",
    }[verdict["clear"]]
    return f"{INTERVAL:.0%} interval {low:.2f}-{high:.2f}, {where}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ok(value: bool | None) -> str:
    return "n/a" if value is None else ("holds" if value else "MISSED")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run of every case and configuration (about a minute; writes nothing"
        " unless --output)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every case and configuration")
    parser.add_argument(
        "--cases", help=f"comma-separated subset of: {', '.join(c.name for c in CASES)}"
    )
    parser.add_argument(
        "--no-floors",
        action="store_true",
        help="leave out the listen_only, bare_recorder and same_spans floors (the empty TraceConfig stays:"
        " the figures above aiohttp's own cost need it)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the RSS check")
    parser.add_argument("--memory-only", action="store_true", help="run only the RSS check")
    parser.add_argument(
        "--memory-requests", type=int, help=f"traced requests to watch (default {memory.REQUESTS})"
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        metavar="RESULT",
        help="run nothing: summarise the samples saved in an earlier run's JSON result again"
        " (with this version's intervals and verdicts) and print the report",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON result (a .md beside it); default bench/results/latest.json"
        " for a full run, nothing for --quick",
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace, command: str) -> dict[str, Any]:
    server = start_server()
    pinned = server.pinned and pin_to_cpu(CLIENT_CPU)
    try:
        result: dict[str, Any] = {
            "command": command,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "pinned": pinned,
            "quick": args.quick,
        }
        if not args.memory_only:
            cases = list(CASES)
            if args.cases:
                wanted = set(args.cases.split(","))
                unknown = wanted - {case.name for case in CASES}
                if unknown:
                    raise SystemExit(f"unknown cases: {', '.join(sorted(unknown))}")
                cases = [case for case in CASES if case.name in wanted]
            configs = list(CONFIGS)
            if args.no_floors:
                configs = [c for c in CONFIGS if c not in FLOORS or c == FLOOR]
            rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
            result["rounds"] = rounds
            print(
                f"benchmark: {len(cases)} cases x {len(configs)} configurations x {rounds} rounds"
            )
            samples = await run_rounds(cases, configs, rounds, args.quick, server)
            result["cases"] = summarise(samples, cases, configs)
            result["targets"] = targets(result["cases"])
            result["samples"] = [asdict(sample) for sample in samples]
        else:
            result["rounds"] = 0
            result["cases"] = {}
        if not args.skip_memory:
            requests = args.memory_requests or (
                memory.QUICK_REQUESTS if args.quick else memory.REQUESTS
            )
            result["memory"] = await memory.check(server.base, server.collector_url, requests)
        return result
    finally:
        server.stop()


def resummarise(result: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's result, its figures computed again from its saved samples."""
    samples = [
        Sample(**{**raw, "collector": CollectorStats(**raw["collector"])})
        for raw in result["samples"]
    ]
    cases = [case for case in CASES if case.name in result["cases"]]
    configs = [config for config in CONFIGS if any(s.config == config for s in samples)]
    result = dict(result)
    result["cases"] = summarise(samples, cases, configs)
    result["targets"] = targets(result["cases"])
    return result


def _save(output: Path, result: dict[str, Any], text: str) -> None:
    """The result as JSON at ``output``, and its report as Markdown beside it."""
    output.write_text(json.dumps(result, indent=1) + "\n")
    output.with_suffix(".md").write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    if args.summarise is not None:
        result = resummarise(json.loads(args.summarise.read_text()))
        text = render(result)
        print(text)
        if args.output is not None:
            _save(args.output, result, text)
        return 0
    result = asyncio.run(_main(args, command))
    text = render(result)
    print()
    print(text)
    output: Path | None = args.output
    if output is None and not args.quick:
        output = RESULTS / ("memory.json" if args.memory_only else "latest.json")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        _save(output, result, text)
        print(f"written: {output} and {output.with_suffix('.md')}")
    failed = result.get("memory", {}).get("ok") is False
    return 1 if failed else 0
