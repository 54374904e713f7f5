"""The public API is exactly what ``__all__`` lists, each name documented and typed."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest

import aiozipkin_client
from examples import simple_client

EXPECTED = (
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


def test_all_lists_exactly_the_public_names() -> None:
    assert aiozipkin_client.__all__ == EXPECTED


def test_every_public_name_exists_and_is_documented() -> None:
    for name in aiozipkin_client.__all__:
        value = getattr(aiozipkin_client, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            doc = inspect.getdoc(value)
            assert doc, f"{name} has no docstring"
            assert doc != inspect.getdoc(object), f"{name} has no docstring of its own"


def test_public_functions_are_fully_annotated() -> None:
    for name in aiozipkin_client.__all__:
        value = getattr(aiozipkin_client, name)
        if not inspect.isfunction(value):
            continue
        signature = inspect.signature(value)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in signature.parameters.values():
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)


def test_py_typed_is_shipped() -> None:
    # The package as imported: the installed wheel under `nox -s package`, else the checkout.
    package = Path(aiozipkin_client.__file__).parent
    assert (package / "py.typed").is_file()
    checkout = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["aiozipkin_client"]


@pytest.mark.parametrize(
    "documented", [aiozipkin_client.make_trace_config, aiozipkin_client.setup, simple_client]
)
def test_docs_build_the_tracer_readme_recommends(documented: object) -> None:
    # README's Quickstart builds the tracer with aiozipkin_client.create; so do the docstrings.
    doc = documented.__doc__ or ""
    assert "aiozipkin_client.create(" in doc
    assert "aiozipkin.create(" not in doc
