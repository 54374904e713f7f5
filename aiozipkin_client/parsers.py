"""Turning a request and its response into a span name and tags.

A parser is any callable taking a read-only view and a :class:`SpanCustomizer`. The customizer
can set the name, add tags and annotations, and nothing else: parsers never see the live span, so
a parser cannot finish it, report it twice or break the request. The defaults are
:func:`default_request_parser` and :func:`default_response_parser`; to extend them, call them
from your own function::

    def request_parser(request: RequestView, span: SpanCustomizer) -> None:
        default_request_parser(request, span)
        span.tag("tenant", request.headers.get("X-Tenant", "none"))

An exception raised by a parser is logged and the request goes on untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from aiohttp import ClientResponseError
from multidict import CIMultiDictProxy, MultiDict
from yarl import URL

__all__ = (
    "DEFAULT_SENSITIVE_QUERY_PARAMS",
    "HTTP_METHOD",
    "HTTP_PATH",
    "HTTP_STATUS_CODE",
    "HTTP_URL",
    "HttpRequestParser",
    "RequestParser",
    "RequestView",
    "ResponseParser",
    "ResponseView",
    "SpanCustomizer",
    "default_request_parser",
    "default_response_parser",
    "error_value",
    "redact_url",
)

log = logging.getLogger("aiozipkin_client")

_View = TypeVar("_View")

HTTP_METHOD: Final = "http.method"
HTTP_PATH: Final = "http.path"
HTTP_URL: Final = "http.url"
HTTP_STATUS_CODE: Final = "http.status_code"
ERROR: Final = "error"

#: Query parameter names whose values never reach a span (compared case-insensitively).
#: Besides these exact names, any name with a word such as ``token``, ``secret``, ``password``,
#: ``signature`` or ``key`` (words split on ``-``, ``_`` and ``.``) is masked too.
DEFAULT_SENSITIVE_QUERY_PARAMS: Final = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "client_secret",
        "code",
        "credential",
        "id_token",
        "key",
        "passwd",
        "password",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "sessionid",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    }
)
_SENSITIVE_WORDS: Final = frozenset(
    {"token", "secret", "password", "passwd", "signature", "sig", "key", "credential", "auth"}
)
_WORD_SPLIT: Final = re.compile(r"[-_.]")
REDACTED: Final = "REDACTED"


class SpanCustomizer(Protocol):
    """What a parser may do to a span: name it, tag it, annotate it."""

    def name(self, name: str) -> None:
        """Set the span name (Zipkin stores names lowercase; keep it low-cardinality)."""

    def tag(self, key: str, value: str) -> None:
        """Set a tag; a later call with the same key replaces the value."""

    def annotate(self, value: str) -> None:
        """Add a timestamped event, stamped now."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """A read-only view of one HTTP exchange's request, as parsers and samplers see it.

    ``url`` is the URL as the caller gave it (it may carry credentials: use :func:`redact_url`
    before recording it). ``headers`` are the request headers known when the hop starts.
    """

    method: str
    url: URL
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class ResponseView:
    """A read-only view of how one HTTP exchange ended.

    Exactly one of ``status`` (a response arrived) and ``error`` (it did not) is usually set.
    """

    request: RequestView
    status: int | None
    headers: CIMultiDictProxy[str] | None
    error: BaseException | None


RequestParser = Callable[[RequestView, SpanCustomizer], None]
ResponseParser = Callable[[ResponseView, SpanCustomizer], None]


class HttpRequestParser:
    """The default request parser, with the set of query parameters it masks as an option.

    It names the span after the lowercase method and tags ``http.method``, ``http.path`` (no
    query string) and ``http.url`` (see :func:`redact_url`). The name never contains the path,
    so it stays low-cardinality in Zipkin's name index. To mask more parameters::

        HttpRequestParser(sensitive_query_params=DEFAULT_SENSITIVE_QUERY_PARAMS | {"ticket"})
    """

    __slots__ = ("_sensitive",)

    def __init__(
        self, sensitive_query_params: Collection[str] = DEFAULT_SENSITIVE_QUERY_PARAMS
    ) -> None:
        self._sensitive = frozenset(name.lower() for name in sensitive_query_params)

    def __call__(self, request: RequestView, span: SpanCustomizer) -> None:
        self.parse(request.method, request.url, span)

    def parse(self, method: str, url: URL, span: SpanCustomizer) -> None:
        """What calling the parser does, from the method and URL alone (no view needed)."""
        span.name(method.lower())
        span.tag(HTTP_METHOD, method.upper())
        span.tag(HTTP_PATH, url.path or "/")
        span.tag(HTTP_URL, str(redact_url(url, self._sensitive)))


#: The request parser :func:`~aiozipkin_client.make_trace_config` uses unless told otherwise.
default_request_parser: Final[RequestParser] = HttpRequestParser()


def default_response_parser(response: ResponseView, span: SpanCustomizer) -> None:
    """Tag the status code, and ``error`` with the status for responses of 400 and above."""
    tag_status(response.status, response.error, span)


def tag_status(status: int | None, error: BaseException | None, span: SpanCustomizer) -> None:
    """:func:`default_response_parser`, from the two values it reads."""
    if status is None:
        return
    span.tag(HTTP_STATUS_CODE, str(status))
    if status >= 400 and error is None:
        # With an exception (raise_for_status), its description is the more useful error.
        span.tag(ERROR, str(status))


def run_response_parser(
    parser: Callable[[_View, SpanCustomizer], None],
    view: _View,
    span: SpanCustomizer,
    tags: Mapping[str, str],
    error: BaseException | None,
    who: str,
) -> None:
    """Tag ``error``, run a user's response parser, and keep the error whatever it did.

    A parser may add detail to the error; one that raises is logged (as ``who``) and the span
    keeps what it had; one that removes or empties the error gets it back: an exception is never
    lost and its tag is never empty. ``tags`` is the span's live tag map.
    """
    if error is not None:
        span.tag(ERROR, error_value(error))
    try:
        parser(view, span)
    except Exception:
        log.exception("%s failed; the span keeps what it had", who)
    if error is not None and not tags.get(ERROR):
        span.tag(ERROR, error_value(error))


def error_value(exc: BaseException) -> str:
    """The ``error`` tag for an exception: never empty, never a URL.

    ``"ClientConnectorError: Cannot connect to host ..."``; the class name alone when the
    exception has no message (``CancelledError``, most timeouts). aiohttp's response errors put
    the full URL (query string included) in their text; here they give status and reason only.
    """
    name = type(exc).__name__
    if isinstance(exc, ClientResponseError):
        message = f"{exc.status}, message={exc.message!r}"
    else:
        message = str(exc)
    return f"{name}: {message}" if message else name


def is_sensitive_param(name: str, sensitive: Collection[str]) -> bool:
    """True when a query parameter's value must not be recorded."""
    lowered = name.lower()
    if lowered in sensitive:
        return True
    return any(word in _SENSITIVE_WORDS for word in _WORD_SPLIT.split(lowered))


def redact_url(url: URL, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_QUERY_PARAMS) -> URL:
    """``url`` without user info and fragment, and with sensitive query values masked.

    >>> str(redact_url(URL("https://u:p@api.example/v1?sig=abc&page=2#top")))
    'https://api.example/v1?sig=REDACTED&page=2'
    """
    if (
        url.raw_user is None
        and url.raw_password is None
        and not url.raw_fragment
        and not url.raw_query_string
    ):
        return url  # nothing to remove or mask: the common case, decided on raw parts
    if url.user is not None or url.password is not None:
        url = url.with_user(None)
    if url.fragment:
        url = url.with_fragment(None)
    query = url.query
    if query and any(is_sensitive_param(name, sensitive_params) for name in query):
        masked: MultiDict[str] = MultiDict()
        for name, value in query.items():
            masked.add(name, REDACTED if is_sensitive_param(name, sensitive_params) else value)
        url = url.with_query(masked)
    return url
