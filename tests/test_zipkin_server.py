"""Against a real Zipkin: a trace through two services is read back whole and linked.

Zipkin is the one at ``ZIPKIN_URL`` (``http://host:9411``), or else a container this module starts
with the ``docker`` package (``openzipkin/zipkin``, its port published on 127.0.0.1 only) when a
Docker engine answers. No other address is ever tried; with neither, the tests are skipped and
say why. Run them with ``pytest -m zipkin``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any, Final

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from aiozipkin_client import reporting
from aiozipkin_client.server import setup
from examples.services import zipkin_urls
from tests.kit.servers import start_app

pytestmark = pytest.mark.zipkin

IMAGE: Final = "openzipkin/zipkin:latest"
NO_ZIPKIN: Final = "needs a Zipkin server: ZIPKIN_URL=http://host:9411, or the 'docker' package and a Docker engine"
#: Seconds a started container may take to answer /health (the JVM starts slowly on small VMs).
STARTUP_SECONDS: Final = 180
#: Attempts, 0.25 s apart, to read a whole trace back once it was flushed.
READ_ATTEMPTS: Final = 80


def _healthy(base: URL) -> bool:
    try:
        with urllib.request.urlopen(str(base / "health"), timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="module")
def zipkin() -> Iterator[URL]:
    """The base URL of a Zipkin server: ZIPKIN_URL's, or a container's started here."""
    given = os.environ.get("ZIPKIN_URL")
    if given:
        base, _ = zipkin_urls(given)
        yield base
        return
    docker = pytest.importorskip("docker", reason=f"{NO_ZIPKIN}: the 'docker' package is absent")
    if not hasattr(docker, "from_env"):
        # Without the package, `import docker` finds this repository's docker/ folder.
        pytest.skip(f"{NO_ZIPKIN}: the 'docker' package is not installed")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"{NO_ZIPKIN}: no Docker engine answers ({type(exc).__name__}: {exc})")
    container = client.containers.run(
        IMAGE, detach=True, auto_remove=True, ports={"9411/tcp": ("127.0.0.1", None)}
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["9411/tcp"][0]["HostPort"]
        base = URL.build(scheme="http", host="127.0.0.1", port=int(port))
        for _ in range(STARTUP_SECONDS):
            if _healthy(base):
                break
            time.sleep(1)
        else:
            logs = container.logs(tail=40).decode("utf-8", "replace")
            pytest.fail(f"Zipkin container not healthy after {STARTUP_SECONDS} s:\n{logs}")
        yield base
    finally:
        container.stop(timeout=5)


async def _read_trace(
    session: aiohttp.ClientSession, base: URL, trace_id: str, count: int
) -> list[dict[str, Any]]:
    """The trace once it holds ``count`` spans (Zipkin stores asynchronously); bounded."""
    url = base / "api" / "v2" / "trace" / trace_id
    spans: list[dict[str, Any]] = []
    for _ in range(READ_ATTEMPTS):
        async with session.get(url) as response:
            if response.status == 200:
                spans = json.loads(await response.text())
                if len(spans) >= count:
                    return spans
        await asyncio.sleep(0.25)
    raise AssertionError(f"Zipkin holds {len(spans)} of {count} spans of {trace_id}: {spans}")


async def test_trace_through_two_services_arrives_whole_and_linked(zipkin: URL) -> None:
    _, spans_url = zipkin_urls(str(zipkin))
    async with AsyncExitStack() as stack:
        tracer: dict[str, Tracer] = {}
        for name in ("zipkin-test", "frontend", "backend"):
            endpoint = aiozipkin.create_endpoint(name, ipv4="127.0.0.1")
            tracer[name] = await stack.enter_async_context(
                reporting.create(spans_url, endpoint, sample_rate=1.0, send_interval=0.2)
            )
        sessions = {
            name: await stack.enter_async_context(
                aiohttp.ClientSession(
                    trace_configs=[aiozipkin_client.make_trace_config(tracer[name])]
                )
            )
            for name in ("zipkin-test", "frontend")
        }

        async def order(request: web.Request) -> web.Response:
            return web.Response(text=f"order {request.match_info['order_id']}")

        back_app = setup(web.Application(), tracer["backend"])
        back_app.router.add_get("/orders/{order_id}", order)
        back = await stack.enter_async_context(start_app(back_app))

        async def checkout(request: web.Request) -> web.Response:
            url = back / "orders" / request.match_info["order_id"]
            async with sessions["frontend"].get(url) as response:
                return web.Response(status=response.status, text=await response.text())

        front_app = setup(web.Application(), tracer["frontend"])
        front_app.router.add_get("/checkout/{order_id}", checkout)
        front = await stack.enter_async_context(start_app(front_app))

        with tracer["zipkin-test"].new_trace(sampled=True) as root:
            root.name("zipkin round trip")
            with aiozipkin_client.use_span(root):
                async with sessions["zipkin-test"].get(front / "checkout" / "7") as response:
                    assert response.status == 200
                    assert await response.text() == "order 7"
        trace_id = root.context.trace_id
    # Every tracer is closed here: what they buffered has been posted.

    async with aiohttp.ClientSession() as reader:
        spans = await _read_trace(reader, zipkin, trace_id, 5)

    assert len(spans) == 5, spans
    by_role = {(s["localEndpoint"]["serviceName"], s.get("kind")): s for s in spans}
    assert set(by_role) == {
        ("zipkin-test", None),
        ("zipkin-test", "CLIENT"),
        ("frontend", "SERVER"),
        ("frontend", "CLIENT"),
        ("backend", "SERVER"),
    }
    root_span = by_role[("zipkin-test", None)]
    test_client = by_role[("zipkin-test", "CLIENT")]
    front_server = by_role[("frontend", "SERVER")]
    front_client = by_role[("frontend", "CLIENT")]
    back_server = by_role[("backend", "SERVER")]
    assert all(span["traceId"] == trace_id for span in spans)
    assert "parentId" not in root_span
    assert root_span["name"] == "zipkin round trip"
    assert test_client["parentId"] == root_span["id"]
    for client, server in ((test_client, front_server), (front_client, back_server)):
        assert server["id"] == client["id"]
        assert server["parentId"] == client["parentId"]
        assert server.get("shared") is True
        assert "shared" not in client
    assert front_client["parentId"] == front_server["id"]
    assert front_server["name"] == "get /checkout/{order_id}"
    assert back_server["name"] == "get /orders/{order_id}"
    assert back_server["tags"]["http.route"] == "/orders/{order_id}"
    assert front_client["tags"]["http.status_code"] == "200"
