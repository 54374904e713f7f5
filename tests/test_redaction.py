"""The ``http.url`` tag keeps no secret: one URL per redaction rule, each rule on its own.

README promises: ``http.url`` is "the URL without user info or fragment, values of secret query
parameters replaced by ``REDACTED``"; ``DEFAULT_SENSITIVE_QUERY_PARAMS`` names the parameters
masked by exact name, and any name with a word such as ``token`` or ``key`` (words split on
``-``, ``_`` and ``.``) is masked too; ``HttpRequestParser(sensitive_query_params=...)`` masks
more. Each rule family is checked once through a real ``ClientSession`` (what reaches the span),
and the exhaustive lists by direct, parametrized unit tests of :func:`is_sensitive_param` and
:func:`redact_url`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiozipkin.tracer import Tracer
from yarl import URL

import aiozipkin_client
from aiozipkin_client import DEFAULT_SENSITIVE_QUERY_PARAMS, HttpRequestParser, redact_url
from aiozipkin_client.parsers import is_sensitive_param
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend

# Matched by their exact name only: none of their words is a word of the word rule.
EXACT_ONLY = ["apikey", "authorization", "code", "pwd", "session", "sessionid"]
# Every other exact name, as documented; the word rule would mask most of them as well.
EXACT_ALSO_BY_WORD = [
    "access_token",
    "api_key",
    "auth",
    "client_secret",
    "credential",
    "id_token",
    "key",
    "passwd",
    "password",
    "refresh_token",
    "secret",
    "sig",
    "signature",
    "token",
    "x-amz-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-credential",
    "x-goog-signature",
]
WORDS = ["token", "secret", "password", "passwd", "signature", "sig", "key", "credential", "auth"]


async def url_tag(
    session: aiohttp.ClientSession, url: URL | str, backend: Backend, recorder: SpanRecorder
) -> str:
    async with session.get(url) as response:
        assert response.status == 200
        await response.read()
    backend.take_one()
    tag: str = recorder.take_one()["tags"]["http.url"]
    return tag


# -- through a real ClientSession: one request per rule family -----------------------------


async def test_secret_in_an_otherwise_plain_url_is_masked(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    # No user info and no fragment: only the query needs work (the common case of API tokens).
    tag = await url_tag(make_session(), f"{backend.url}/ok?access_token=abc", backend, recorder)
    assert tag == f"{backend.url}/ok?access_token=REDACTED"


async def test_user_without_password_is_dropped(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    url = backend.url.with_user("alice").with_path("/ok")
    assert url.password is None

    tag = await url_tag(make_session(), url, backend, recorder)

    assert tag == f"{backend.url}/ok"


async def test_fragment_is_dropped(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    # OAuth's implicit flow puts the token in the fragment.
    tag = await url_tag(make_session(), f"{backend.url}/ok#access_token=abc", backend, recorder)
    assert tag == f"{backend.url}/ok"


async def test_name_on_the_exact_list_only_is_masked(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    # An OAuth authorization code: "code" is no secret word, only its exact name marks it.
    url = f"{backend.url}/ok?code=xyz&state=1"
    tag = await url_tag(make_session(), url, backend, recorder)
    assert tag == f"{backend.url}/ok?code=REDACTED&state=1"


async def test_name_caught_by_the_word_rule_only_is_masked(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    url = f"{backend.url}/ok?user.api-key=k1&page=2"
    tag = await url_tag(make_session(), url, backend, recorder)
    assert tag == f"{backend.url}/ok?user.api-key=REDACTED&page=2"


async def test_custom_names_are_masked_whatever_their_case(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    parser = HttpRequestParser(sensitive_query_params=DEFAULT_SENSITIVE_QUERY_PARAMS | {"Ticket"})
    session = make_session(request_parser=parser)
    url = f"{backend.url}/ok?ticket=t1&TICKET=t2&page=2"

    tag = await url_tag(session, url, backend, recorder)

    assert tag == f"{backend.url}/ok?ticket=REDACTED&TICKET=REDACTED&page=2"


async def test_url_without_secrets_is_recorded_as_aiohttp_reports_it(
    tracer: Tracer, backend: Backend, recorder: SpanRecorder
) -> None:
    """Nothing to mask: the query is not rebuilt (which would turn "flag" into "flag=").

    The URL compared with is the one aiohttp hands to every trace config, seen by an observer
    of our own: aiohttp 3.10 with yarl 1.12 itself reports ``flag=`` there (its update_query
    rebuilds every query), later versions the URL as given.
    """
    reported: list[URL] = []

    async def observe(
        session: aiohttp.ClientSession, ctx: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        reported.append(params.url)

    observer = aiohttp.TraceConfig()
    observer.on_request_start.append(observe)
    url = f"{backend.url}/ok?q=a+b&flag&page=2"
    configs = [observer, aiozipkin_client.make_trace_config(tracer)]
    async with (
        aiohttp.ClientSession(trace_configs=configs) as session,
        session.get(url) as response,
    ):
        await response.read()
    backend.take_one()

    tag = recorder.take_one()["tags"]["http.url"]
    (seen,) = reported
    assert tag == str(seen)
    assert seen.raw_query_string.startswith("q=a+b&flag")


# -- the exact-name list, each entry on its own ----------------------------------------


@pytest.mark.parametrize("name", EXACT_ONLY)
def test_exact_only_names_are_masked(name: str) -> None:
    # No word of the word rule in these: removing the name from the list would unmask it.
    assert is_sensitive_param(name, DEFAULT_SENSITIVE_QUERY_PARAMS)
    assert not is_sensitive_param(name, ())


@pytest.mark.parametrize("name", EXACT_ONLY + EXACT_ALSO_BY_WORD)
def test_every_documented_name_is_on_the_public_list(name: str) -> None:
    # Users extend the public constant (DEFAULT_SENSITIVE_QUERY_PARAMS | {...}): its content
    # is part of the promise even where the word rule would also catch the name.
    assert name in DEFAULT_SENSITIVE_QUERY_PARAMS


@pytest.mark.parametrize("name", EXACT_ONLY + EXACT_ALSO_BY_WORD)
def test_exact_names_are_compared_case_insensitively(name: str) -> None:
    assert is_sensitive_param(name.upper(), DEFAULT_SENSITIVE_QUERY_PARAMS)
    assert is_sensitive_param(name.title(), DEFAULT_SENSITIVE_QUERY_PARAMS)


def test_the_public_list_is_lowercase() -> None:
    # Matching lowercases the parameter name, so an entry with a capital would never match.
    assert all(name == name.lower() for name in DEFAULT_SENSITIVE_QUERY_PARAMS)


# -- the word rule, each word on its own ------------------------------------------------


@pytest.mark.parametrize("word", WORDS)
@pytest.mark.parametrize("template", ["my-{}", "my_{}", "my.{}", "{}.value", "a-{}_b.c"])
def test_each_word_masks_names_made_with_it(word: str, template: str) -> None:
    name = template.format(word)
    assert name not in DEFAULT_SENSITIVE_QUERY_PARAMS
    # With no exact names at all, only the word rule can mask it.
    assert is_sensitive_param(name, ())
    assert is_sensitive_param(name.upper(), ())


@pytest.mark.parametrize(
    "name", ["keyboard", "monkey", "tokens", "author", "sigma", "page", "q", "user.name", ""]
)
def test_words_are_whole_words_not_substrings(name: str) -> None:
    assert not is_sensitive_param(name, DEFAULT_SENSITIVE_QUERY_PARAMS)


# -- redact_url: one URL per rule --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://h/x?access_token=abc", "http://h/x?access_token=REDACTED", id="query"),
        pytest.param("http://alice@h/x", "http://h/x", id="user-without-password"),
        pytest.param("http://alice:s3cret@h/x", "http://h/x", id="user-and-password"),
        pytest.param("http://:s3cret@h/x", "http://h/x", id="password-without-user"),
        pytest.param("http://h/x#access_token=abc", "http://h/x", id="fragment"),
        pytest.param("http://h/x#", "http://h/x", id="empty-fragment"),
        pytest.param(
            "http://h/x?token=a&page=1&token=b",
            "http://h/x?token=REDACTED&page=1&token=REDACTED",
            id="repeated-name",
        ),
        pytest.param("http://h/x?sig=", "http://h/x?sig=REDACTED", id="empty-value"),
        # One level down: a query value that is itself a URL or a query string.
        pytest.param(
            "http://h/x?next=https://alice:s3cret@h2/cb",
            "http://h/x?next=https://h2/cb",
            id="nested-user-info",
        ),
        pytest.param(
            "http://h/x?next=h2/cb?token%3Dt%26page%3D2",
            "http://h/x?next=h2/cb?token%3DREDACTED%26page%3D2",
            id="nested-secret-param",
        ),
        pytest.param(
            "http://h/x?next=https://h2/cb%23access_token%3Dt",
            "http://h/x?next=https://h2/cb",
            id="nested-fragment",
        ),
        pytest.param(
            "http://h/x?dsn=bob:pw@db:5432/app", "http://h/x?dsn=db:5432/app", id="nested-bare-user"
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert str(redact_url(URL(url))) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h/x",
        "http://h/x?q=a+b&flag&page=2",
        "http://h/x?a=%2F&b=%26",
        "http://h:8080/x;p?q=1",
        # "@" and "=" in a value that hides nothing: an address, an expression, a nested query
        # without secrets.
        "http://h/x?to=alice@example.com",
        "http://h/x?filter=a%3Db",
        "http://h/x?next=/cb?page%3D2",
    ],
)
def test_urls_without_secrets_are_kept_exactly(url: str) -> None:
    assert str(redact_url(URL(url))) == str(URL(url))


def test_redact_url_uses_the_names_it_is_given() -> None:
    url = URL("http://h/x?ticket=t&code=c")
    assert str(redact_url(url, {"ticket"})) == "http://h/x?ticket=REDACTED&code=c"
    # The default list when none is given.
    assert str(redact_url(url)) == "http://h/x?ticket=t&code=REDACTED"
