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
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar
from urllib.parse import unquote_plus

from aiohttp import ClientResponseError
from multidict import CIMultiDictProxy, MultiDict
from yarl import URL

__all__ = (
    "DEFAULT_SENSITIVE_QUERY_PARAMS",
    "ERROR_MESSAGE_LIMIT",
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

    @property
    def sensitive_query_params(self) -> frozenset[str]:
        """The parameter names (lowercase) whose values this parser masks."""
        return self._sensitive

    def __call__(self, request: RequestView, span: SpanCustomizer) -> None:
        self.parse(request.method, request.url, span)

    def parse(self, method: str, url: URL, span: SpanCustomizer) -> None:
        """What calling the parser does, from the method and URL alone (no view needed)."""
        span.name(method.lower())
        for key, value in self.tags(method, url):
            span.tag(key, value)

    def tags(self, method: str, url: URL) -> tuple[tuple[str, str], ...]:
        """The tags this parser sets, as (key, value) pairs of non-empty strings."""
        tags: dict[str, str] = {}
        self.set_tags(method, url, tags)
        return tuple(tags.items())

    def set_tags(self, method: str, url: URL, tags: dict[str, str]) -> None:
        """Write :meth:`tags` into ``tags``: the span customizer's path, without a tuple."""
        tags[HTTP_METHOD] = method.upper()
        tags[HTTP_PATH] = url.path or "/"
        tags[HTTP_URL] = str(redact_url(url, self._sensitive))


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
    errors: ErrorTagging,
    who: str,
) -> None:
    """Tag ``error``, run a user's response parser, and keep the error whatever it did.

    A parser may add detail to the error; one that raises is logged (as ``who``) and the span
    keeps what it had; one that removes or empties the error gets it back: an exception is never
    lost and its tag is never empty. An exception ``errors`` ignores is not tagged (the parser
    still sees it in its view). ``tags`` is the span's live tag map.
    """
    value = None if error is None else errors.value(error)
    if value is not None:
        span.tag(ERROR, value)
    try:
        parser(view, span)
    except Exception:
        log.exception("%s failed; the span keeps what it had", who)
    if value is not None and not tags.get(ERROR):
        span.tag(ERROR, value)


@dataclass(frozen=True, slots=True)
class ErrorTagging:
    """Which exceptions get an ``error`` tag, and which names it masks; fixed at creation.

    ``ignored``: the tracer's ``ignored_exceptions``, never tagged (as on aiozipkin's own
    spans). ``sensitive_params``: the query parameter names whose values are masked in the
    message (see :func:`error_value`).
    """

    ignored: tuple[type[BaseException], ...] = ()
    sensitive_params: frozenset[str] = DEFAULT_SENSITIVE_QUERY_PARAMS

    @classmethod
    def create(cls, ignored_exceptions: object, request_parser: object = None) -> ErrorTagging:
        """From a tracer's ``ignored_exceptions`` and, if any, the client's request parser.

        aiozipkin takes a list of exception classes, or None for none; anything else raises
        :class:`TypeError` here, when tracing is set up, rather than at a request that fails.
        An :class:`HttpRequestParser` lends its parameter names, so that what ``http.url``
        masks is masked in error messages too.
        """
        ignored: tuple[type[BaseException], ...] = ()
        if ignored_exceptions is not None:
            if isinstance(ignored_exceptions, str | bytes | type) or not isinstance(
                ignored_exceptions, Iterable
            ):
                raise TypeError(
                    "ignored_exceptions must be a list of exception classes,"
                    f" not {ignored_exceptions!r}"
                )
            ignored = tuple(ignored_exceptions)
            for item in ignored:
                if not (isinstance(item, type) and issubclass(item, BaseException)):
                    raise TypeError(f"ignored_exceptions must hold exception classes, not {item!r}")
        if isinstance(request_parser, HttpRequestParser):
            return cls(ignored, request_parser.sensitive_query_params)
        return cls(ignored)

    def value(self, exc: BaseException) -> str | None:
        """The ``error`` tag for ``exc``; None when it is to be ignored."""
        if isinstance(exc, self.ignored):
            return None
        return error_value(exc, self.sensitive_params)


def error_value(
    exc: BaseException, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_QUERY_PARAMS
) -> str:
    """The ``error`` tag for an exception: ``"ClassName: message"``, never empty.

    The message is untrusted text (any exception may quote a URL, a Location header or a
    connection string), so it goes through the same rules as ``http.url`` wherever it looks like
    a URL or a query: user info and fragments dropped, values of sensitive parameters masked
    (``sensitive_params``: lowercase names, as for :func:`redact_url`); control characters become
    spaces and it is cut at ``ERROR_MESSAGE_LIMIT`` characters. aiohttp's response errors give status and reason only
    (their text is mostly the URL). The class name alone when there is no message
    (``CancelledError``, most timeouts) or when the message cannot be had. It never raises.

    >>> error_value(ValueError("bad https://u:pw@h.example/cb?code=123&page=2#top"))
    'ValueError: bad https://h.example/cb?code=REDACTED&page=2'
    """
    name = type(exc).__name__
    try:
        if isinstance(exc, ClientResponseError):
            # Its text is mostly the URL: status and reason say what went wrong, if known
            # (TooManyRedirects has neither, and its class says it all).
            has_detail = exc.status or exc.message
            message = f"{exc.status}, message={exc.message!r}" if has_detail else ""
        else:
            # An exact str: a str subclass returned by __str__ may override what we call.
            message = str.__str__(str(exc))
        message = _redact_text(message, sensitive_params)
    except Exception:
        # __str__ or __repr__ of the exception (or of what it holds) failed: the class is
        # still worth recording, and tracing must not raise.
        return name
    return f"{name}: {message}" if message else name


