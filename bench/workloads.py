"""The request patterns the benchmark times: the same for every configuration.

Every request has its own URL (an id in the path), as a REST client's do, so no tracer can
profit from seeing the same URL object or string twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

__all__ = ("CASES", "CONCURRENCY", "UPLOAD_CHUNK", "UPLOAD_CHUNKS", "Case", "concurrent_small")

#: Requests in flight at once in the concurrent case.
CONCURRENCY: Final = 16
#: The streamed upload: this many chunks of this size (1 MiB in all).
UPLOAD_CHUNKS: Final = 16
UPLOAD_CHUNK: Final = b"x" * (64 * 1024)
#: Downloads are read in chunks of this size.
DOWNLOAD_CHUNK: Final = 64 * 1024

Workload = Callable[[aiohttp.ClientSession, str, int], Awaitable[None]]


async def sequential_small(session: aiohttp.ClientSession, base: str, count: int) -> None:
    for i in range(count):
        async with session.get(f"{base}/items/{i}") as response:
            await response.read()


async def concurrent_small(session: aiohttp.ClientSession, base: str, count: int) -> None:
    ids = iter(range(count))

    async def worker() -> None:
        for i in ids:
            async with session.get(f"{base}/items/{i}") as response:
                await response.read()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def download(session: aiohttp.ClientSession, base: str, count: int) -> None:
    # Streamed, as large bodies are read: read() would allocate and fault in a fresh 1 MiB
    # buffer per request, whose cost swings by more than any tracer's between blocks.
    for i in range(count):
        async with session.get(f"{base}/blobs/{i}") as response:
            async for _ in response.content.iter_chunked(DOWNLOAD_CHUNK):
                pass


async def _chunks() -> AsyncIterator[bytes]:
    for _ in range(UPLOAD_CHUNKS):
        yield UPLOAD_CHUNK


async def streamed_upload(session: aiohttp.ClientSession, base: str, count: int) -> None:
    for i in range(count):
        async with session.post(f"{base}/uploads/{i}", data=_chunks()) as response:
            await response.read()


@dataclass(frozen=True)
class Case:
    """One request pattern: ``requests`` per measured block (``quick`` with ``--quick``)."""

    name: str
    title: str
    run: Workload
    requests: int
    quick: int
    #: The targets (overhead vs aiozipkin and OpenTelemetry) are judged on these cases.
    small: bool


CASES: Final = (
    Case("sequential_small", "sequential small GETs", sequential_small, 3000, 300, True),
    Case("concurrent_small", "16 concurrent small GETs", concurrent_small, 3000, 300, True),
    Case("download_1mib", "1 MiB downloads (streamed)", download, 300, 30, False),
    Case("upload_streamed", "streamed 1 MiB uploads (16 chunks)", streamed_upload, 300, 30, False),
)
