"""Three aiohttp services that call each other, traced end to end: a tiny shop.

``frontend`` → ``backend`` → ``inventory``:

* frontend ``GET /checkout/{order_id}`` asks the backend for the order;
* backend ``GET /orders/{order_id}`` looks up every item of the order on the inventory, all at
  once (``asyncio.gather``): those calls are children of the backend's span without passing
  anything, because the server middleware makes its span current for the handler;
* inventory ``GET /items/{sku}`` answers the stock, and fails for ``unicorn``.

Every service has the server middleware (:func:`aiozipkin_client.server.setup`) and a traced
``ClientSession``; ``/health`` is not traced (``skip_routes``). Run one service per process::

    python -m examples.services inventory --port 8082 --zipkin http://localhost:9411
    python -m examples.services backend --port 8081 --inventory-url http://localhost:8082
    python -m examples.services frontend --port 8080 --backend-url http://localhost:8081
    curl -i http://localhost:8080/checkout/42

Every flag has an environment variable (``PORT``, ``HOST``, ``ZIPKIN_URL``, ``BACKEND_URL``,
``INVENTORY_URL``, ``SAMPLE_RATE``), for Docker. Without a Zipkin address, spans are logged as
JSON lines instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import aiohttp
import aiozipkin
from aiohttp import web
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import TransportABC
from yarl import URL

import aiozipkin_client
from aiozipkin_client import reporting
from aiozipkin_client.server import SPAN_KEY, setup

__all__ = (
    "ORDERS",
    "SERVICES",
    "backend_app",
    "frontend_app",
    "inventory_app",
    "main",
    "open_tracer",
    "zipkin_urls",
)

log = logging.getLogger("examples.services")

SERVICES: Final = ("frontend", "backend", "inventory")

#: The backend's orders: the items each one holds. Order 13 holds an item the inventory fails on.
ORDERS: Final = {"42": ("apple", "pear"), "13": ("apple", "unicorn")}

SESSION_KEY: Final = web.AppKey("examples.session", aiohttp.ClientSession)
NEXT_URL_KEY: Final = web.AppKey("examples.next_url", URL)


def zipkin_urls(address: str) -> tuple[URL, URL]:
    """``(ui_base, spans_endpoint)`` for a Zipkin address given with or without its API path.

    >>> [str(u) for u in zipkin_urls("http://localhost:9411")]
    ['http://localhost:9411', 'http://localhost:9411/api/v2/spans']
    """
    url = URL(address)
    if not url.is_absolute() or url.scheme not in ("http", "https"):
        raise ValueError(
            f"a Zipkin address is an http(s) URL such as http://host:9411, not {address!r}"
        )
    base = url.origin()
    if url.path.rstrip("/") in ("", "/api/v2/spans"):
        return base, base / "api" / "v2" / "spans"
    return base, url


class JsonLinesTransport(TransportABC):
    """Logs each span as one JSON line: enough to see spans when there is no Zipkin."""

    def send(self, record: Record) -> None:
        """Log the span at INFO level on the ``examples.services`` logger."""
        span = {k: v for k, v in record.asdict().items() if v is not None}
        log.info("span %s", json.dumps(span, sort_keys=True))

    async def close(self) -> None:
        """Nothing is buffered."""
        return None


@asynccontextmanager
async def open_tracer(
    service: str, zipkin: str | None, sample_rate: float = 1.0, port: int | None = None
) -> AsyncIterator[Tracer]:
    """A tracer for ``service``: reporting to Zipkin if an address is given; closed on exit."""
    endpoint = aiozipkin.create_endpoint(service, port=port)
    if zipkin is None:
        tracer = aiozipkin.Tracer(JsonLinesTransport(), Sampler(sample_rate=sample_rate), endpoint)
        yield tracer
        return
    _, spans = zipkin_urls(zipkin)
    # Closing the tracer (leaving the block) flushes what is buffered.
    async with reporting.create(spans, endpoint, sample_rate=sample_rate, send_interval=1.0) as t:
        yield t


def _traced_app(service: str, tracer: Tracer, next_url: URL | None) -> web.Application:
    """An application with the middleware, ``/health`` untraced, and a traced session."""
    app = web.Application()
    app.router.add_get("/health", health)
    setup(app, tracer, skip_routes=["/health"])
    if next_url is not None:
        app[NEXT_URL_KEY] = next_url

    async def traced_session(app: web.Application) -> AsyncIterator[None]:
        # The remote service name shows in Zipkin even for calls whose server is not traced.
        downstream = SERVICES[SERVICES.index(service) + 1] if service != SERVICES[-1] else None
        config = aiozipkin_client.make_trace_config(tracer, remote_service_name=downstream)
        async with aiohttp.ClientSession(trace_configs=[config]) as session:
            app[SESSION_KEY] = session
            yield

    app.cleanup_ctx.append(traced_session)
    return app


async def health(request: web.Request) -> web.Response:
    """Liveness for orchestrators; not traced (``skip_routes``), it would only be noise."""
    return web.Response(text="ok")


def frontend_app(tracer: Tracer, backend_url: URL) -> web.Application:
    """The frontend: ``GET /checkout/{order_id}``, which asks the backend for the order."""
    app = _traced_app("frontend", tracer, backend_url)
    app.router.add_get("/checkout/{order_id}", checkout)
    return app


async def checkout(request: web.Request) -> web.Response:
    """Ask the backend for the order; answer with its answer and the trace id."""
    order_id = request.match_info["order_id"]
    url = request.app[NEXT_URL_KEY] / "orders" / order_id
    async with request.app[SESSION_KEY].get(url) as response:
        body = await response.text()
        status = response.status
    # The trace id in a response header (and in logs) lets anyone find this trace in Zipkin.
    trace_id = request[SPAN_KEY].context.trace_id
    return web.Response(status=status, text=body, headers={"X-Trace-Id": trace_id})


def backend_app(tracer: Tracer, inventory_url: URL) -> web.Application:
    """The backend: ``GET /orders/{order_id}``, which looks up each item on the inventory."""
    app = _traced_app("backend", tracer, inventory_url)
    app.router.add_get("/orders/{order_id}", order)
    return app


async def order(request: web.Request) -> web.Response:
    """Look up every item of the order concurrently; 502 if the inventory fails."""
    items = ORDERS.get(request.match_info["order_id"])
    if items is None:
        raise web.HTTPNotFound(text="no such order")
    session = request.app[SESSION_KEY]
    inventory = request.app[NEXT_URL_KEY] / "items"

    async def stock(sku: str) -> tuple[int, str]:
        async with session.get(inventory / sku) as response:
            return response.status, await response.text()

    # Each lookup runs in its own task; all of them are children of this request's span.
    answers = await asyncio.gather(*(stock(sku) for sku in items))
    failed = [sku for sku, (status, _) in zip(items, answers, strict=True) if status != 200]
    if failed:
        request[SPAN_KEY].annotate("inventory failed")
        raise web.HTTPBadGateway(text=f"inventory failed for {', '.join(failed)}")
    return web.json_response(
        {sku: json.loads(body) for sku, (_, body) in zip(items, answers, strict=True)}
    )


def inventory_app(tracer: Tracer) -> web.Application:
    """The inventory: ``GET /items/{sku}``; raises for ``unicorn``, which it never stocks."""
    app = _traced_app("inventory", tracer, None)
    app.router.add_get("/items/{sku}", item)
    return app


async def item(request: web.Request) -> web.Response:
    """The stock of one item; an unhandled exception for ``unicorn``."""
    sku = request.match_info["sku"]
    if sku == "unicorn":
        raise RuntimeError("no warehouse stocks unicorns")
    request[SPAN_KEY].tag("inventory.sku", sku)
    return web.json_response({"stock": len(sku)})


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m examples.services", description="Run one service of the example shop."
    )
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"), help="env HOST")
    parser.add_argument("--port", type=int, default=int(env("PORT", "0") or 0), help="env PORT")
    parser.add_argument(
        "--zipkin",
        default=env("ZIPKIN_URL") or None,
        help="e.g. http://localhost:9411; env ZIPKIN_URL",
    )
    parser.add_argument(
        "--backend-url", default=env("BACKEND_URL", "http://127.0.0.1:8081"), help="env BACKEND_URL"
    )
    parser.add_argument(
        "--inventory-url",
        default=env("INVENTORY_URL", "http://127.0.0.1:8082"),
        help="env INVENTORY_URL",
    )
    parser.add_argument(
        "--sample-rate",
        type=float,
        default=float(env("SAMPLE_RATE", "1.0")),
        help="env SAMPLE_RATE",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one service until interrupted."""
    options = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    default_ports = {"frontend": 8080, "backend": 8081, "inventory": 8082}
    port = options.port or default_ports[options.service]

    async def build() -> web.Application:
        tracing = AsyncExitStack()
        tracer = await tracing.enter_async_context(
            open_tracer(options.service, options.zipkin, options.sample_rate, port)
        )
        if options.service == "frontend":
            app = frontend_app(tracer, URL(options.backend_url))
        elif options.service == "backend":
            app = backend_app(tracer, URL(options.inventory_url))
        else:
            app = inventory_app(tracer)

        async def close_tracer(app: web.Application) -> None:
            # After the session's cleanup: its last spans are flushed too.
            await tracing.aclose()

        app.on_cleanup.append(close_tracer)
        return app

    web.run_app(build(), host=options.host, port=port, print=lambda text: log.info("%s", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
