"""Whole requests counted: ``make bench``'s cases, in instructions instead of time.

``python -m bench.whole`` (``make bench-whole``) runs each configuration's real requests, with the
same workloads, parents, tracers, collector, flushes and garbage collection as ``make bench``
(what exists before the counted requests is frozen out of the collector's view), in a client
process under valgrind (``cachegrind``). The server and the collector run natively in a child
process, outside the count. Each count is one block of requests minus a smaller one, after the
same start-up and warm-up, which cancel out, and what is left is divided by the difference in
requests. The counts up to ``bench/results/counted-f45aa38.md`` did neither: they made fewer
parents for the smaller block and collected the whole heap after every slice, which moved
overheads by up to 20k instructions a request (``_block``).

Why count: ``make bench`` times the client's CPU, which is the verdict, but on a shared 2-CPU VM
one round's overhead moves by +-10 µs, so 30 rounds still leave every ratio a 90% interval about
0.2 wide. ``make bench-instructions`` counts only the tracers' handlers, replayed. This counts
everything the client process executes for a request: aiohttp, the event loop, aiohttp's trace
machinery, the tracer, and encoding and posting its spans (OpenTelemetry's exporter thread too).
The child seeds ``random``, so every run has the same parents and ids. A small GET's count of
the same code still moves between runs by up to about 3k instructions (0.5%; when a response
arrives relative to the event loop's polls changes its work), so a ratio moves by about +-0.01
sampled and +-0.02 not sampled: far less than a timed one, and a change of 1% of a tracer's
own work shows. The streamed upload's count moved by 1.5% between runs of the same code (how
the body writer and the server interleave changes the event loop's work).

Instructions are not time: a cache miss or a mispredicted branch costs many instructions' worth.
``--caches`` adds cachegrind's simulated first-level cache misses and branch mispredictions (a
simple model, not this CPU's own counters, which this VM does not expose), per request above
``none``, to show whether one tracer's instructions cost more each than another's.

The report gives, per case and configuration, the instructions per request, the overhead (above
``none``) and the overhead above aiohttp (above the empty ``TraceConfig``), then our overhead over
aiozipkin's, OpenTelemetry's and the same-spans floor's, and the targets of issue #11
(``bench.run.TARGETS``) judged on these ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp

from . import valgrind
from .run import FLOOR, LABELS, OURS, SAME_SPANS, TARGETS, frozen_heap, machine, start_server
from .tracers import start_tracing
from .workloads import CASES, Case, make_parents

__all__ = ("main",)

#: The configurations counted: the tracers and the two floors the ratios are read against.
CONFIGS: Final = ("none", FLOOR, "aiozipkin", "opentelemetry", OURS, SAME_SPANS)
#: The two counted blocks and the warm-up, as fractions of a case's block in ``make bench``:
#: 500 and 1,500 small GETs after 100; 50 and 150 large requests after 10.
_FEW: Final = 6
_MANY: Final = 2
_WARM_UP: Final = 30

#: Each counted event per request, by name (``bench.valgrind``).
Events = dict[str, float]


def _sizes(case: Case) -> tuple[int, int, int]:
    """Warm-up, smaller and larger block of ``case``."""
    return case.requests // _WARM_UP, case.requests // _FEW, case.requests // _MANY


async def _block(config: str, case: Case, requests: int) -> None:
    """One uncounted warm-up and ``requests`` counted requests of ``config``, flushed in slices.

    Everything before the counted slices is the same whatever ``requests`` is, so that it
    cancels out of the difference of two blocks: the parents are made for the larger block
    every time (a run making more of them crossed the garbage collector's threshold for a full
    collection of the whole heap, about 20 million instructions, where a run making fewer did
    not: 20k a request charged to whichever configuration it hit). And, as in ``make bench``,
    what exists after the warm-up is frozen out of the collector's view (``gc.freeze``): the
    collection that ends each slice looks at what the slices made, not at every module's
    objects (another 40k a request, varying with the heap's size).
    """
    warm_up, _, many = _sizes(case)
    slice_size = case.requests // case.slices
    server = start_server()
    try:
        parents = make_parents(case.sampling, warm_up + max(requests, many))
        tracing = await start_tracing(config, server.collector_url, case.sampling)
        session = aiohttp.ClientSession(trace_configs=tracing.trace_configs)
        try:
            scope = tracing.scope(parents)
            chunks = [
                range(start, min(start + slice_size, warm_up + requests))
                for start in range(warm_up, warm_up + requests, slice_size)
            ]
            await case.run(session, server.base, range(0, warm_up), scope)
            await tracing.flush()
            with frozen_heap():
                for indices in chunks:
                    await case.run(session, server.base, indices, scope)
                    await tracing.flush()
                    gc.collect()
        finally:
            await session.close()
            await tracing.close()
    finally:
        server.stop()


def measure(cases: Sequence[Case], caches: bool) -> dict[str, dict[str, Events]]:
    """Per case and configuration, each event per request (larger block minus smaller)."""
    counted = valgrind.per_request(
        {
            (case.name, config): (
                ["bench.whole", "--only", config, "--case", case.name],
                *_sizes(case)[1:],
            )
            for case in cases
            for config in CONFIGS
        },
        caches,
    )
    return {case.name: {config: counted[case.name, config] for config in CONFIGS} for case in cases}


def _ratio(rows: dict[str, Events], config: str, other: str, base: str) -> float:
    """``config``'s instructions above ``base`` over ``other``'s."""
    below = rows[base]["instructions"]
    return (rows[config]["instructions"] - below) / (rows[other]["instructions"] - below)


def render(result: dict[str, dict[str, Events]], cases: Sequence[Case], caches: bool) -> str:
    """The counts as Markdown: per configuration, then our ratios, then the targets."""
    info = machine()
    lines = [
        f"`python -m bench.whole{' --caches' if caches else ''}`: client-process instructions per"
        f" request under valgrind (cachegrind), PYTHONHASHSEED=0; Python {info['python']},"
        f" aiohttp {info['packages']['aiohttp']}; commit {info['commit']}. Overhead is above no"
        " tracing, *above aiohttp* above the empty TraceConfig.",
        "",
        "| case | configuration | instructions/req | overhead | above aiohttp |"
        + (" I1 misses | D1 misses | mispredicts |" if caches else ""),
        "| --- | --- | ---: | ---: | ---: |" + (" ---: | ---: | ---: |" if caches else ""),
    ]
    for case in cases:
        rows = result[case.name]
        none, empty = rows["none"], rows[FLOOR]
        for config in CONFIGS:
            events = rows[config]
            cells = [
                case.title,
                LABELS[config],
                f"{events['instructions']:,.0f}",
                "" if config == "none" else f"{events['instructions'] - none['instructions']:,.0f}",
                ""
                if config in ("none", FLOOR)
                else f"{events['instructions'] - empty['instructions']:,.0f}",
            ]
            if caches:
                cells += [
                    "" if config == "none" else f"{events[event] - none[event]:,.0f}"
                    for event in valgrind.CACHE_EVENTS
                ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Our overhead over the other configuration's (in brackets: above aiohttp), and the"
        " same-spans floor's over aiozipkin's:",
        "",
        "| case | vs aiozipkin | vs OpenTelemetry | vs same-spans floor | floor vs aiozipkin |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for case in cases:
        rows = result[case.name]
        cells = [case.title]
        for other in ("aiozipkin", "opentelemetry", SAME_SPANS):
            plain, above = _ratio(rows, OURS, other, "none"), _ratio(rows, OURS, other, FLOOR)
            cells.append(f"{plain:.2f} ({above:.2f})")
        cells.append(f"{_ratio(rows, SAME_SPANS, 'aiozipkin', 'none'):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Issue #11's targets, judged in instructions:", ""]
    for target in TARGETS:
        for name in target.cases:
            if name not in result:
                continue
            rows = result[name]
            ratio = _ratio(rows, OURS, target.other, "none")
            floor = _ratio(rows, SAME_SPANS, target.other, "none")
            verdict = "holds" if ratio <= target.limit else "MISSED"
            lines.append(
                f"- {name} vs {target.other}: {ratio:.2f}, target <= {target.limit}: {verdict}"
                f" (same-spans floor {floor:.2f})"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.whole",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = [case.name for case in CASES]
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=names,
        default=names,
        metavar="CASE",
        help=f"the cases to count (all: {', '.join(names)})",
    )
    parser.add_argument(
        "--caches", action="store_true", help="also simulate caches and branches (about 2x slower)"
    )
    parser.add_argument("--output", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=names, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only is not None:
        if args.case is None or args.requests is None:
            parser.error("--only needs --case and --requests")
        # The counted child: one block, nothing printed. The same ids in every run: string
        # hashes of different ids make dicts probe differently, one source of a count's
        # variation less.
        random.seed(0)
        case = next(case for case in CASES if case.name == args.case)
        asyncio.run(_block(args.only, case, args.requests))
        return 0
    valgrind.require_valgrind("bench.whole")
    cases = [case for case in CASES if case.name in args.cases]
    report = render(measure(cases, args.caches), cases, args.caches)
    print(report, end="")
    if args.output is not None:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
