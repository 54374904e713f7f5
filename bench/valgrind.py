"""Counting what a benchmark process executes, under valgrind's cachegrind.

Shared by ``bench.replay --instructions`` and ``bench.whole``: both run a block of requests in a
child process under cachegrind, twice with different request counts, and divide the difference
of the counts by the difference of the requests, so start-up, imports and warm-up cancel out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

__all__ = ("CACHE_EVENTS", "EVENTS", "Block", "count", "per_request", "require_valgrind")

_Key = TypeVar("_Key", bound=Hashable)

#: One thing to count: its module arguments (``--requests n`` is added), and the two ``n``.
Block = tuple[Sequence[str], int, int]

#: What cachegrind always counts, and what it adds when it simulates caches and branches.
EVENTS: Final = ("instructions",)
CACHE_EVENTS: Final = ("I1 misses", "D1 misses", "mispredicts")

# Lines of cachegrind's summary (on stderr, each after "==pid== "), by the event they give.
_SUMMARY: Final = {
    "instructions": re.compile(r"^==\d+== I\s+refs:\s+([\d,]+)", re.M),
    "I1 misses": re.compile(r"^==\d+== I1\s+misses:\s+([\d,]+)", re.M),
    "D1 misses": re.compile(r"^==\d+== D1\s+misses:\s+([\d,]+)", re.M),
    "mispredicts": re.compile(r"^==\d+== Mispredicts:\s+([\d,]+)", re.M),
}


def require_valgrind(option: str) -> None:
    """Stop with a clear message when valgrind is not on the PATH."""
    if shutil.which("valgrind") is None:
        raise SystemExit(f"{option} needs valgrind (Debian: apt install valgrind)")


def count(module_args: Sequence[str], caches: bool = False) -> dict[str, int]:
    """Run ``python -m <module_args>`` under cachegrind; the events the whole process executed.

    Only this process is counted: a child it starts (``bench.whole``'s server) runs natively.
    ``caches`` adds cachegrind's simulated first-level cache misses and branch mispredictions
    (a simple model of a CPU, not this one's counters), at about twice the running time.
    """
    command = [
        "valgrind",
        "--tool=cachegrind",
        f"--cache-sim={'yes' if caches else 'no'}",
        f"--branch-sim={'yes' if caches else 'no'}",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        *module_args,
    ]
    # A fixed seed: string hashes decide how dicts probe, which moves a count by thousands.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    events = (*EVENTS, *(CACHE_EVENTS if caches else ()))
    found = {event: _SUMMARY[event].search(done.stderr) for event in events}
    if done.returncode or not all(found.values()):
        raise SystemExit(f"counting {' '.join(module_args)} failed:\n{done.stderr[-2000:]}")
    return {event: int(match.group(1).replace(",", "")) for event, match in found.items() if match}


def per_request(blocks: Mapping[_Key, Block], caches: bool = False) -> dict[_Key, dict[str, float]]:
    """Each block counted at both its sizes, the runs in parallel (one per CPU); per block, each
    event per request: the larger run's count minus the smaller's, over the difference in
    requests."""
    runs = [(key, size) for key, (_, fewer, more) in blocks.items() for size in (fewer, more)]

    def run_one(run: tuple[_Key, int]) -> dict[str, int]:
        key, size = run
        return count([*blocks[key][0], "--requests", str(size)], caches)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(run_one, runs), strict=True))
    result: dict[_Key, dict[str, float]] = {}
    for key, (_, fewer, more) in blocks.items():
        small, large = counts[key, fewer], counts[key, more]
        result[key] = {event: (large[event] - small[event]) / (more - fewer) for event in large}
    return result
