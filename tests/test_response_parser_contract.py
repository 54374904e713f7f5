"""The ``error`` tag survives whatever a user's response parser does to it.

The contract (``run_response_parser``): the exception's ``error`` tag is set before the user's
parser runs; a parser may replace it with a more detailed value, which is kept; a parser that
empties or removes it, or raises, gets it back: an exception is never lost and its tag is never
empty. Each case sends a request to a refused port through a real ``ClientSession``; the error
value itself is compared with what the default parser records for the same failure, so these
tests hold whatever wording the error tag has.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

from aiozipkin_client import ResponseView, SpanCustomizer, default_response_parser
from tests.kit.recorder import SpanRecorder
from tests.kit.servers import Backend, refused_url


async def refused_error_tag(
    make_session: Any, recorder: SpanRecorder, target: URL, **options: Any
) -> str | None:
    session = make_session(**options)
    with pytest.raises(aiohttp.ClientConnectorError):
        await session.get(target)
    tag: str | None = recorder.take_one()["tags"].get("error")
    return tag


@pytest.fixture
async def target() -> URL:
    return await refused_url()


@pytest.fixture
async def default_error(make_session: Any, recorder: SpanRecorder, target: URL) -> str:
    """The error tag the default parser records for a refused connection."""
    tag = await refused_error_tag(make_session, recorder, target)
    assert tag
    return tag


async def test_parser_that_empties_the_error_gets_it_back(
    make_session: Any, recorder: SpanRecorder, target: URL, default_error: str
) -> None:
    def empties(response: ResponseView, span: SpanCustomizer) -> None:
        default_response_parser(response, span)
        span.tag("error", "")

    tag = await refused_error_tag(make_session, recorder, target, response_parser=empties)

    assert tag == default_error


async def test_parser_that_removes_the_error_gets_it_back(
    make_session: Any, recorder: SpanRecorder, target: URL, default_error: str
) -> None:
    seen: list[str | None] = []

    def removes(response: ResponseView, span: SpanCustomizer) -> None:
        # Beyond the SpanCustomizer protocol, as a careless parser might go: the live tags.
        tags: dict[str, str] = span.tags  # type: ignore[attr-defined]
        seen.append(tags.pop("error", None))

    tag = await refused_error_tag(make_session, recorder, target, response_parser=removes)

    assert tag == default_error
    # The error was tagged before the user's parser ran: the parser could see and extend it.
    assert seen == [default_error]


async def test_parser_that_empties_the_error_and_raises_gets_it_back(
    make_session: Any,
    recorder: SpanRecorder,
    target: URL,
    default_error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def breaks(response: ResponseView, span: SpanCustomizer) -> None:
        span.tag("error", "")
        raise RuntimeError("parser bug")

    tag = await refused_error_tag(make_session, recorder, target, response_parser=breaks)

    assert tag == default_error
    assert "response_parser failed; the span keeps what it had" in caplog.text


async def test_parser_that_extends_the_error_keeps_its_value(
    make_session: Any, recorder: SpanRecorder, target: URL, default_error: str
) -> None:
    def extends(response: ResponseView, span: SpanCustomizer) -> None:
        default_response_parser(response, span)
        assert response.error is not None
        span.tag("error", f"inventory unreachable: {type(response.error).__name__}")

    tag = await refused_error_tag(make_session, recorder, target, response_parser=extends)

    assert tag == "inventory unreachable: ClientConnectorError"
    assert tag != default_error


async def test_parser_that_ignores_the_error_keeps_the_default(
    make_session: Any, recorder: SpanRecorder, target: URL, default_error: str
) -> None:
    # Replacing the default parser with one that never mentions errors loses no error.
    def silent(response: ResponseView, span: SpanCustomizer) -> None:
        span.tag("team", "checkout")

    tag = await refused_error_tag(make_session, recorder, target, response_parser=silent)

    assert tag == default_error


async def test_no_error_is_added_to_a_successful_exchange(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    def silent(response: ResponseView, span: SpanCustomizer) -> None:
        span.tag("team", "checkout")

    async with make_session(response_parser=silent).get(backend.url / "ok") as response:
        assert response.status == 200

    tags = recorder.take_one()["tags"]
    assert tags["team"] == "checkout"
    assert "error" not in tags
    backend.take_one()


async def test_error_a_parser_sets_on_a_success_is_kept(
    make_session: Any, backend: Backend, recorder: SpanRecorder
) -> None:
    # An application-level failure the parser knows about, without any exception.
    def business_error(response: ResponseView, span: SpanCustomizer) -> None:
        default_response_parser(response, span)
        span.tag("error", "out of stock")

    async with make_session(response_parser=business_error).get(backend.url / "ok") as response:
        assert response.status == 200

    assert recorder.take_one()["tags"]["error"] == "out of stock"
    backend.take_one()
