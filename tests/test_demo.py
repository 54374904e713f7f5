"""The examples run and show what they promise: the demo's waterfalls, Zipkin links, the client.

The demo is run through its entry points; its output is parsed back into rows (depth, service,
kind, span name, error) and compared with the exact trees the three services must produce.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import pytest

from examples import demo, simple_client
from tests.kit.collector import running_collector
from tests.kit.servers import refused_url

Row = tuple[int, str, str, str, str | None]

_TITLE = re.compile(r"^(\d)\. (.+) -> (\d{3}), trace ([0-9a-f]{32})")
_ROW = re.compile(
    r"^  (?P<service>\S+) +(?P<kind>local |client|server)  (?P<label>.+?) +"
    r"\+\d+\.\d{3}ms +[█·]+ +\d+\.\d{3}ms(?:  ✗ (?P<error>.+))?$"
)
_EVENTS = re.compile(r"^ +· (?P<events>.+)$")


def parse(output: str) -> dict[str, dict[str, Any]]:
    """Each block of the demo's output by scenario title: status, trace id, rows, events."""
    blocks: dict[str, dict[str, Any]] = {}
    for block in output.strip().split("\n\n"):
        lines = block.splitlines()
        title = _TITLE.match(lines[0])
        if title is None:
            continue
        rows: list[Row] = []
        events: list[str] = []
        for line in lines[1:]:
            row = _ROW.match(line)
            if row is not None:
                label = row["label"]
                stripped = label.lstrip(" ")
                depth = 0
                if stripped.startswith("└─ "):
                    depth = (len(label) - len(stripped)) // 3 + 1
                    stripped = stripped[3:]
                kind = row["kind"].strip()
                rows.append((depth, row["service"], kind, stripped, row["error"]))
            elif (event := _EVENTS.match(line)) is not None:
                events.append(event["events"])
        blocks[title[2]] = {
            "status": int(title[3]),
            "trace_id": title[4],
            "rows": rows,
            "events": events,
            "text": block,
        }
    return blocks


def lookup(error: str | None, sku_error: str | None) -> list[Row]:
    """One inventory lookup made by the backend: its client span and the inventory's server."""
    return [
        (5, "backend", "client", "get", error),
        (6, "inventory", "server", "get /items/{sku}", sku_error),
    ]


def _check_demo_output(output: str) -> None:
    blocks = parse(output)
    assert list(blocks) == [scenario.title for scenario in demo.SCENARIOS]

    ok = blocks["checkout order 42"]
    assert ok["status"] == 200
    assert ok["rows"] == [
        (0, "demo", "local", "checkout order 42", None),
        (1, "demo", "client", "get", None),
        (2, "frontend", "server", "get /checkout/{order_id}", None),
        (3, "frontend", "client", "get", None),
        (4, "backend", "server", "get /orders/{order_id}", None),
        *lookup(None, None),
        *lookup(None, None),
    ]

    missing = blocks["checkout order 99 (no such order)"]
    assert missing["status"] == 404
    # 404 is an error for the callers, not for the server that answered it.
    assert missing["rows"] == [
        (0, "demo", "local", "checkout order 99 (no such order)", None),
        (1, "demo", "client", "get", "404"),
        (2, "frontend", "server", "get /checkout/{order_id}", None),
        (3, "frontend", "client", "get", "404"),
        (4, "backend", "server", "get /orders/{order_id}", None),
    ]

    failing = blocks["checkout order 13 (the inventory fails)"]
    assert failing["status"] == 502
    rows = failing["rows"]
    assert rows[:5] == [
        (0, "demo", "local", "checkout order 13 (the inventory fails)", None),
        (1, "demo", "client", "get", "502"),
        (2, "frontend", "server", "get /checkout/{order_id}", "502"),
        (3, "frontend", "client", "get", "502"),
        (4, "backend", "server", "get /orders/{order_id}", "502"),
    ]
    # The two lookups run concurrently: either may be drawn first.
    lookups = sorted([rows[5:7], rows[7:9]], key=str)
    assert lookups == sorted(
        [
            lookup(None, None),
            lookup("500", "RuntimeError: no warehouse stocks unicorns"),
        ],
        key=str,
    )
    assert any(line.startswith("inventory failed +") for line in failing["events"])

    unsampled = blocks["checkout order 42, not sampled"]
    assert unsampled["status"] == 200
    assert unsampled["rows"] == []
    assert "not sampled: 0 spans recorded" in unsampled["text"]
    assert len({block["trace_id"] for block in blocks.values()}) == 4


def test_demo_draws_every_trace_as_a_waterfall(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZIPKIN_URL", raising=False)

    assert demo.main([]) == 0

    output = capsys.readouterr().out
    assert "not reachable" not in output
    _check_demo_output(output)


def test_demo_falls_back_to_the_terminal_when_zipkin_is_unreachable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The only address tried is the one given: a 127.0.0.1 port that was just closed.
    closed = asyncio.run(refused_url()).origin()
    monkeypatch.setenv("ZIPKIN_URL", str(closed))

    assert demo.main([]) == 0

    output = capsys.readouterr().out
    assert output.startswith(f"Zipkin at {closed} is not reachable (")
    _check_demo_output(output.split("\n\n", 1)[1])


def test_demo_refuses_an_address_that_is_not_a_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZIPKIN_URL", raising=False)

    assert demo.main(["--zipkin", "localhost"]) == 2

    assert "a Zipkin address is an http(s) URL" in capsys.readouterr().err


async def test_demo_reports_to_zipkin_and_prints_the_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZIPKIN_URL", raising=False)
    out = io.StringIO()

    async with running_collector() as collector:
        base = collector.url.origin()
        assert await demo.amain(["--zipkin", str(base)], out=out) == 0
        # Nine spans for order 42 and for order 13, five for order 99, none unsampled.
        spans = await collector.wait_for_spans(23)

    lines = out.getvalue().splitlines()
    assert lines[0] == f"Spans reported to Zipkin at {base}:"
    links = [re.fullmatch(r"\d\. (.+) -> (\d{3}): (.+)", line) for line in lines[1:]]
    assert all(link is not None for link in links)
    by_title = {link[1]: (int(link[2]), link[3]) for link in links if link is not None}
    assert list(by_title) == [scenario.title for scenario in demo.SCENARIOS]
    sampled_ids = []
    for title in list(by_title)[:3]:
        link = by_title[title][1]
        match = re.fullmatch(rf"{re.escape(str(base))}/zipkin/traces/([0-9a-f]{{32}})", link)
        assert match is not None, link
        sampled_ids.append(match[1])
    assert [by_title[t][0] for t in by_title] == [200, 404, 502, 200]
    unsampled = by_title["checkout order 42, not sampled"][1]
    assert unsampled.startswith("not sampled, nothing reported (trace ")
    assert len(spans) == 23
    counts = {trace_id: 0 for trace_id in sampled_ids}
    for span in spans:
        counts[span["traceId"]] += 1
    assert counts == dict(zip(sampled_ids, (9, 5, 9), strict=True))


def test_simple_client_prints_its_one_span(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncio.run(simple_client.main()) == 0

    (span,) = json.loads(capsys.readouterr().out)
    assert span["kind"] == "CLIENT"
    assert span["name"] == "get"
    assert span["localEndpoint"] == {"serviceName": "simple_client"}
    assert span["remoteEndpoint"]["serviceName"] == "hello-server"
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["http.path"] == "/hello"
