"""One trace across real services: server middleware + traced client sessions, end to end.

Every service runs on 127.0.0.1 with its own tracer (so its own ``localEndpoint``) reporting to
one strict recorder. The whole trace tree is asserted: ids, parent links, kinds, shared flags,
names and tags; propagation is asserted from the headers each service actually received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer

from tests.kit.mesh import Mesh, Node, SharedSpanRecorder, TraceTree, assert_joined
from tests.kit.recorder import SpanRecorder

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"


@pytest.fixture
def recorder() -> SpanRecorder:
    """Client and server halves of one RPC share an id: they are not duplicates here."""
    return SharedSpanRecorder()


@pytest.fixture
def mesh(recorder: SpanRecorder) -> Mesh:
    return Mesh(recorder)


@pytest.fixture(autouse=True)
def _nothing_left_unchecked(recorder: SpanRecorder) -> Any:
    yield
    recorder.verify()


def chain(*nodes: Node, fail_sku: str | None = None) -> None:
    """frontend → backend → inventory: the routes of a small shop.

    ``GET /checkout/{order_id}`` calls the next node's ``/orders/{order_id}``, which looks up
    two items concurrently (``gather``) and one in a spawned task (``create_task``) on the last
    node's ``/items/{sku}``. With two nodes, the chain stops at ``/orders``. An item equal to
    ``fail_sku`` makes the inventory raise, and the order answer 502.
    """
    first, rest = nodes[0], nodes[1:]

    async def checkout(request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        status, body = await first.call(rest[0].url / "orders" / order_id)
        return web.Response(status=status, text=f"checkout:{body}")

    first.app.router.add_get("/checkout/{order_id}", checkout)
    if len(rest) == 1:

        async def order_only(request: web.Request) -> web.Response:
            return web.Response(text=f"order {request.match_info['order_id']}")

        rest[0].app.router.add_get("/orders/{order_id}", order_only)
        return

    middle, last = rest

    async def order(request: web.Request) -> web.Response:
        items = last.url / "items"
        spawned = asyncio.create_task(middle.call(items / "c3"))
        answers = [*await asyncio.gather(middle.call(items / "a1"), middle.call(items / "b2"))]
        answers.append(await spawned)
        if any(status != 200 for status, _ in answers):
            raise web.HTTPBadGateway(text="inventory failed")
        return web.Response(text=",".join(body for _, body in answers))

    async def item(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        if sku == fail_sku:
            raise RuntimeError(f"warehouse for {sku} is offline")
        return web.Response(text=sku)

    middle.app.router.add_get("/orders/{order_id}", order)
    last.app.router.add_get("/items/{sku}", item)


@pytest.fixture
async def two(mesh: Mesh) -> AsyncIterator[Mesh]:
    chain(mesh.add("frontend"), mesh.add("backend"))
    async with mesh.running():
        yield mesh


@pytest.fixture
async def three(mesh: Mesh) -> AsyncIterator[Mesh]:
    chain(mesh.add("frontend"), mesh.add("backend"), mesh.add("inventory"))
    async with mesh.running():
        yield mesh


def http_tags(span: dict[str, Any]) -> dict[str, str]:
    """The HTTP tags of a client span (the client's own timing tags are its tests' business)."""
    keys = ("http.method", "http.path", "http.url", "http.status_code")
    return {key: span["tags"][key] for key in keys if key in span["tags"]}


def _expected_b3(client: dict[str, Any], sampled: str = "1") -> dict[str, str]:
    expected = {
        "x-b3-traceid": client["traceId"],
        "x-b3-spanid": client["id"],
        "x-b3-sampled": sampled,
    }
    if "parentId" in client:
        expected["x-b3-parentspanid"] = client["parentId"]
    return expected


async def test_two_services_make_one_trace(two: Mesh, recorder: SpanRecorder) -> None:
    front, back = two.nodes["frontend"], two.nodes["backend"]

    assert await two.get(front.url / "checkout" / "42") == (200, "checkout:order 42")

    tree = TraceTree(recorder.take(3))
    server = tree.one("frontend", "SERVER")
    client = tree.one("frontend", "CLIENT")
    joined = tree.one("backend", "SERVER")
    assert tree.roots() == [server]
    assert "shared" not in server
    assert client["parentId"] == server["id"]
    assert_joined(client, joined)
    assert joined["parentId"] == server["id"]
    assert (server["name"], client["name"], joined["name"]) == (
        "get /checkout/{order_id}",
        "get",
        "get /orders/{order_id}",
    )
    assert server["tags"] == {
        "http.method": "GET",
        "http.path": "/checkout/42",
        "http.route": "/checkout/{order_id}",
        "http.status_code": "200",
    }
    assert http_tags(client) == {
        "http.method": "GET",
        "http.path": "/orders/42",
        "http.url": f"{back.url}/orders/42",
        "http.status_code": "200",
    }
    assert joined["tags"] == {
        "http.method": "GET",
        "http.path": "/orders/42",
        "http.route": "/orders/{order_id}",
        "http.status_code": "200",
    }
    assert client["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": back.url.port}
    assert server["remoteEndpoint"] == joined["remoteEndpoint"] == {"ipv4": "127.0.0.1"}
    assert front.only().b3() == {}
    assert back.only().b3() == _expected_b3(client)


async def test_three_services_with_concurrent_and_spawned_calls(
    three: Mesh, recorder: SpanRecorder
) -> None:
    front, back, stock = (three.nodes[n] for n in ("frontend", "backend", "inventory"))

    assert await three.get(front.url / "checkout" / "7") == (200, "checkout:a1,b2,c3")

    tree = TraceTree(recorder.take(9))
    root = tree.one("frontend", "SERVER")
    assert tree.roots() == [root]
    front_client = tree.one("frontend", "CLIENT")
    order = tree.one("backend", "SERVER", "get /orders/{order_id}")
    assert tree.children(root) == [front_client, order] or tree.children(root) == [
        order,
        front_client,
    ]
    assert_joined(front_client, order)
    # Three calls made by the order handler: two in gather, one in create_task. All of them
    # are children of the handler's server span, without the handler passing anything.
    calls = tree.all("backend", "CLIENT")
    assert len(calls) == 3
    assert {call["tags"]["http.path"] for call in calls} == {"/items/a1", "/items/b2", "/items/c3"}
    items = tree.all("inventory", "SERVER")
    assert len(items) == 3
    for call in calls:
        assert call["parentId"] == order["id"]
        assert call["name"] == "get"
        item = tree.server_of(call)
        assert_joined(call, item)
        assert item["name"] == "get /items/{sku}"
        assert item["tags"]["http.path"] == call["tags"]["http.path"]
        assert item["tags"]["http.route"] == "/items/{sku}"
    # One id per RPC (client and server share it) plus the root's.
    assert len({span["id"] for span in tree.spans}) == 5
    assert back.only().b3() == _expected_b3(front_client)
    arrived = {received.path: received.b3() for received in stock.received}
    assert arrived == {call["tags"]["http.path"]: _expected_b3(call) for call in calls}


async def test_downstream_error_marks_every_span_on_the_way_up(
    mesh: Mesh, recorder: SpanRecorder
) -> None:
    front, back, stock = mesh.add("frontend"), mesh.add("backend"), mesh.add("inventory")
    chain(front, back, stock, fail_sku="b2")

    async with mesh.running():
        assert await mesh.get(front.url / "checkout" / "13") == (502, "checkout:inventory failed")

    tree = TraceTree(recorder.take(9))
    errors = {
        (span["localEndpoint"]["serviceName"], span["kind"], span["tags"]["http.path"]): (
            span["tags"].get("http.status_code"),
            span["tags"].get("error"),
        )
        for span in tree.spans
    }
    assert errors == {
        ("frontend", "SERVER", "/checkout/13"): ("502", "502"),
        ("frontend", "CLIENT", "/orders/13"): ("502", "502"),
        ("backend", "SERVER", "/orders/13"): ("502", "502"),
        ("backend", "CLIENT", "/items/a1"): ("200", None),
        ("backend", "CLIENT", "/items/b2"): ("500", "500"),
        ("backend", "CLIENT", "/items/c3"): ("200", None),
        ("inventory", "SERVER", "/items/a1"): ("200", None),
        ("inventory", "SERVER", "/items/b2"): ("500", "RuntimeError: warehouse for b2 is offline"),
        ("inventory", "SERVER", "/items/c3"): ("200", None),
    }


async def test_caller_outside_the_mesh_is_joined(two: Mesh, recorder: SpanRecorder) -> None:
    front, back = two.nodes["frontend"], two.nodes["backend"]
    headers = {"b3": f"{TRACE}-{SPAN}-1-{PARENT}"}

    assert (await two.get(front.url / "checkout" / "1", headers=headers))[0] == 200

    tree = TraceTree(recorder.take(3), outside=[PARENT])
    assert tree.trace_id == TRACE
    server = tree.one("frontend", "SERVER")
    assert (server["id"], server["parentId"], server["shared"]) == (SPAN, PARENT, True)
    client = tree.one("frontend", "CLIENT")
    assert client["parentId"] == SPAN
    assert_joined(client, tree.one("backend", "SERVER"))
    assert back.only().b3() == _expected_b3(client)


@pytest.mark.parametrize(
    ("headers", "trace_id", "first_parent"),
    [
        pytest.param({"X-B3-Sampled": "0"}, None, None, id="deny-only"),
        pytest.param({"b3": "0"}, None, None, id="single-deny-only"),
        pytest.param({"b3": f"{TRACE}-{SPAN}-0-{PARENT}"}, TRACE, SPAN, id="single-deny-ids"),
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "0"},
            TRACE,
            SPAN,
            id="multi-deny-ids",
        ),
    ],
)
async def test_unsampled_request_propagates_its_ids_with_a_deny(
    three: Mesh,
    recorder: SpanRecorder,
    headers: dict[str, str],
    trace_id: str | None,
    first_parent: str | None,
) -> None:
    front, back, stock = (three.nodes[n] for n in ("frontend", "backend", "inventory"))

    assert await three.get(front.url / "checkout" / "7", headers=headers) == (
        200,
        "checkout:a1,b2,c3",
    )

    recorder.expect_none()
    (front_context,) = front.contexts
    assert front_context is not None
    assert front_context.sampled is False
    if trace_id is not None:
        assert front_context.trace_id == trace_id
    to_back = back.only().b3()
    assert to_back.pop("x-b3-sampled") == "0"
    assert to_back["x-b3-traceid"] == front_context.trace_id
    assert to_back["x-b3-parentspanid"] == front_context.span_id
    if first_parent is not None:
        assert front_context.span_id == first_parent
    assert len(to_back["x-b3-spanid"]) == 16
    assert len(stock.received) == 3
    for received in stock.received:
        to_stock = received.b3()
        assert to_stock.pop("x-b3-sampled") == "0"
        # Each hop a new span id, all children of the span the backend received.
        assert to_stock["x-b3-traceid"] == front_context.trace_id
        assert to_stock["x-b3-parentspanid"] == to_back["x-b3-spanid"]
    assert len({r.b3()["x-b3-spanid"] for r in stock.received}) == 3


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [
        pytest.param({"X-B3-Flags": "1"}, None, id="flags-only"),
        pytest.param({"b3": "d"}, None, id="single-debug-only"),
        pytest.param(
            {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Flags": "1"}, TRACE, id="multi"
        ),
    ],
)
async def test_debug_request_makes_every_span_debug(
    recorder: SpanRecorder, headers: dict[str, str], trace_id: str | None
) -> None:
    # No tracer samples on its own: only the debug flag can record anything.
    mesh = Mesh(recorder, sample_rate=0.0)
    front, back, stock = mesh.add("frontend"), mesh.add("backend"), mesh.add("inventory")
    chain(front, back, stock)

    async with mesh.running():
        assert (await mesh.get(front.url / "checkout" / "5", headers=headers))[0] == 200

    tree = TraceTree(recorder.take(9))
    if trace_id is not None:
        assert tree.trace_id == trace_id
    assert all(span["debug"] is True for span in tree.spans)
    for received in [back.only(), *stock.received]:
        b3 = received.b3()
        # Debug implies accept: X-B3-Flags: 1 and no X-B3-Sampled.
        assert b3["x-b3-flags"] == "1"
        assert "x-b3-sampled" not in b3
        assert b3["x-b3-traceid"] == tree.trace_id
    for call in tree.all("frontend", "CLIENT") + tree.all("backend", "CLIENT"):
        assert_joined(call, tree.server_of(call))


async def test_deferred_decision_is_made_once_by_the_first_service(recorder: SpanRecorder) -> None:
    # The frontend never samples, the backend always would: the frontend's decision wins.
    mesh = Mesh(recorder)
    front, back = mesh.add("frontend", sample_rate=0.0), mesh.add("backend", sample_rate=1.0)
    chain(front, back)

    async with mesh.running():
        headers = {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN}
        assert (await mesh.get(front.url / "checkout" / "3", headers=headers))[0] == 200

    recorder.expect_none()
    b3 = back.only().b3()
    assert b3["x-b3-traceid"] == TRACE
    assert b3["x-b3-parentspanid"] == SPAN
    assert b3["x-b3-sampled"] == "0"


async def test_client_under_aiozipkins_own_server_middleware(
    mesh: Mesh, recorder: SpanRecorder
) -> None:
    def aiozipkin_setup(app: web.Application, tracer: Tracer) -> None:
        aiozipkin.setup(app, tracer)

    front = mesh.add("frontend", install=aiozipkin_setup)
    back = mesh.add("backend")
    chain(front, back)

    async with mesh.running():
        assert await mesh.get(front.url / "checkout" / "9") == (200, "checkout:order 9")

    tree = TraceTree(recorder.take(3))
    server = tree.one("frontend", "SERVER")
    # aiozipkin's own naming, raw path and all: not ours to change.
    assert server["name"] == "GET /checkout/9"
    client = tree.one("frontend", "CLIENT")
    assert client["parentId"] == server["id"]
    joined = tree.one("backend", "SERVER")
    assert_joined(client, joined)
    assert joined["name"] == "get /orders/{order_id}"
    assert back.only().b3() == _expected_b3(client)


async def test_our_server_under_an_aiozipkin_client_caller(
    mesh: Mesh, recorder: SpanRecorder
) -> None:
    # aiozipkin's own client helper sends X-B3-Flags: 0 and X-B3-Sampled: 1; we join it.
    back = mesh.add("backend")
    chain(mesh.add("frontend"), back)
    caller = aiozipkin.Tracer(
        recorder, aiozipkin.sampler.Sampler(sample_rate=1.0), aiozipkin.create_endpoint("caller")
    )

    async with mesh.running():
        config = aiozipkin.make_trace_config(caller)
        async with aiohttp.ClientSession(trace_configs=[config]) as session:
            with caller.new_trace(sampled=True) as root:
                root.name("caller job")
                ctx = {"span_context": root.context}
                async with session.get(back.url / "orders" / "4", trace_request_ctx=ctx) as resp:
                    assert resp.status == 200

    tree = TraceTree(recorder.take(3))
    root_span = tree.one("caller", "CLIENT")
    assert_joined(root_span, tree.one("backend", "SERVER"))
    assert not caller._records
