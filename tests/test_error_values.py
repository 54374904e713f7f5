"""The ``error`` tag never carries URL user info or secret query values, on CLIENT and SERVER spans.

An exception's message is untrusted text: aiohttp quotes redirect targets, request URLs and
connection details in it, and any other exception may quote anything. Every secret below is
asserted absent from the whole reported span, not just from its ``error`` tag.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import aiohttp
import aiohttp.client_exceptions
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aiozipkin.tracer import Tracer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import aiozipkin_client
from aiozipkin_client.parsers import ERROR_MESSAGE_LIMIT, error_value
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import start_app

# A URL with every kind of secret a URL can carry, and what http.url would make of it.
RAW = "https://alice:hunter2@files.example:8443/x?sig=S1GVALUE&page=2#access_token=FRAGTOKEN"
CLEAN = "https://files.example:8443/x?sig=REDACTED&page=2"
SECRETS = ("alice", "hunter2", "S1GVALUE", "FRAGTOKEN")


def assert_no_secret(*spans: dict[str, Any], secrets: tuple[str, ...] = SECRETS) -> None:
    text = json.dumps(spans)
    for secret in secrets:
        assert secret not in text, f"{secret!r} reached a span: {text}"


# -- every aiohttp client exception class -------------------------------------------------------


def request_info(url: str) -> aiohttp.RequestInfo:
    return aiohttp.RequestInfo(URL(url), "GET", CIMultiDictProxy(CIMultiDict()), URL(url))


def connection_key() -> ConnectionKey:
    # host, port, is_ssl, ssl, proxy (with credentials), proxy_auth, proxy_headers_hash
    proxy = URL("http://alice:hunter2@proxy.example:3128")
    return ConnectionKey("files.example", 8443, True, True, proxy, None, None)


def os_error() -> OSError:
    return OSError(111, f"Connect call failed {RAW}")


CONNECT_FAILED = (
    f"Cannot connect to host files.example:8443 ssl:default [Connect call failed {CLEAN}]"
)

#: The classes that carry a URL or a host in their fields or text: how aiohttp builds each, and
#: the exact error value.
URL_OR_HOST: dict[str, tuple[Callable[[Any], BaseException], str]] = {
    **{
        name: (
            lambda cls: cls(request_info(RAW), (), status=502, message="Bad Gateway"),
            "502, message='Bad Gateway'",
        )
        for name in (
            "ClientResponseError",
            "ContentTypeError",
            "WSServerHandshakeError",
            "ClientHttpProxyError",
        )
    },
    "TooManyRedirects": (lambda cls: cls(request_info(RAW), ()), ""),
    **{
        name: (lambda cls: cls(connection_key(), os_error()), CONNECT_FAILED)
        for name in (
            "ClientConnectorError",
            "ClientConnectorDNSError",
            "ClientProxyConnectionError",
            "ClientSSLError",
            "ClientConnectorSSLError",
        )
    },
    "ClientConnectorCertificateError": (
        lambda cls: cls(connection_key(), ssl.CertificateError(f"hostname mismatch {RAW}")),
        "Cannot connect to host files.example:8443 ssl:True"
        f" [SSLCertVerificationError: ('hostname mismatch {CLEAN}',)]",
    ),
    "UnixClientConnectorError": (
        lambda cls: cls("/run/app.sock", connection_key(), os_error()),
        f"Cannot connect to unix socket /run/app.sock ssl:default [Connect call failed {CLEAN}]",
    ),
    "ServerFingerprintMismatch": (
        lambda cls: cls(b"\x01", b"\x02", "files.example", 8443),
        "(b'\\x01', b'\\x02', 'files.example', 8443)",
    ),
    # aiohttp: ConnectionTimeoutError(f"Connection timeout to host {req.url}")
    "ConnectionTimeoutError": (
        lambda cls: cls(f"Connection timeout to host {RAW}"),
        f"Connection timeout to host {CLEAN}",
    ),
    # aiohttp: InvalidUrlClientError(url), InvalidURL(proxy), InvalidUrlRedirectClientError(
    # location, "Server attempted ..."), NonHttpUrlRedirectClientError(location).
    "InvalidURL": (lambda cls: cls(URL(RAW)), CLEAN),
    "InvalidUrlClientError": (lambda cls: cls(RAW), CLEAN),
    "InvalidUrlRedirectClientError": (
        lambda cls: cls(RAW, "Server attempted redirecting to a location that does not look"),
        f"{CLEAN} - Server attempted redirecting to a location that does not look",
    ),
    "NonHttpUrlClientError": (lambda cls: cls(URL(RAW)), CLEAN),
    "NonHttpUrlRedirectClientError": (lambda cls: cls(RAW), CLEAN),
    "RedirectClientError": (lambda cls: cls(RAW), CLEAN),
}

#: The others take a message; aiohttp's own messages hold no URL, but any message might.
MESSAGE_ONLY = {
    "ClientError",
    "ClientConnectionError",
    "ClientConnectionResetError",
    "ClientOSError",
    "ClientPayloadError",
    "ServerConnectionError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "SocketTimeoutError",
    "UploadAbortedError",  # aiohttp >= 3.14
    "WSMessageTypeError",  # aiohttp >= 3.11
}


def client_exception_classes() -> Iterator[type[BaseException]]:
    module = aiohttp.client_exceptions
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == module.__name__
        ):
            yield value


def test_every_aiohttp_client_exception_class_is_covered() -> None:
    # A class a new aiohttp adds must be looked at: does it carry a URL or a host?
    names = {cls.__name__ for cls in client_exception_classes()}
    assert names - URL_OR_HOST.keys() - MESSAGE_ONLY == set()
    assert URL_OR_HOST.keys() <= names


@pytest.mark.parametrize("name", sorted(URL_OR_HOST))
def test_aiohttp_exceptions_with_a_url_or_host(name: str) -> None:
    make, expected = URL_OR_HOST[name]
    exc = make(getattr(aiohttp.client_exceptions, name))

    value = error_value(exc)

    assert value == (f"{name}: {expected}" if expected else name)
    assert_no_secret({"error": value})


@pytest.mark.parametrize("name", sorted(MESSAGE_ONLY))
def test_aiohttp_exceptions_with_a_message(name: str) -> None:
    cls = getattr(aiohttp.client_exceptions, name, None)
    if cls is None:
        pytest.skip(f"aiohttp {aiohttp.__version__} has no {name}")

    assert error_value(cls(f"failed on {RAW}")) == f"{name}: failed on {CLEAN}"


def test_a_response_error_keeps_its_reason_and_never_its_url() -> None:
    exc = aiohttp.ClientResponseError(
        request_info(RAW), (), status=401, message=f"see {RAW} token=ABC"
    )

    assert error_value(exc) == f"ClientResponseError: 401, message='see {CLEAN} token=REDACTED'"


# -- any exception ---------------------------------------------------------------------------


def test_a_plain_exception_quoting_a_url_with_credentials_and_a_token() -> None:
    exc = ValueError(
        "cannot fetch https://alice:hunter2@api.example/v1/items?access_token=T0KEN&page=2#top"
    )

    value = error_value(exc)

    assert value == (
        "ValueError: cannot fetch https://api.example/v1/items?access_token=REDACTED&page=2"
    )
    assert_no_secret({"error": value}, secrets=("alice", "hunter2", "T0KEN"))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # URLs of any scheme, several in one message, in quotes and brackets
        (
            f"moved from '{RAW}' to <redis://:hunter2@cache.example:6379/0?password=S1GVALUE>",
            f"moved from '{CLEAN}' to <redis://cache.example:6379/0?password=REDACTED>",
        ),
        # a password holding "@", a scheme-relative URL
        ("//alice:hun@ter2@files.example/x", "//files.example/x"),
        # user info without a scheme: a connection string, a git remote
        (
            "cannot reach alice:hunter2@db.example:5432/orders",
            "cannot reach db.example:5432/orders",
        ),
        # a query string with no URL before it, and bare pairs
        (
            "?code=S1GVALUE&state=ok; retry with X-Amz-Signature=FRAGTOKEN",
            "?code=REDACTED&state=ok; retry with X-Amz-Signature=REDACTED",
        ),
        # a URL inside another URL's query value
        (
            "http://app.example/login?next=https://alice:hunter2@idp.example/cb?sig=S1GVALUE",
            "http://app.example/login?next=https://idp.example/cb?sig=REDACTED",
        ),
        # a percent-encoded parameter name, a value holding "="
        (
            "?access%5Ftoken=S1GVALUE&api_key=a=FRAGTOKEN",
            "?access%5Ftoken=REDACTED&api_key=REDACTED",
        ),
        # a fragment in a URL goes; a "#" elsewhere stays
        ("https://h.example/a#FRAGTOKEN, see issue #5", "https://h.example/a, see issue #5"),
        # nothing that looks like a URL or a secret: unchanged
        ("Cannot connect to host 127.0.0.1:8080 [Connect call failed ('127.0.0.1', 8080)]", None),
    ],
)
def test_url_like_text_anywhere_in_a_message(message: str, expected: str | None) -> None:
    value = error_value(RuntimeError(message))

    assert value == f"RuntimeError: {expected if expected is not None else message}"
    assert_no_secret({"error": value})


def test_sensitive_names_are_those_given() -> None:
    exc = ValueError("GET /x?ticket=S1GVALUE&token=abc")

    assert error_value(exc, {"ticket"}) == "ValueError: GET /x?ticket=REDACTED&token=REDACTED"


def test_a_long_message_is_cut_and_the_cut_never_exposes_user_info() -> None:
    # The cut falls inside the URL, before the "@" that marks its user info.
    padding = "x " * ((ERROR_MESSAGE_LIMIT - 10) // 2)
    exc = ValueError(f"{padding}https://alice:{'hunter2' * 100}@files.example/")

    value = error_value(exc)

    assert value == f"ValueError: {padding.strip()} …"
    assert len(value) <= len("ValueError: ") + ERROR_MESSAGE_LIMIT + 2
    assert_no_secret({"error": value})


def test_a_long_message_without_spaces_is_dropped_whole() -> None:
    exc = ValueError("https://alice:" + "hunter2" * 1000 + "@files.example/")

    assert error_value(exc) == "ValueError: …"


def test_control_characters_never_reach_the_tag() -> None:
    exc = ValueError("line one\nline\x00two\r\n\x1b[31mred\u202e evil\x85")

    assert error_value(exc) == "ValueError: line one line two [31mred evil"


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message today")


class ShoutingStr(str):
    def translate(self, *args: Any) -> str:
        raise RuntimeError("str subclass misbehaving")


class OddMessage(Exception):
    def __str__(self) -> str:
        return ShoutingStr("odd https://alice:hunter2@h.example/")


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no reason either")


def test_a_message_that_cannot_be_had_gives_the_class_name() -> None:
    assert error_value(BrokenMessage()) == "BrokenMessage"
    reason: Any = Unprintable()
    exc = aiohttp.ClientResponseError(request_info(RAW), (), status=500, message=reason)
    assert error_value(exc) == "ClientResponseError"


def test_a_str_subclass_message_is_read_as_plain_text() -> None:
    assert error_value(OddMessage()) == "OddMessage: odd https://h.example/"


def test_no_message_gives_the_class_name() -> None:
    assert error_value(TimeoutError()) == "TimeoutError"
    assert error_value(ValueError("  \n ")) == "ValueError"


# -- through real sessions and servers --------------------------------------------------------


def location_app(locations: dict[str, str]) -> web.Application:
    """``/{name}`` answers 302 with the raw Location ``locations[name]``."""

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": locations[request.match_info["name"]]})

    app = web.Application()
    app.router.add_get("/{name}", redirect)
    return app


@pytest.fixture
async def session(make_session: Any) -> aiohttp.ClientSession:
    s: aiohttp.ClientSession = make_session()
    return s


@pytest.mark.parametrize(
    ("location", "error"),
    [
        (
            "ftp://alice:hunter2@files.example/x?sig=S1GVALUE",
            "NonHttpUrlRedirectClientError: ftp://files.example/x?sig=REDACTED",
        ),
        (
            "http:///cb?access_token=S1GVALUE",
            "InvalidUrlRedirectClientError: http:///cb?access_token=REDACTED"
            " - Invalid redirect URL origin",
        ),
    ],
)
async def test_a_redirect_aiohttp_refuses_to_follow(
    session: aiohttp.ClientSession, recorder: SpanRecorder, location: str, error: str
) -> None:
    async with start_app(location_app({"away": location})) as url:
        with pytest.raises(aiohttp.RedirectClientError) as raised:
            await session.get(url / "away")

    # The caller's exception is aiohttp's own, untouched.
    assert location in str(raised.value)
    span = recorder.take_one()
    assert span["tags"]["http.status_code"] == "302"
    assert span["tags"]["error"] == error
    assert_no_secret(span)


async def test_a_url_without_host(session: aiohttp.ClientSession, recorder: SpanRecorder) -> None:
    with pytest.raises(aiohttp.InvalidURL):
        await session.get("http:///cb?access_token=S1GVALUE")

    span = recorder.take_one()
    assert span["tags"]["http.url"] == "http:///cb?access_token=REDACTED"
    assert span["tags"]["error"] == "InvalidUrlClientError: http:///cb?access_token=REDACTED"
    assert_no_secret(span)


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A 127.0.0.1 port whose listener never accepts and whose backlog is full.

    With a backlog of 0 the kernel queues one connection; the next SYNs are dropped, so a
    connection attempt (and any TLS handshake on it) waits until the client's timeout.
    """
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(2):  # whatever the kernel's idea of "full", make sure it is
            waiting = stack.enter_context(socket.socket())
            waiting.setblocking(False)
            waiting.connect_ex(("127.0.0.1", port))
        yield port


