"""Several traced services on 127.0.0.1, calling each other, reporting to one strict recorder.

Each :class:`Node` is a real aiohttp server with our server middleware (``server.setup()``
unless told otherwise), its own tracer (its name is the span's ``localEndpoint.serviceName``) and
a traced ``ClientSession``. Every request that reaches a node is recorded as it arrived, so tests
assert propagation from the headers that were really sent.

>>> mesh = Mesh(SharedSpanRecorder())                                     # doctest: +SKIP
>>> front, back = mesh.add("frontend"), mesh.add("backend")
>>> async def checkout(request):
...     return web.Response(text=str(await front.call(back.url / "orders")))
>>> front.app.router.add_get("/checkout", checkout)
>>> async with mesh.running():
...     await mesh.get(front.url / "checkout")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiozipkin
from aiohttp import web
from aiozipkin.helpers import TraceContext
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import aiozipkin_client
from aiozipkin_client._context import current_context
from aiozipkin_client.server import setup

from .recorder import SpanRecorder, as_dict
from .servers import Received, start_app

__all__ = ("Mesh", "Node", "SharedSpanRecorder", "TraceTree", "assert_joined")

Installer = Callable[[web.Application, Tracer], None]


class SharedSpanRecorder(SpanRecorder):
    """The strict recorder, for traces that cross services.

    B3 gives the client and the server side of one RPC the same span id; the server side says so
    with ``shared``. Those two are different spans, so a span is identified here by trace id,
    span id *and* the shared flag: a third report of the same id is still a duplicate.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen_sides: set[tuple[str, str, bool]] = set()

    def send(self, record: Record) -> None:
        """Record the span; a second report of the same side is kept as a duplicate."""
        span = as_dict(record)
        key = (span["traceId"], span["id"], span.get("shared", False))
        if key in self._seen_sides:
            self.duplicates.append(span)
            return
        self._seen_sides.add(key)
        self._pending.append(span)
        self._arrived.set()


def _install_ours(app: web.Application, tracer: Tracer) -> None:
    setup(app, tracer)


@dataclass
class Node:
    """One service of the mesh: app, tracer, traced session, and what arrived at it."""

    name: str
    tracer: Tracer
    app: web.Application
    url: URL = field(default_factory=lambda: URL("http://127.0.0.1"))
    session: aiohttp.ClientSession | None = None
    received: list[Received] = field(default_factory=list)
    #: The current trace context each request's handler saw (None if none was set).
    contexts: list[TraceContext | None] = field(default_factory=list)

    def client(self) -> aiohttp.ClientSession:
        """The node's traced session (available while the mesh runs)."""
        assert self.session is not None, "the mesh is not running"
        return self.session

    async def call(self, url: URL, **kwargs: Any) -> tuple[int, str]:
        """GET ``url`` with the traced session; status and body."""
        async with self.client().get(url, **kwargs) as response:
            return response.status, await response.text()

    def only(self) -> Received:
        """The one request that arrived here."""
        assert len(self.received) == 1, f"{self.name}: expected one request, got {self.received}"
        return self.received[0]


