"""Run the benchmark: client CPU time and wall time per request, per tracer, interleaved.

The server and the collector run in a child process (``bench.server``), pinned to CPU 1 while
this process is pinned to CPU 0, so the CPU time measured here is the client's alone:
``time.process_time()`` counts every thread of this process, so exporter threads and background
reporting tasks are charged too.

One *block* is one configuration running one case for a fixed number of requests with a fresh
session and a fresh tracer; its measured time starts before the first request and ends after
the tracer flushed every span of the block to the collector. A *round* runs every case for
every configuration, in an order rotated each round, so slow drifts of the machine hit all
configurations alike. The report gives, per case and configuration, the median over rounds of
the CPU and wall time per request, and each tracer's overhead: the median over rounds of
(traced minus untraced CPU time per request), both measured in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import aiohttp

from . import memory
from .server import SPANS_PATH, CollectorStats, pin_to_cpu, serve
from .tracers import CONFIGS, TRACERS, start_tracing
from .workloads import CASES, Case

__all__ = ("main",)

RESULTS: Final = Path(__file__).parent / "results"
#: The targets of issue #6, judged on the small-GET cases.
TARGET_VS_AIOZIPKIN: Final = 0.5
TARGET_VS_OPENTELEMETRY: Final = 0.25
CLIENT_CPU: Final = 0
SERVER_CPU: Final = 1
OURS: Final = "aiozipkin_client"


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


async def measure(
    config: str,
    case: Case,
    requests: int,
    round_: int,
    server: Server,
    stats_session: aiohttp.ClientSession,
) -> Sample:
    tracing = await start_tracing(config, server.collector_url)
    session = aiohttp.ClientSession(trace_configs=tracing.trace_configs)
    try:
        gc.collect()
        with tracing.parent():
            cpu = time.process_time()
            wall = time.perf_counter()
            await case.run(session, server.base, requests)
            await tracing.close()
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
    finally:
        await session.close()
    stats = await collector_stats(stats_session, server.base)
    expected = requests * tracing.spans_per_request
    if stats.spans != expected or stats.invalid_posts:
        print(
            f"  ! {config}/{case.name}: the collector got {stats.spans} spans"
            f" ({stats.invalid_posts} invalid posts), expected {expected}",
            file=sys.stderr,
        )
    return Sample(
        config, case.name, round_, requests, cpu / requests * 1e6, wall / requests * 1e6, stats
    )


def rotated(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


async def run_rounds(
    cases: Sequence[Case], configs: Sequence[str], rounds: int, quick: bool, server: Server
) -> list[Sample]:
    samples: list[Sample] = []
    async with aiohttp.ClientSession() as stats_session:
        await collector_stats(stats_session, server.base)
        # One short unmeasured pass: imports, code paths and the server's first connections.
        for case in cases:
            for config in configs:
                await measure(config, case, max(20, case.quick // 10), -1, server, stats_session)
        for round_ in range(rounds):
            started = time.perf_counter()
            for case in cases:
                for config in rotated(configs, round_):
                    count = case.quick if quick else case.requests
                    samples.append(
                        await measure(config, case, count, round_, server, stats_session)
                    )
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
        rows: dict[str, Any] = {}
        for config, mine in by_config.items():
            cpu = [s.cpu_us for s in mine]
            wall = [s.wall_us for s in mine]
            row: dict[str, Any] = {
                "cpu_us": statistics.median(cpu),
                "cpu_us_iqr": _quartiles(cpu),
                "wall_us": statistics.median(wall),
            }
            if config != "none":
                paired = [s.cpu_us - baseline[s.round] for s in mine if s.round in baseline]
                row["overhead_us"] = statistics.median(paired)
                row["overhead_us_iqr"] = _quartiles(paired)
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
        ours = rows.get(OURS, {}).get("overhead_us")
        for other in ("aiozipkin", "opentelemetry"):
            theirs = rows.get(other, {}).get("overhead_us")
            if ours is not None and theirs:
                rows[OURS][f"ratio_to_{other}"] = ours / theirs
        summary[case.name] = {"title": case.title, "small": case.small, "configs": rows}
    return summary


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether each target of issue #6 holds, per small-GET case."""
    verdicts: dict[str, Any] = {}
    for name, result in summary.items():
        if not result["small"]:
            continue
        ours = result["configs"].get(OURS, {})
        verdicts[name] = {
            "vs_aiozipkin": ours.get("ratio_to_aiozipkin"),
            "vs_aiozipkin_ok": _holds(ours.get("ratio_to_aiozipkin"), TARGET_VS_AIOZIPKIN),
            "vs_opentelemetry": ours.get("ratio_to_opentelemetry"),
            "vs_opentelemetry_ok": _holds(
                ours.get("ratio_to_opentelemetry"), TARGET_VS_OPENTELEMETRY
            ),
        }
    return verdicts


