"""A client span reported to ZipkinTransport directly is the same span as through a Record.

The client skips building an aiozipkin Record when the tracer reports through our
ZipkinTransport; every other transport gets the Record, which our transport would check by
encode_span's rules. Whatever a parser gave the span customizer, both paths must end in the
same span: the customizer's checks at entry are exactly what encode_span would have done later.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiozipkin.helpers import TraceContext, create_endpoint
from aiozipkin.record import Record
from aiozipkin.sampler import Sampler
from aiozipkin.tracer import Tracer
from aiozipkin.transport import TransportABC
from multidict import CIMultiDict
from yarl import URL

from aiozipkin_client import B3Format, default_request_parser, default_response_parser
from aiozipkin_client._state import Hop
from aiozipkin_client.client import ClientSettings, ClientTracing
from aiozipkin_client.reporting import ZipkinTransport, encode_span
from aiozipkin_client.reporting._model import Span, encode_batch
from tests.kit.assertions import scrubbed
from tests.kit.schema import validate_spans


class _Capturing(ZipkinTransport):
    """Keeps the spans that would be queued."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/api/v2/spans")
        self.spans: list[Span] = []

    def _send_span(self, span: Span) -> None:
        self.spans.append(span)


class _Records(TransportABC):
    """Any other transport: gets aiozipkin Records."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def send(self, record: Record) -> None:
        self.records.append(record)

    async def close(self) -> None:
        return None


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
    hop = Hop(context, "GET", URL(url), CIMultiDict(), 1_700_000_000.123456)
    # As a parser would: through the span customizer, whatever types it passes.
    hop.name(name)
    for key, value in tags.items():
        hop.tag(key, value)
    for timestamp, value in annotations:
        hop.annotate(value, timestamp)
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
def test_direct_and_record_paths_post_the_same_span(
    url: str, name: Any, tags: dict[Any, Any], annotations: list[tuple[float, Any]], service: Any
) -> None:
    posted: list[dict[str, Any]] = []
    for transport in (_Capturing(), _Records()):
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
        if isinstance(transport, _Capturing):
            (span,) = transport.spans
            posted.append(json.loads(encode_batch([span]).decode())[0])
        else:
            (record,) = transport.records
            posted.append(json.loads(json.dumps(encode_span(record)).encode().decode()))
    assert posted[0] == scrubbed(posted[1])
    validate_spans(posted)