@pytest.fixture
def unanswered_url() -> Iterator[URL]:
    with unanswered_port() as port:
        # https: even if the connection were queued, the TLS handshake would never complete.
        yield URL.build(
            scheme="https", host="127.0.0.1", port=port, path="/x", query={"access_token": "T0KEN"}
        )


CONNECT_TIMEOUT = aiohttp.ClientTimeout(connect=0.1)


async def test_a_connect_timeout_on_the_client_span(
    session: aiohttp.ClientSession, recorder: SpanRecorder, unanswered_url: URL
) -> None:
    with pytest.raises(aiohttp.ConnectionTimeoutError) as raised:
        await session.get(unanswered_url, timeout=CONNECT_TIMEOUT)

    assert "T0KEN" in str(raised.value)  # aiohttp's text, given to the caller unchanged
    span = recorder.take_one()
    assert span["tags"]["error"] == (
        "ConnectionTimeoutError: Connection timeout to host"
        f" https://127.0.0.1:{unanswered_url.port}/x?access_token=REDACTED"
    )
    assert_no_secret(span, secrets=("T0KEN",))


@pytest.fixture
async def plain() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_connect_timeout_escaping_a_handler_on_both_spans(
    tracer: Tracer,
    recorder: SpanRecorder,
    plain: aiohttp.ClientSession,
    session: aiohttp.ClientSession,
    unanswered_url: URL,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        async with session.get(unanswered_url, timeout=CONNECT_TIMEOUT):
            return web.Response(text="unreachable")

    app = aiozipkin_client.setup(web.Application(), tracer)
    app.router.add_get("/fetch", handler)
    async with start_app(app) as url, plain.get(url / "fetch") as response:
        assert response.status == 504  # a TimeoutError, as aiohttp answers it

    client, server = sorted(recorder.take(2), key=lambda span: span["kind"])
    expected = (
        "ConnectionTimeoutError: Connection timeout to host"
        f" https://127.0.0.1:{unanswered_url.port}/x?access_token=REDACTED"
    )
    assert (client["kind"], server["kind"]) == ("CLIENT", "SERVER")
    assert client["parentId"] == server["id"]
    assert client["tags"]["error"] == expected
    assert server["tags"]["error"] == expected
    assert_no_secret(client, server, secrets=("T0KEN",))


async def test_a_plain_exception_escaping_a_handler(
    tracer: Tracer, recorder: SpanRecorder, plain: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise ValueError(f"upstream {RAW} refused")

    app = aiozipkin_client.setup(web.Application(), tracer)
    app.router.add_get("/fail", handler)
    async with start_app(app) as url, plain.get(url / "fail") as response:
        assert response.status == 500

    span = recorder.take_one()
    assert span["tags"]["error"] == f"ValueError: upstream {CLEAN} refused"
    assert_no_secret(span)


async def test_error_messages_mask_the_names_the_request_parser_masks(
    make_session: Any, recorder: SpanRecorder
) -> None:
    parser = aiozipkin_client.HttpRequestParser(
        sensitive_query_params=aiozipkin_client.DEFAULT_SENSITIVE_QUERY_PARAMS | {"Ticket"}
    )
    session: aiohttp.ClientSession = make_session(request_parser=parser)
    locations = {"away": "ftp://files.example/x?ticket=T1CKET&token=S1GVALUE&page=2"}

    async with start_app(location_app(locations)) as url:
        with pytest.raises(aiohttp.NonHttpUrlRedirectClientError):
            await session.get(url / "away")

    span = recorder.take_one()
    assert span["tags"]["error"] == (
        "NonHttpUrlRedirectClientError: ftp://files.example/x?ticket=REDACTED&token=REDACTED&page=2"
    )
    assert_no_secret(span, secrets=("T1CKET", "S1GVALUE"))