def _holds(ratio: float | None, limit: float) -> bool | None:
    return None if ratio is None else ratio <= limit


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
    "listen_only": "(floor) 16 empty handlers",
    "bare_recorder": "(floor) bare recorder",
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
    lines.append("")
    lines.append(
        "CPU and wall time are client-process medians per request, in microseconds; overhead is"
        " the median of (traced - untraced) CPU per request within a round; IQR in brackets."
    )
    lines.append("")
    header = "| case | tracer | CPU µs/req | wall µs/req | overhead µs/req | vs aiozipkin | vs OpenTelemetry |"
    lines.append(header)
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for result_case in result["cases"].values():
        for config, row in result_case["configs"].items():
            overhead = ""
            if "overhead_us" in row:
                low, high = row["overhead_us_iqr"]
                overhead = f"{row['overhead_us']:.1f} [{low:.1f}, {high:.1f}]"
            ratio_a = _ratio(row.get("ratio_to_aiozipkin"))
            ratio_o = _ratio(row.get("ratio_to_opentelemetry"))
            lines.append(
                f"| {result_case['title']} | {LABELS.get(config, config)} | {row['cpu_us']:.1f} |"
                f" {row['wall_us']:.1f} | {overhead} | {ratio_a} | {ratio_o} |"
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
    if result.get("targets"):
        lines.append("")
        lines.append(
            "Targets (small GETs): overhead <= 0.5 x aiozipkin's and <= 0.25 x OpenTelemetry's:"
        )
        lines.append("")
        for name, verdict in result["targets"].items():
            lines.append(
                f"- {result['cases'][name]['title']}: {_ratio(verdict['vs_aiozipkin'])} aiozipkin"
                f" ({_ok(verdict['vs_aiozipkin_ok'])}), {_ratio(verdict['vs_opentelemetry'])}"
                f" OpenTelemetry ({_ok(verdict['vs_opentelemetry_ok'])})"
            )
    if result.get("memory"):
        lines.append("")
        lines.append(memory.render(result["memory"]))
    return "\n".join(lines) + "\n"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ok(value: bool | None) -> str:
    return "n/a" if value is None else ("holds" if value else "MISSED")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run (about 30 seconds; writes nothing unless --output)",
    )
    parser.add_argument("--rounds", type=int, help="rounds of every case and configuration")
    parser.add_argument(
        "--cases", help=f"comma-separated subset of: {', '.join(c.name for c in CASES)}"
    )
    parser.add_argument(
        "--no-floors",
        action="store_true",
        help="leave out the two reference floors (listen_only, bare_recorder)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the RSS check")
    parser.add_argument("--memory-only", action="store_true", help="run only the RSS check")
    parser.add_argument(
        "--memory-requests", type=int, help=f"traced requests to watch (default {memory.REQUESTS})"
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
                cases = [case for case in CASES if case.name in wanted]
            rounds = args.rounds or (3 if args.quick else 20)
            result["rounds"] = rounds
            print(
                f"benchmark: {len(cases)} cases x {len(CONFIGS)} configurations x {rounds} rounds"
            )
            samples = await run_rounds(cases, CONFIGS, rounds, args.quick, server)
            result["cases"] = summarise(samples, cases, CONFIGS)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    result = asyncio.run(_main(args, command))
    text = render(result)
    print()
    print(text)
    output: Path | None = args.output
    if output is None and not args.quick:
        output = RESULTS / ("memory.json" if args.memory_only else "latest.json")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1) + "\n")
        output.with_suffix(".md").write_text(text)
        print(f"written: {output} and {output.with_suffix('.md')}")
    failed = result.get("memory", {}).get("ok") is False
    return 1 if failed else 0
