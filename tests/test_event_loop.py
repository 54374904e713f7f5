"""The suite runs on the event loop it was asked for (see ``TEST_LOOP`` in conftest.py).

`make test` runs everything twice, on asyncio's loop and on uvloop's. Were the loop factory
hook ever ignored (a pytest-asyncio change, a typo), the second run would quietly repeat the
first; this test fails instead.
"""

from __future__ import annotations

import asyncio

from tests.conftest import TEST_LOOP


async def test_the_requested_event_loop_runs_the_tests() -> None:
    loop = asyncio.get_running_loop()
    module = type(loop).__module__
    if TEST_LOOP == "uvloop":
        assert module.split(".")[0] == "uvloop", f"asked for uvloop, running {type(loop)}"
    else:
        assert module.split(".")[0] == "asyncio", f"asked for asyncio, running {type(loop)}"
