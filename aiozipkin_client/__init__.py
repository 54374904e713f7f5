"""Zipkin tracing for the aiohttp client.

>>> import aiohttp, aiozipkin_client
>>> async def main(tracer):                                                 # doctest: +SKIP
...     config = aiozipkin_client.make_trace_config(tracer)
...     async with aiohttp.ClientSession(trace_configs=[config]) as session:
...         await session.get("http://inventory.internal/items")
"""

from ._context import use_span
from .client import make_trace_config
from .parsers import (
    DEFAULT_SENSITIVE_QUERY_PARAMS,
    HttpRequestParser,
    RequestParser,
    RequestView,
    ResponseParser,
    ResponseView,
    SpanCustomizer,
    default_request_parser,
    default_response_parser,
    redact_url,
)
from .propagation import B3Format
from .reporting import InvalidSpanError, ReportingStats, ZipkinTransport, create, encode_span
from .sampling import RequestSampler
from .server import (
    HTTP_ROUTE,
    SPAN_KEY,
    TRACER_KEY,
    ServerRequestParser,
    ServerResponseParser,
    ServerResponseView,
    ServerSampler,
    ServerSpan,
    default_server_request_parser,
    default_server_response_parser,
    middleware,
    setup,
)

__all__ = (
    "DEFAULT_SENSITIVE_QUERY_PARAMS",
    "HTTP_ROUTE",
    "SPAN_KEY",
    "TRACER_KEY",
    "B3Format",
    "HttpRequestParser",
    "InvalidSpanError",
    "ReportingStats",
    "RequestParser",
    "RequestSampler",
    "RequestView",
    "ResponseParser",
    "ResponseView",
    "ServerRequestParser",
    "ServerResponseParser",
    "ServerResponseView",
    "ServerSampler",
    "ServerSpan",
    "SpanCustomizer",
    "ZipkinTransport",
    "create",
    "default_request_parser",
    "default_response_parser",
    "default_server_request_parser",
    "default_server_response_parser",
    "encode_span",
    "make_trace_config",
    "middleware",
    "redact_url",
    "setup",
    "use_span",
)
