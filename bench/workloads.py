"""The request patterns the benchmark times, and the sampling of their parents.

Every request has its own URL (an id in the path), as a REST client's do, so no tracer can
profit from seeing the same URL object or string twice.

Every request is also made inside its own parent's scope: the workload calls ``scope(i)`` for
request ``i`` and makes the request inside that context manager (in the concurrent case, each
worker enters the scope of the request it is doing). The scopes are built by the tracer under
test (``bench.tracers``) from a list of parents made before the measured time, so what a
block times is the requests and the tracer, not making parents. Whether a parent is sampled is
the case's *sampling* mode:

* ``sampled``: every parent is sampled: every request is recorded and reported;
* ``unsampled``: no parent is sampled: the tracers still make ids and propagate them
  (``X-B3-Sampled: 0``, ``traceparent`` flags ``00``) but record and report nothing;
* ``1%``: exactly one request in a hundred (those whose index is a multiple of 100) has a
  sampled parent, the others an unsampled one: a deterministic sequence, the same for every
  tracer, rather than a coin each tracer tosses for itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, NamedTuple

import aiohttp

__all__ = (
    "CASES",
    "CONCURRENCY",
    "LARGE_SLICES",
    "ONE_PERCENT",
    "SAMPLED",
    "SAMPLING_RATES",
    "SMALL_SLICES",
    "UNSAMPLED",
    "UPLOAD_CHUNK",
    "UPLOAD_CHUNKS",
    "Case",
    "Parent",
    "Scope",
    "concurrent_small",
    "is_sampled",
    "make_parents",
)

#: Requests in flight at once in the concurrent case.
CONCURRENCY: Final = 16
#: The streamed upload: this many chunks of this size (1 MiB in all).
UPLOAD_CHUNKS: Final = 16
UPLOAD_CHUNK: Final = b"x" * (64 * 1024)
#: Downloads are read in chunks of this size.
DOWNLOAD_CHUNK: Final = 64 * 1024

SAMPLED: Final = "sampled"
UNSAMPLED: Final = "unsampled"
ONE_PERCENT: Final = "1%"
#: The share of requests with a sampled parent, per sampling mode.
SAMPLING_RATES: Final = {SAMPLED: 1.0, UNSAMPLED: 0.0, ONE_PERCENT: 0.01}


def is_sampled(sampling: str, index: int) -> bool:
    """Whether request ``index`` of a block has a sampled parent in mode ``sampling``."""
    if sampling == SAMPLED:
        return True
    if sampling == UNSAMPLED:
        return False
    if sampling == ONE_PERCENT:
        return index % 100 == 0
    raise ValueError(f"unknown sampling mode {sampling!r}")


class Parent(NamedTuple):
    """A request's remote parent, before any tracer turns it into its own form."""

    trace_id: str  # 32 lower-hex digits
    span_id: str  # 16 lower-hex digits
    sampled: bool


def make_parents(sampling: str, count: int) -> list[Parent]:
    """One parent per request of a block, each in a trace of its own, as in a service whose
    every outgoing call serves a different incoming request."""
    bits = random.getrandbits
    return [
        Parent(f"{bits(128) | 1:032x}", f"{bits(64) | 1:016x}", is_sampled(sampling, i))
        for i in range(count)
    ]


#: ``scope(i)``: the context manager inside which request ``i`` is made.
Scope = Callable[[int], AbstractContextManager[object]]
#: ``workload(session, base, indices, scope)`` makes requests ``indices`` of a block (a slice of
#: it: ``bench.run``), request ``i`` to its own URL and inside ``scope(i)``.
Workload = Callable[[aiohttp.ClientSession, str, range, Scope], Awaitable[None]]


async def sequential_small(
    session: aiohttp.ClientSession, base: str, indices: range, scope: Scope
) -> None:
    for i in indices:
        with scope(i):
            async with session.get(f"{base}/items/{i}") as response:
                await response.read()


async def concurrent_small(
    session: aiohttp.ClientSession, base: str, indices: range, scope: Scope
) -> None:
    ids = iter(indices)

    async def worker() -> None:
        for i in ids:
            with scope(i):
                async with session.get(f"{base}/items/{i}") as response:
                    await response.read()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def download(session: aiohttp.ClientSession, base: str, indices: range, scope: Scope) -> None:
    # Streamed, as large bodies are read: read() would allocate and fault in a fresh 1 MiB
    # buffer per request, whose cost swings by more than any tracer's between blocks.
    for i in indices:
        with scope(i):
            async with session.get(f"{base}/blobs/{i}") as response:
                async for _ in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    pass


async def _chunks() -> AsyncIterator[bytes]:
    for _ in range(UPLOAD_CHUNKS):
        yield UPLOAD_CHUNK


async def streamed_upload(
    session: aiohttp.ClientSession, base: str, indices: range, scope: Scope
) -> None:
    for i in indices:
        with scope(i):
            async with session.post(f"{base}/uploads/{i}", data=_chunks()) as response:
                await response.read()


#: Slices a block of small GETs is cut into (3,000 requests: 500 a slice, our reporter's batch
#: size and five of aiozipkin's), and a block of 1 MiB requests (300: 100 a slice).
SMALL_SLICES: Final = 6
LARGE_SLICES: Final = 3


@dataclass(frozen=True)
class Case:
    """One request pattern and sampling mode: ``requests`` per measured block (``quick`` with
    ``--quick``), run in ``slices`` equal slices interleaved with the other configurations'
    (``bench.run``)."""

    name: str
    title: str
    run: Workload
    requests: int
    quick: int
    sampling: str = SAMPLED
    slices: int = SMALL_SLICES

    def __post_init__(self) -> None:
        if self.requests % self.slices or self.quick % self.slices:
            raise ValueError(f"{self.name}: {self.slices} slices must divide the block sizes")


CASES: Final = (
    Case("sequential_small", "sequential small GETs", sequential_small, 3000, 300),
    Case("concurrent_small", "16 concurrent small GETs", concurrent_small, 3000, 300),
    Case("download_1mib", "1 MiB downloads (streamed)", download, 300, 30, slices=LARGE_SLICES),
    Case(
        "upload_streamed",
        "streamed 1 MiB uploads (16 chunks)",
        streamed_upload,
        300,
        30,
        slices=LARGE_SLICES,
    ),
    Case(
        "sequential_small_unsampled",
        "sequential small GETs, unsampled",
        sequential_small,
        3000,
        300,
        UNSAMPLED,
    ),
    Case(
        "concurrent_small_unsampled",
        "16 concurrent small GETs, unsampled",
        concurrent_small,
        3000,
        300,
        UNSAMPLED,
    ),
    Case(
        "sequential_small_1pct",
        "sequential small GETs, 1% sampled",
        sequential_small,
        3000,
        300,
        ONE_PERCENT,
    ),
    Case(
        "concurrent_small_1pct",
        "16 concurrent small GETs, 1% sampled",
        concurrent_small,
        3000,
        300,
        ONE_PERCENT,
    ),
)
