"""Validation of Zipkin v2 spans against the API's schema, plus the rules it states in prose.

The schema is ``zipkin2-spans.schema.json`` beside this module: a JSON-schema (draft 4, as the
API's swagger 2.0 definitions are) written for this kit from the facts of the Zipkin v2 API
definition, ``zipkin2-api.yaml``: its field names, types, lengths, patterns, enum and required
fields. It is checked with ``jsonschema``'s Draft 4 validator and a format checker (``ipv4``,
``ipv6``). ``tests/test_reporting_kit.py`` shows it accepts the API's example span and refuses
what the API's keywords refuse. The suite needs nothing outside the repository.

The keywords alone are lenient where the API's text is not: its ``pattern`` keywords are not
anchored (``"[a-f0-9]{16}"`` matches inside any longer string) and cannot say "not all zeros",
"lower-case" or "not zero". :func:`validate_spans` adds those rules by default (``strict=True``),
each quoting the spec, because a strict collector enforces them too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft4Validator
from jsonschema.exceptions import SchemaError

__all__ = (
    "SCHEMA_PATH",
    "SchemaUnavailableError",
    "SpanValidationError",
    "load_schema",
    "strict_problems",
    "validate_spans",
)

#: The kit's own schema of a ``POST /api/v2/spans`` body (a list of spans).
SCHEMA_PATH: Final = Path(__file__).resolve().with_name("zipkin2-spans.schema.json")

_TRACE_ID: Final = re.compile(r"(?:[0-9a-f]{16}){1,2}")
_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")


class SpanValidationError(AssertionError):
    """A list of spans that a strict Zipkin collector would refuse; the message lists why."""


class SchemaUnavailableError(RuntimeError):
    """The kit's schema file is missing or broken: no span can be checked, so nothing runs."""


def load_schema() -> Draft4Validator:
    """The validator of :data:`SCHEMA_PATH`, loaded once; raises :class:`SchemaUnavailableError`.

    The collector calls it when it is built, so a missing or broken schema fails the first test
    that needs it at once, with the path in the message, rather than as a collector answering
    every post with an error that a transport retries until it times out.
    """
    return _validator(SCHEMA_PATH)


@cache
def _validator(path: Path) -> Draft4Validator:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaUnavailableError(
            f"the test kit's Zipkin v2 schema is missing: {path} (it is part of the repository;"
            " restore it with `git checkout -- tests/kit`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SchemaUnavailableError(f"cannot read the Zipkin v2 schema {path}: {exc}") from exc
    try:
        Draft4Validator.check_schema(schema)
    except SchemaError as exc:
        raise SchemaUnavailableError(f"{path} is not a valid draft 4 JSON-schema: {exc}") from exc
    return Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def validate_spans(spans: object, *, strict: bool = True) -> None:
    """Raise :class:`SpanValidationError` unless ``spans`` is a valid ``ListOfSpans``.

    ``spans`` is the decoded JSON body (a list of span dicts). With ``strict`` (the default) the
    rules the spec states only in prose are enforced as well: see :func:`strict_problems`.

    >>> validate_spans([{"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2"}])
    """
    problems = [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<body>'}: {error.message}"
        for error in load_schema().iter_errors(spans)
    ]
    if strict and isinstance(spans, list):
        problems.extend(strict_problems(spans))
    if problems:
        raise SpanValidationError("invalid Zipkin v2 spans:\n  " + "\n  ".join(problems))


def strict_problems(spans: Sequence[Any]) -> list[str]:
    """What a strict collector refuses in ``spans`` beyond the schema's keywords."""
    problems: list[str] = []
    for index, span in enumerate(spans):
        if isinstance(span, Mapping):
            problems.extend(f"{index}/{problem}" for problem in _span_problems(span))
    return problems


def _span_problems(span: Mapping[str, Any]) -> Iterable[str]:
    # "Encoded as 16 or 32 lowercase hex characters"; an all-zero id means "no id" in B3.
    for field, pattern in (("traceId", _TRACE_ID), ("id", _SPAN_ID), ("parentId", _SPAN_ID)):
        value = span.get(field)
        if isinstance(value, str) and not (pattern.fullmatch(value) and value.strip("0")):
            yield f"{field}: {value!r} is not lower-hex of the right length, or is all zeros"
    name = span.get("name")
    # "The logical operation this span represents in lowercase ... Leave absent if unknown."
    if isinstance(name, str) and (name != name.lower() or not name.strip()):
        yield f"name: {name!r} is not a non-empty lowercase name"
    if name == "unknown":
        yield "name: 'unknown' is aiozipkin's placeholder; leave the name absent instead"
    for field in ("localEndpoint", "remoteEndpoint"):
        endpoint = span.get(field)
        if isinstance(endpoint, Mapping):
            yield from (f"{field}/{problem}" for problem in _endpoint_problems(endpoint))
    # Absent rather than empty, and flags only when true: what Zipkin itself writes.
    if span.get("annotations") == []:
        yield "annotations: empty list; omit the field"
    if span.get("tags") == {}:
        yield "tags: empty map; omit the field"
    for flag in ("debug", "shared"):
        if span.get(flag) is False:
            yield f"{flag}: false; omit the field"
    annotations = span.get("annotations")
    if isinstance(annotations, list):
        for position, annotation in enumerate(annotations):
            if isinstance(annotation, Mapping) and annotation.get("value") == "":
                yield f"annotations/{position}/value: empty"


def _endpoint_problems(endpoint: Mapping[str, Any]) -> Iterable[str]:
    if not endpoint:
        yield "empty endpoint; omit the field"
    service_name = endpoint.get("serviceName")
    # "Lower-case label of this node in the service graph ... Leave absent if unknown."
    if isinstance(service_name, str) and (service_name != service_name.lower() or not service_name):
        yield f"serviceName: {service_name!r} is not a non-empty lowercase label"
    # "Absent if unknown. Please don't set to zero."
    if endpoint.get("port") == 0:
        yield "port: 0; omit the field"