#: The most characters of an exception's message that reach the ``error`` tag.
ERROR_MESSAGE_LIMIT: Final = 1000

# Characters that must not reach a tag as they are: C0/C1 controls and line separators become
# spaces (runs of spaces then become one; a space also ends a URL-like token); bidirectional
# overrides, which can make a tag read differently from what it holds, are removed.
_UNPRINTABLE: Final = {
    **dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029], " "),
    **dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], None),
}
# What ends a URL-like token in free text: whitespace, quotes and angle brackets.
_STOP: Final = r"\s\"'<>`"
# "//" then user info: everything up to the last "@" before the authority ends (RFC 3986: at
# "/", "?", "#"). Possessive, so the scan is linear on any input.
_AUTHORITY_USER_INFO: Final = re.compile(rf"//(?:[^/?#@{_STOP}]*+@)++")
# "user:password@host" without a scheme (a connection string, a git remote).
_BARE_USER_INFO: Final = re.compile(rf"(?<![\w.~%!$*+:-])[\w.~%!$*+-]++:(?:[^/?#@{_STOP}]*+@)++")
# What, at the end of a token, closes the sentence around it rather than the token's value.
_CLOSING: Final = ")]},.;:"
# A token with a "#": the part before it, and the rest (a fragment when the token is a URL).
_HASHED_TOKEN: Final = re.compile(rf"(?<![^{_STOP}])([^#{_STOP}]*+)#[^{_STOP}]*+")
# "name=" anywhere (in a query string, with or without "?", or a bare pair in a message), and
# the value after it. A value is never skipped unread: it may hold a URL with its own query.
_PARAM_NAME: Final = re.compile(r"(?<![\w.%~+-])([\w.%~+-]++)=")
_PARAM_VALUE: Final = re.compile(rf"[^&#{_STOP}]*+")


def _drop_fragment(token: re.Match[str]) -> str:
    before = token[1]
    if "//" not in before:
        return token[0]
    # Punctuation closing the token belongs to the sentence, not to the fragment.
    fragment = token[0][len(before) :]
    return before + fragment[len(fragment.rstrip(_CLOSING)) :]


def _mask_params(text: str, sensitive: Collection[str]) -> str:
    pieces: list[str] = []
    done = 0
    for name in _PARAM_NAME.finditer(text):
        if name.start() < done:
            continue  # inside a value already masked
        if is_sensitive_param(unquote_plus(name[1]), sensitive):
            value = _PARAM_VALUE.match(text, name.end())
            pieces += (text[done : name.end()], REDACTED)
            done = name.end() if value is None else name.end() + len(value[0].rstrip(_CLOSING))
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


def _redact_parts(text: str, sensitive: Collection[str]) -> str:
    """The URL-like parts of ``text`` redacted: user info, fragments, secret parameter values.

    The one sequence of rules for error text and for query values one level down.
    """
    text = _AUTHORITY_USER_INFO.sub("//", text)
    text = _BARE_USER_INFO.sub("", text)
    text = _HASHED_TOKEN.sub(_drop_fragment, text)
    return _mask_params(text, sensitive)


def _redact_text(text: str, sensitive: Collection[str]) -> str:
    """Free text with every URL-like part redacted by the rules of :func:`redact_url`."""
    cut = len(text) > ERROR_MESSAGE_LIMIT
    words = text[:ERROR_MESSAGE_LIMIT].translate(_UNPRINTABLE).split()
    if cut:
        # The cut may split a URL whose user info ends further on: its "@" would be lost and
        # the user info kept. The last, possibly partial, word goes whole.
        del words[-1:]
    text = _redact_parts(" ".join(words), sensitive).strip()
    if cut:
        return f"{text} …" if text else "…"
    return text


def is_sensitive_param(name: str, sensitive: Collection[str]) -> bool:
    """True when a query parameter's value must not be recorded."""
    lowered = name.lower()
    if lowered in sensitive:
        return True
    return any(word in _SENSITIVE_WORDS for word in _WORD_SPLIT.split(lowered))


def _redact_nested(value: str, sensitive: Collection[str]) -> str:
    """A query value that may itself be a URL or a query string, redacted as one.

    ``?next=https://u:p@h/cb?token=t`` hides user info and a secret inside an innocent name.
    Only values holding an ``@`` or ``=`` can; the others are returned as they are.
    """
    if "@" not in value and "=" not in value:
        return value
    return _redact_parts(value, sensitive)


def _query_value(name: str, value: str, sensitive: Collection[str]) -> str:
    if is_sensitive_param(name, sensitive):
        return REDACTED
    return _redact_nested(value, sensitive)


def redact_url(url: URL, sensitive_params: Collection[str] = DEFAULT_SENSITIVE_QUERY_PARAMS) -> URL:
    """``url`` without user info and fragment, and with sensitive query values masked.

    A query value that is itself a URL or a query string (``?next=https://u:p@h/?token=t``) is
    redacted by the same rules, so nothing hidden one level down is recorded either.

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
    if query and any(
        _query_value(name, value, sensitive_params) != value for name, value in query.items()
    ):
        masked: MultiDict[str] = MultiDict()
        for name, value in query.items():
            masked.add(name, _query_value(name, value, sensitive_params))
        url = url.with_query(masked)
    return url
