"""A client span reported to ZipkinTransport directly is the same bytes as through a Record.

Proposed as tests/test_client_direct_report.py. The client skips building an aiozipkin Record
when the tracer reports through our ZipkinTransport; every other transport gets the Record.
Both paths must post exactly the same span, whatever the hop holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiozipkin.helpers import TraceContext, create_endpoint
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aiozipkin_client import B3Format, default_request_parser, default_response_parser
from aiozipkin_client._state import Hop
from aiozipkin_client.client import ClientSettings, ClientTracing
from aiozipkin_client.parsers import RequestView
from aiozipkin_client.reporting import ZipkinTransport


class _Capturing(ZipkinTransport):
    """Keeps what would be queued, and can refuse the direct path."""

    def __init__(self, direct: bool) -> None:
        super().__init__("http://127.0.0.1:9/api/v2/spans")
        self.items: list[bytes] = []
        self.direct = direct
        self.direct_calls = 0

    def _enqueue(self, item: bytes) -> None:
        self.items.append(item)

    def _send_span(self, *args: Any) -> bool:
        self.direct_calls += 1
        return self.direct and super()._send_span(*args)


def _settings(remote_service_name: Any = None) -> ClientSettings:
    return ClientSettings(
        b3_format=B3Format.MULTI,
        propagate_to=None,
        exclude=(),
        remote_service_name=remote_service_name,
        sampler=None,
        request_parser=default_request_parser,
        response_parser=default_response_parser,
        connection_phases="annotations",
    )


def _hop(url: str, name: Any, tags: dict[Any, Any], annotations: list[tuple[float, Any]]) -> Hop:
    context = TraceContext(
        "4e441824ec2b6a44ffdc9bb9a6453df3",
        "6b221d5bc9e6496c",
        "ffdc9bb9a6453df3",
        True,
        False,
        False,
    )
    request = RequestView("GET", URL(url), CIMultiDictProxy(CIMultiDict()))
    hop = Hop(context, request, 1_700_000_000.123456)
    hop.span_name = name
    hop.tags.update(tags)
    hop.annotations.extend(annotations)
    hop.closed = True
    hop.end = 1_700_000_000.223457
    return hop


HOPS = [
    (
        "http://127.0.0.1:8080/items/1?a=b",
        "get",
        {"http.path": "/items/1"},
        [(1_700_000_000.2, "wr"), (1_700_000_000.13, "ws"), (1_700_000_000.13, "ws")],
    ),
    ("http://[::1]:8443/x", "", {"": "empty key", "k": ""}, [(1_700_000_000.15, "")]),
    ("https://example.com/", None, {"n": 5}, [(1_700_000_000.15, "e")]),  # parser's odd type
    ("http://example.com:80/", 42, {}, [(1_700_000_000.15, 7)]),
    ("http://h/Ünïcode", "Ü", {"u": "\u2028 \ud800 😀"}, []),
]


@pytest.mark.parametrize(("url", "name", "tags", "annotations"), HOPS)
@pytest.mark.parametrize("service", [None, "Inventory", lambda url: url.host])
def test_direct_and_record_paths_post_the_same_bytes(
    url: str, name: Any, tags: dict[Any, Any], annotations: list[tuple[float, Any]], service: Any
) -> None:
    posted = []
    for direct in (True, False):
        transport = _Capturing(direct)
        tracer = Tracer(
            transport, Sampler(sample_rate=1.0), create_endpoint("Checkout", ipv4="10.0.0.7")
        )
        handlers = ClientTracing(
            tracer,
            _settings(
                service if callable(service) else (lambda u, s=service: s) if service else None
            ),
        )
        handlers._report(_hop(url, name, dict(tags), list(annotations)))
        assert transport.direct_calls == 1
        assert transport.stats().received == 1
        posted.append(transport.items)
    assert posted[0] == posted[1]
    assert len(posted[0]) == 1