class Mesh:
    """Builds nodes, runs them, and checks at the end that every tracer is empty."""

    def __init__(self, recorder: SpanRecorder, sample_rate: float = 1.0) -> None:
        self.recorder = recorder
        self.sample_rate = sample_rate
        self.nodes: dict[str, Node] = {}
        #: An untraced session, for callers outside the mesh (sends headers as given).
        self.plain: aiohttp.ClientSession | None = None

    def add(
        self,
        name: str,
        *,
        install: Installer = _install_ours,
        sample_rate: float | None = None,
    ) -> Node:
        """A new node named ``name``; ``install`` sets up the server middleware on its app."""
        rate = self.sample_rate if sample_rate is None else sample_rate
        tracer = aiozipkin.Tracer(
            self.recorder, Sampler(sample_rate=rate), aiozipkin.create_endpoint(name)
        )
        app = web.Application()
        install(app, tracer)
        node = Node(name, tracer, app)
        app.middlewares.append(_recording_middleware(node))
        self.nodes[name] = node
        return node

    async def get(self, url: URL, headers: Any = None) -> tuple[int, str]:
        """GET ``url`` with the untraced session."""
        assert self.plain is not None, "the mesh is not running"
        async with self.plain.get(url, headers=headers) as response:
            return response.status, await response.text()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Mesh]:
        """Start every node (servers and traced sessions); on exit, check the tracers."""
        async with AsyncExitStack() as stack:
            for node in self.nodes.values():
                node.url = await stack.enter_async_context(start_app(node.app))
                config = aiozipkin_client.make_trace_config(node.tracer)
                node.session = await stack.enter_async_context(
                    aiohttp.ClientSession(trace_configs=[config])
                )
            self.plain = await stack.enter_async_context(aiohttp.ClientSession())
            yield self
        self.verify_tracers()

    def verify_tracers(self) -> None:
        """No tracer holds an unfinished span."""
        for node in self.nodes.values():
            assert not node.tracer._records, f"{node.name} left spans: {list(node.tracer._records)}"


def _recording_middleware(node: Node) -> Any:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        node.received.append(
            Received(request.method, request.path, request.query_string, headers, b"")
        )
        node.contexts.append(current_context())
        return await handler(request)

    return record


class TraceTree:
    """The spans of one trace, indexed by (id, kind); fails on anything that does not link up."""

    def __init__(self, spans: Iterable[dict[str, Any]], outside: Iterable[str] = ()) -> None:
        """``outside``: parent ids that belong to a caller outside the recorded services."""
        self.spans = list(spans)
        assert self.spans, "no spans"
        trace_ids = {span["traceId"] for span in self.spans}
        assert len(trace_ids) == 1, f"more than one trace: {trace_ids}"
        self.trace_id = trace_ids.pop()
        self._by_key: dict[tuple[str, str | None], dict[str, Any]] = {}
        for span in self.spans:
            key = (span["id"], span.get("kind"))
            assert key not in self._by_key, f"two spans with id and kind {key}"
            self._by_key[key] = span
        ids = {span["id"] for span in self.spans} | set(outside)
        for span in self.spans:
            if "parentId" in span:
                assert span["parentId"] in ids, f"parent of {span} is not in the trace"

    def one(self, service: str, kind: str, name: str | None = None) -> dict[str, Any]:
        """The only span of ``service`` with that kind (and name, if given)."""
        found = self.all(service, kind, name)
        assert len(found) == 1, f"expected one {service} {kind} {name}, got {found}"
        return found[0]

    def all(self, service: str, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        """Every span of ``service`` with that kind (and name), by start time."""
        found = [
            span
            for span in self.spans
            if span["localEndpoint"]["serviceName"] == service
            and span.get("kind") == kind
            and (name is None or span["name"] == name)
        ]
        return sorted(found, key=lambda span: span["timestamp"])

    def server_of(self, client: dict[str, Any]) -> dict[str, Any]:
        """The SERVER span sharing ``client``'s id."""
        return self._by_key[(client["id"], "SERVER")]

    def children(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        """Spans whose parent is ``parent``'s id, by start time."""
        found = [span for span in self.spans if span.get("parentId") == parent["id"]]
        return sorted(found, key=lambda span: span["timestamp"])

    def roots(self) -> list[dict[str, Any]]:
        """Spans without a parent."""
        return [span for span in self.spans if "parentId" not in span]


def assert_joined(client: dict[str, Any], server: dict[str, Any]) -> None:
    """``server`` is the other half of ``client``'s RPC, as B3 wants it: same id, shared."""
    assert client["kind"] == "CLIENT"
    assert server["kind"] == "SERVER"
    assert server["traceId"] == client["traceId"]
    assert server["id"] == client["id"]
    assert server.get("parentId") == client.get("parentId")
    assert server["shared"] is True
    assert "shared" not in client
