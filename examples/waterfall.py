"""Draw one trace in the terminal as a waterfall, the way the Zipkin UI shows it.

Input is a list of spans in Zipkin v2 JSON form (dicts); each span is one row, indented under its
parent, with its service, kind, name, start offset from the beginning of the trace, a bar for its
duration, its annotations, and its error if it has one::

    service    kind    span                          start      duration
    demo       local   checkout order 42             +0.000ms   ████████████████████  4.812ms
    demo       client  └─ get                        +0.120ms    ██████████████████   4.630ms
    frontend   server     └─ get /checkout/{order_id} +0.530ms    █████████████████    4.101ms
    ...
    inventory  server           └─ get /items/{sku}  +2.212ms           ░█░           0.080ms  ✗ RuntimeError: ...

The server half of an RPC (``shared``: same span id as its client) is drawn under its client, and
the spans its service started under that server half: the same nesting Zipkin shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ("Row", "render", "rows")

BAR_WIDTH: Final = 32
ERROR_MARK: Final = "✗"


@dataclass(frozen=True, slots=True)
class Row:
    """One span as drawn: its place in the tree, what it is and when it ran."""

    depth: int
    service: str
    kind: str
    name: str
    start_us: int
    duration_us: int
    error: str | None
    annotations: tuple[tuple[int, str], ...]


def _service(span: dict[str, Any]) -> str:
    endpoint = span.get("localEndpoint") or {}
    return str(endpoint.get("serviceName") or "?")


def _parent_index(spans: Sequence[dict[str, Any]]) -> list[int | None]:
    """For each span, the index of the span it is drawn under (None for a root)."""
    clients = {s["id"]: i for i, s in enumerate(spans) if s.get("kind") == "CLIENT"}
    halves: dict[str, list[int]] = {}
    for i, span in enumerate(spans):
        halves.setdefault(span["id"], []).append(i)
    parents: list[int | None] = []
    for i, span in enumerate(spans):
        if span.get("kind") == "SERVER" and span.get("shared") and span["id"] in clients:
            parents.append(clients[span["id"]])
            continue
        candidates = [j for j in halves.get(span.get("parentId") or "", []) if j != i]
        if not candidates:
            parents.append(None)
            continue
        # The parent id names an RPC with up to two halves: the child belongs to the half that
        # ran in its own service (normally the server, which made the call).
        same_service = [j for j in candidates if _service(spans[j]) == _service(span)]
        chosen = same_service or [j for j in candidates if spans[j].get("kind") == "SERVER"]
        parents.append((chosen or candidates)[0])
    return parents


def rows(spans: Iterable[dict[str, Any]]) -> list[Row]:
    """The spans of one trace in drawing order: depth first, siblings by start time."""
    ordered = sorted(spans, key=lambda s: (s.get("timestamp", 0), s.get("kind") != "CLIENT"))
    if not ordered:
        return []
    parents = _parent_index(ordered)
    children: dict[int | None, list[int]] = {}
    for i, parent in enumerate(parents):
        children.setdefault(parent, []).append(i)
    origin = ordered[0].get("timestamp", 0)
    result: list[Row] = []
    # Iterative depth-first walk: a cycle of bad parent ids cannot recurse forever.
    stack = [(i, 0) for i in reversed(children.get(None, []))]
    seen: set[int] = set()
    while stack:
        index, depth = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        span = ordered[index]
        error = (span.get("tags") or {}).get("error")
        annotations = tuple(
            (int(a["timestamp"]) - origin, str(a["value"])) for a in span.get("annotations") or ()
        )
        result.append(
            Row(
                depth=depth,
                service=_service(span),
                kind=str(span.get("kind") or "local").lower(),
                name=str(span.get("name") or ""),
                start_us=int(span.get("timestamp", origin)) - origin,
                duration_us=int(span.get("duration") or 0),
                error=None if error is None else str(error),
                annotations=annotations,
            )
        )
        stack.extend((child, depth + 1) for child in reversed(children.get(index, [])))
    return result


def _ms(micros: int) -> str:
    return f"{micros / 1000:.3f}ms"


def _bar(row: Row, total_us: int, width: int, fill: str, empty: str) -> str:
    start = min(width - 1, row.start_us * width // total_us)
    length = max(1, round(row.duration_us * width / total_us))
    length = min(length, width - start)
    return empty * start + fill * length + empty * (width - start - length)


def render(
    spans: Iterable[dict[str, Any]], *, title: str = "", width: int = BAR_WIDTH, ascii: bool = False
) -> str:
    """The waterfall of one trace as text (several lines, no trailing newline)."""
    drawn = rows(spans)
    if not drawn:
        return f"{title}: no spans" if title else "no spans"
    total = max(max(row.start_us + row.duration_us for row in drawn), 1)
    fill, empty, branch, mark, dot = (
        ("#", ".", "`- ", "X", "-") if ascii else ("█", "·", "└─ ", ERROR_MARK, "·")
    )
    labels = [("   " * (row.depth - 1) + branch if row.depth else "") + row.name for row in drawn]
    service_w = max(len("service"), *(len(row.service) for row in drawn))
    name_w = max(len("span"), *(len(label) for label in labels))
    lines = []
    if title:
        services = len({row.service for row in drawn})
        lines.append(f"{title}  ({len(drawn)} spans, {services} services, {_ms(total)})")
    lines.append(
        f"  {'service':<{service_w}}  {'kind':<6}  {'span':<{name_w}}  {'start':>10}  "
        f"{'':<{width}}  {'duration':>9}"
    )
    lead = f"  {'':<{service_w}}  {'':<6}  "
    for row, label in zip(drawn, labels, strict=True):
        line = (
            f"  {row.service:<{service_w}}  {row.kind:<6}  {label:<{name_w}}  "
            f"{'+' + _ms(row.start_us):>10}  {_bar(row, total, width, fill, empty)}  "
            f"{_ms(row.duration_us):>9}"
        )
        if row.error is not None:
            line += f"  {mark} {row.error}"
        lines.append(line.rstrip())
        if row.annotations:
            events = ", ".join(f"{value} +{_ms(at)}" for at, value in row.annotations)
            # Under the span's name, one level deeper: the events belong to that span.
            lines.append(f"{lead}{' ' * (3 * row.depth)}{dot} {events}")
    return "\n".join(lines)
