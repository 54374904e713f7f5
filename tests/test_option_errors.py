"""Mistakes in options fail at creation with a message saying what to write, never silently.

Client (``make_trace_config``) and server (``middleware``/``setup``) options; the transport's
are in ``test_reporting_transport.py``.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import aiozipkin
import pytest
from aiohttp import web
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from aiozipkin_client import make_trace_config, middleware, setup
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend

ENDPOINT = aiozipkin.create_endpoint("app")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"exclude_urls": "^https://metadata"},
            TypeError,
            "exclude_urls takes a collection of regular expressions or functions, not a single"
            " string: write exclude_urls=['^https://metadata']",
        ),
        (
            {"exclude_urls": re.compile("metadata")},
            TypeError,
            "exclude_urls takes a collection of regular expressions or functions, not a single"
            " Pattern: put it in a list, exclude_urls=[...]",
        ),
        (
            {"exclude_urls": [42]},
            TypeError,
            "exclude_urls takes regular expressions (str or re.Pattern) or functions of the URL,"
            " not 42",
        ),
        (
            {"exclude_urls": ["metadata("]},
            ValueError,
            "exclude_urls: 'metadata(' is not a valid regular expression (missing ), unterminated"
            " subpattern at position 8)",
        ),
        ({"sampler": 0.5}, TypeError, "sampler must be a function (a callable) or None, not 0.5"),
        (
            {"request_parser": None},
            TypeError,
            "request_parser must be a function (a callable), not None",
        ),
        (
            {"response_parser": "default"},
            TypeError,
            "response_parser must be a function (a callable), not 'default'",
        ),
        (
            {"remote_service_name": 42},
            TypeError,
            "remote_service_name takes a service name or a function of the URL returning one,"
            " not 42",
        ),
        (
            {"propagate_to": "internal.example"},
            TypeError,
            "propagate_to takes a collection of host names, not a single string:"
            " write propagate_to=['internal.example']",
        ),
        (
            {"propagate_to": ["https://api.example.com/v1"]},
            ValueError,
            "propagate_to takes host names such as 'api.example.com', not URLs or host:port,"
            " and got 'https://api.example.com/v1': write 'api.example.com'",
        ),
        (
            {"propagate_to": [URL("http://Internal.Example:8080/")]},
            ValueError,
            "not URLs or host:port, and got 'http://internal.example:8080/': write"
            " 'internal.example'",
        ),
        (
            {"propagate_to": ["internal.example:8443"]},
            ValueError,
            "and got 'internal.example:8443': write 'internal.example'",
        ),
        (
            {"propagate_to": ["internal.example/api"]},
            ValueError,
            "and got 'internal.example/api': write 'internal.example'",
        ),
        ({"propagate_to": [""]}, ValueError, "propagate_to contains an empty host name"),
        ({"propagate_to": [42]}, TypeError, "propagate_to takes host names (strings), not 42"),
    ],
)
def test_client_option_errors_name_the_fix(
    tracer: Tracer, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        make_trace_config(tracer, **options)


def test_client_accepts_what_the_options_allow(tracer: Tracer) -> None:
    make_trace_config(
        tracer,
        exclude_urls=(r"^https://metadata\.", re.compile("health"), lambda url: False),
        propagate_to=["internal.example", "Example.COM.", "::1", "[2001:db8::1]", "10.0.0.7"],
        remote_service_name="inventory",
        sampler=None,
    )
    make_trace_config(tracer, propagate_to=lambda url: True, remote_service_name=str)


async def test_ip_literals_in_propagate_to_are_hosts(
    tracer: Tracer, recorder: SpanRecorder, backend: Backend
) -> None:
    # IP literals are hosts (an IPv6 one is not taken for host:port), and they match.
    config = make_trace_config(tracer, propagate_to=["[::1]", "127.0.0.1"])
    async with (
        aiohttp.ClientSession(trace_configs=[config]) as session,
        session.get(backend.url / "ok") as response,
    ):
        await response.read()
    assert "x-b3-traceid" in backend.take_one().b3()
    recorder.take_one()


async def test_unawaited_create_is_refused_and_stays_usable(
    tracer: Tracer, recorder: SpanRecorder
) -> None:
    pending = aiozipkin_client.create("http://127.0.0.1:9/api/v2/spans", ENDPOINT)
    expected = (
        "make_trace_config() needs a Tracer, not the awaitable _ContextManager that create()"
        " returns: write `tracer = await create(...)` or `async with create(...) as tracer:`"
        " and pass the tracer to make_trace_config()"
    )

    with pytest.raises(TypeError, match=re.escape(expected)):
        make_trace_config(pending)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("middleware() needs a Tracer, not the")):
        middleware(pending)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("setup() needs a Tracer, not the")):
        setup(web.Application(), pending)  # type: ignore[arg-type]

    # Nothing was consumed: awaiting it still gives the tracer (and no coroutine is left).
    async with pending as created:
        assert isinstance(created, Tracer)
        make_trace_config(created)


def test_not_a_tracer_is_refused(tracer: Tracer) -> None:
    with pytest.raises(TypeError, match=re.escape("make_trace_config() needs an aiozipkin Tracer")):
        make_trace_config(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("middleware() needs an aiozipkin Tracer")):
        middleware(tracer._transport)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"skip_routes": "/health"},
            "skip_routes takes a collection of routes, resources or route patterns, not a single"
            " string: write skip_routes=['/health']",
        ),
        ({"sampler": True}, "sampler must be a function (a callable) or None, not True"),
        ({"request_parser": None}, "request_parser must be a function (a callable), not None"),
        ({"response_parser": 1}, "response_parser must be a function (a callable), not 1"),
    ],
)
def test_server_option_errors_name_the_fix(
    tracer: Tracer, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        middleware(tracer, **options)
    app = web.Application()
    with pytest.raises(TypeError, match=re.escape(message)):
        setup(app, tracer, **options)
    # Nothing half-done: the application can still be set up correctly.
    assert aiozipkin_client.TRACER_KEY not in app
    assert list(app.middlewares) == []
    setup(app, tracer)
