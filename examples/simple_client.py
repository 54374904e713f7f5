"""The smallest traced client: one request, its span printed as Zipkin v2 JSON.

Self-contained on purpose (this is what ``make example`` runs): it starts a tiny aiohttp server on
127.0.0.1, sends it one request through a traced ``ClientSession``, and prints the span the tracer
reported. A real program reports to Zipkin instead, with a tracer from
``aiozipkin_client.create(...)`` (see README's Quickstart).

    python examples/simple_client.py
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import aiozipkin
from aiohttp import web
from aiozipkin.record import Record
from aiozipkin.transport import TransportABC

import aiozipkin_client


class PrintLater(TransportABC):
    """Keeps reported spans in memory, where a real transport would post them to Zipkin."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def send(self, record: Record) -> None:
        """Keep the span, as Zipkin v2 JSON."""
        self.spans.append({k: v for k, v in record.asdict().items() if _present(v)})

    async def close(self) -> None:
        """Nothing to flush."""
        return None


def _present(value: object) -> bool:
    # Zipkin v2 JSON leaves absent fields out rather than sending null, false or [].
    return value is not None and value is not False and value != [] and value != {}


async def hello(request: web.Request) -> web.Response:
    """The server side of the example: just answers."""
    return web.Response(text="hello")


async def main() -> int:
    """Serve ``/hello``, call it once with tracing on, print the client span."""
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    transport = PrintLater()
    endpoint = aiozipkin.create_endpoint("simple_client")
    tracer = aiozipkin.Tracer(transport, aiozipkin.sampler.Sampler(sample_rate=1.0), endpoint)
    trace_config = aiozipkin_client.make_trace_config(tracer, remote_service_name="hello-server")
    try:
        async with (
            aiohttp.ClientSession(trace_configs=[trace_config]) as session,
            session.get(f"http://127.0.0.1:{port}/hello") as response,
        ):
            print(f"GET /hello -> {response.status} {await response.text()!r}", file=sys.stderr)
    finally:
        await tracer.close()
        await runner.cleanup()

    print(json.dumps(transport.spans, indent=2))
    return 0 if len(transport.spans) == 1 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
