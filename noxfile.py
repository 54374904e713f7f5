"""The support matrix: the test suite on every Python and aiohttp version we support.

``make matrix`` runs every session (it puts pyenv's interpreters on PATH); ``.ci/run`` runs
the corners. One cell: ``nox -s "tests-3.11(aiohttp='3.10')"``; the list: ``nox -l``.

Every version installed comes from ``requirements-dev.txt`` (the newest pins, used as they are
by the aiohttp 3.14 cells) or from ``OLDER`` below, which replaces the aiohttp pin, and the
yarl and multidict pins that go with it, for the older cells. The aiohttp 3.10 cells use the
oldest aiosignal, yarl, multidict and msgspec that ``pyproject.toml`` allows, so its lower
bounds are tested too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "package"]
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "no"

ROOT = Path(__file__).parent
PYTHONS = ["3.11", "3.12", "3.13"]
NEWEST = "3.14"

#: aiohttp minor -> the pins that replace the newest ones (the latest patch of each minor).
OLDER: dict[str, dict[str, str]] = {
    "3.10": {
        "aiohttp": "3.10.11",
        "aiosignal": "1.1.2",
        "yarl": "1.12.0",
        "multidict": "6.1.0",
        "msgspec": "0.19.0",
    },
    "3.11": {"aiohttp": "3.11.18", "yarl": "1.25.1", "multidict": "6.9.1"},
    "3.12": {"aiohttp": "3.12.15", "yarl": "1.25.1", "multidict": "6.9.1"},
    "3.13": {"aiohttp": "3.13.5", "yarl": "1.25.1", "multidict": "6.9.1"},
}

#: Tools only `make test` needs (lint, types, this runner): not installed in the cells.
_NOT_FOR_TESTS = re.compile(r"^(mypy|ruff|nox|build|twine|types-.*)$", re.IGNORECASE)


def _pins() -> dict[str, str]:
    """requirements-dev.txt as {name: "name==version"}."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
            pins[name.lower()] = requirement
    return pins


def _test_requirements(aiohttp: str) -> list[str]:
    """What the test suite needs, pinned, with aiohttp ``aiohttp`` (a minor version)."""
    pins = {name: pin for name, pin in _pins().items() if not _NOT_FOR_TESTS.match(name)}
    for name, version in OLDER.get(aiohttp, {}).items():
        pins[name] = f"{name}=={version}"
    return list(pins.values())


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    # Exit code 5 (no tests collected) fails the session like any other non-zero code.
    session.run("pytest", "-q", "-p", "no:cacheprovider", *args, *session.posargs, env=env)


@nox.session(python=PYTHONS)
@nox.parametrize("aiohttp", [*OLDER, NEWEST])
def tests(session: nox.Session, aiohttp: str) -> None:
    """The test suite (without ruff and mypy) on one Python and one aiohttp minor version,
    on asyncio's event loop and then on uvloop's."""
    # One pip call: the resolver also checks pyproject.toml's bounds accept these pins.
    session.install(*_test_requirements(aiohttp), "-e", ".")
    session.run("python", "-c", "import aiohttp; print('aiohttp', aiohttp.__version__)")
    _pytest(session)
    # Then on uvloop's event loop, as `make test` does (tests/conftest.py, TEST_LOOP).
    _pytest(session, env={"AIOZIPKIN_CLIENT_TEST_LOOP": "uvloop"})


@nox.session(python=PYTHONS[-1])
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, and run the tests against the installed wheel.

    ``python -m build`` builds the wheel from the sdist, so the sdist is complete. The tests run
    from the checkout with pytest's ``append`` import mode: the checkout goes at the end of
    ``sys.path``, so ``aiozipkin_client`` is the installed wheel (checked first) while
    ``tests`` and ``examples``, which the wheel does not ship, still come from the checkout.
    """
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    pins = _pins()
    session.install(pins["build"], pins["twine"])
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    built = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *built)

    wheels = [path for path in built if path.endswith(".whl")]
    session.install(*_test_requirements(NEWEST), *wheels)
    session.run(
        "python",
        "-P",  # not the current directory first: only site-packages, then the checkout
        "-c",
        "import sys; sys.path.append('.'); import aiozipkin_client as p, tests.kit;"
        " print('testing', p.__file__); assert 'site-packages' in p.__file__, p.__file__",
    )
    _pytest(session, "--import-mode=append")
