"""``make mutate``: mutation testing of the code where a silent regression harms users.

Two kinds of mutants, scored together per area:

* mutmut (configured in ``[tool.mutmut]`` of pyproject.toml) mutates the bodies of the
  functions named in :data:`AREAS` (flipped comparisons, dropped ``not``, changed constants,
  ``None`` for values, removed arguments...) and runs, for each mutant, the selected tests that
  call the mutated function;
* mutmut leaves module-level constants alone, yet the redaction lists and the id patterns are
  module constants: :func:`constant_mutants` removes each element of the sets named in
  :data:`CONSTANT_SETS` and applies the text changes of :data:`CONSTANT_EDITS`, one at a time, in
  a copy of the package, and runs the area's test files against each.

A mutant is killed when a test fails. A survivor is either a missing test or a mutant judged
equivalent (no test can tell it from the original); the judged ones are listed, each with its
reason, in ``mutation/equivalent.md``. Exit status 1 when an area scores under
:data:`THRESHOLD`, or a survivor is not judged yet.

Each mutant is counted in exactly one area (a mutant two areas' globs match stops the run).

To scope in more code: add globs to an area or a new :class:`Area` below, add its file to
``only_mutate`` and its test files to ``pytest_add_cli_args_test_selection`` in pyproject.toml.
The span encoder (``aiozipkin_client/reporting/_model.py``, issue #11's one set of encoding
rules) is an area of its own; the transport's buffer and sender are not in scope.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EQUIVALENT = ROOT / "mutation" / "equivalent.md"
LOG = MUTANTS / "mutmut-run.log"
THRESHOLD = 90.0
PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class Area:
    name: str
    #: The file of the area's module-level constants (as in pyproject's only_mutate); its
    #: functions may be in other files too, as the globs say.
    source: str
    #: mutmut's mangled names of the functions in scope: a function ``f`` of module ``m`` is
    #: ``m.x_f``, a method ``C.f`` is ``m.xǁCǁf``; each mutant adds ``__mutmut_<n>``.
    functions: tuple[str, ...]
    #: The test files run against this area's constant mutants.
    tests: tuple[str, ...]
    #: Globs of mutant names that ``functions`` matches but another area counts.
    excluded: tuple[str, ...] = ()

    def counts(self, mutant: str) -> bool:
        return any(fnmatchcase(mutant, glob) for glob in self.functions) and not any(
            fnmatchcase(mutant, glob) for glob in self.excluded
        )


PARENTS = "aiozipkin_client.propagation.x_is_valid_parent*"
ERROR_TESTS = (
    "tests/test_error_values.py",
    "tests/test_error_value_rules.py",
    "tests/test_ignored_exceptions.py",
    "tests/test_response_parser_contract.py",
)

AREAS = (
    Area(
        "B3 propagation",
        "aiozipkin_client/propagation.py",
        ("aiozipkin_client.propagation.*",),
        ("tests/test_propagation.py", "tests/test_propagation_spec.py"),
        excluded=(PARENTS,),
    ),
    Area(
        # redact_url with the query values it redacts one level down (_redact_nested); the text
        # rules both share (_redact_parts, _mask_params, _drop_fragment, the patterns) count as
        # error redaction, whose free text exercises every one of them.
        "URL redaction",
        "aiozipkin_client/parsers.py",
        (
            "aiozipkin_client.parsers.x_redact_url*",
            "aiozipkin_client.parsers.x_is_sensitive_param*",
            "aiozipkin_client.parsers.x__redact_nested*",
            "aiozipkin_client.parsers.x__query_value*",
            "aiozipkin_client.parsers.xǁHttpRequestParserǁ*",
        ),
        ("tests/test_redaction.py", "tests/test_span_values.py"),
    ),
    Area(
        "error redaction",
        "aiozipkin_client/parsers.py",
        (
            "aiozipkin_client.parsers.x_error_value*",
            "aiozipkin_client.parsers.xǁErrorTaggingǁ*",
            "aiozipkin_client.parsers.x_run_response_parser*",
            "aiozipkin_client.parsers.x__redact_text*",
            "aiozipkin_client.parsers.x__redact_parts*",
            "aiozipkin_client.parsers.x__mask_params*",
            "aiozipkin_client.parsers.x__drop_fragment*",
        ),
        ERROR_TESTS,
    ),
    Area(
        # The check and where the client applies it: the fallback from an invalid explicit
        # parent to the current span, and the warning logged once.
        "parent validation",
        "aiozipkin_client/propagation.py",
        (
            PARENTS,
            "aiozipkin_client.client.xǁClientTracingǁ_parent*",
            "aiozipkin_client.client.xǁClientTracingǁ_usable*",
        ),
        ("tests/test_client_parents.py", "tests/test_parent_validation.py"),
    ),
    Area(
        # The one set of encoding rules (issue #11): a foreign record checked by encode_span's
        # rules, our own values' annotations, and the batch encoding with its scrub fallback.
        # Not the transport's buffer or sender (another kind of logic, and minutes of tests).
        "span encoding",
        "aiozipkin_client/reporting/_model.py",
        ("aiozipkin_client.reporting._model.*",),
        (
            "tests/test_reporting_model.py",
            "tests/test_reporting_encode.py",
            "tests/test_client_direct_report.py",
            "tests/test_span_values.py",
        ),
    ),
    Area(
        "sampling decisions",
        "aiozipkin_client/sampling.py",
        ("aiozipkin_client.sampling.*",),
        ("tests/test_sampling_decisions.py", "tests/test_client_sampling.py"),
    ),
)

#: (area, module-level name): each element of that set literal is removed, one at a time.
CONSTANT_SETS = (
    ("URL redaction", "DEFAULT_SENSITIVE_QUERY_PARAMS"),
    ("URL redaction", "_SENSITIVE_WORDS"),
    ("span encoding", "_KINDS"),
)


def _variants(
    area: str, old: str, changes: dict[str, str]
) -> tuple[tuple[str, str, str, str], ...]:
    """:data:`CONSTANT_EDITS` entries: ``old`` changed to each value of ``changes`` (its label)."""
    return tuple((area, label, old, new) for label, new in changes.items())


#: (area, label, old text, new text): the old text must occur exactly once in the area's file.
CONSTANT_EDITS = (
    # The id alphabet: decoded and encoded again, an id must come back the same.
    *_variants(
        "B3 propagation",
        "_from_hex(value).hex() == value",
        {
            "ids: upper-hex too": "_from_hex(value).hex() == value.lower()",
            "ids: white space skipped": '_from_hex(value).hex() == "".join(value.split())',
        },
    ),
    *_variants(
        "parent validation",
        "_from_hex(ids).hex() == ids",
        {
            "parent ids: upper-hex too": "_from_hex(ids).hex() == ids.lower()",
            "parent ids: white space skipped": '_from_hex(ids).hex() == "".join(ids.split())',
        },
    ),
    (
        "B3 propagation",
        "zeros: 16 digits",
        '_ZEROS_16: Final = "0" * 16',
        '_ZEROS_16: Final = "0" * 17',
    ),
    (
        "B3 propagation",
        "zeros: 32 digits",
        '_ZEROS_32: Final = "0" * 32',
        '_ZEROS_32: Final = "0" * 31',
    ),
    (
        "B3 propagation",
        "Extracted not frozen",
        "@dataclass(frozen=True, slots=True)\nclass Extracted",
        "@dataclass(slots=True)\nclass Extracted",
    ),
    (
        "B3 propagation",
        "EMPTY denies",
        "context=None, sampled=None, debug=False)",
        "context=None, sampled=False, debug=False)",
    ),
    (
        "B3 propagation",
        "EMPTY debug",
        "context=None, sampled=None, debug=False)",
        "context=None, sampled=None, debug=True)",
    ),
    ("URL redaction", "words not split on -", 're.compile(r"[-_.]")', 're.compile(r"[_.]")'),
    ("URL redaction", "words not split on _", 're.compile(r"[-_.]")', 're.compile(r"[-.]")'),
    ("URL redaction", "words not split on .", 're.compile(r"[-_.]")', 're.compile(r"[-_]")'),
    ("URL redaction", "mask value changed", 'REDACTED: Final = "REDACTED"', 'REDACTED: Final = ""'),
)


ERRORS = "error redaction"
# The text rules error_value applies (redact_url's nested values share the patterns). Left out
# as equivalent, not worth a mutant: the look-behinds of _BARE_USER_INFO, _HASHED_TOKEN and
# _PARAM_NAME (they only spare the scan from restarting inside a run of the same characters,
# where it would fail again: linear time, same output), and U+2028/U+2029 and the C0 controls
# that are whitespace (str.split() splits on them anyway).
CONSTANT_EDITS += (
    (
        "span encoding",
        "placeholder name kept",
        '_PLACEHOLDER_NAME: Final = "unknown"',
        '_PLACEHOLDER_NAME: Final = "unknown-placeholder"',
    ),
    (
        "span encoding",
        "Span writes its defaults (nulls, false flags)",
        "class Span(msgspec.Struct, omit_defaults=True, gc=False):",
        "class Span(msgspec.Struct, gc=False):",
    ),
    (
        "span encoding",
        "Endpoint writes its defaults (nulls)",
        "class Endpoint(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):",
        "class Endpoint(msgspec.Struct, frozen=True, gc=False):",
    ),
)

CONSTANT_EDITS += (
    *_variants(
        ERRORS,
        "ERROR_MESSAGE_LIMIT: Final = 1000",
        {
            "message limit 999": "ERROR_MESSAGE_LIMIT: Final = 999",
            "message limit 1001": "ERROR_MESSAGE_LIMIT: Final = 1001",
        },
    ),
    *_variants(
        ERRORS,
        '**dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029], " "),',
        {
            "C0 controls kept": '**dict.fromkeys([*range(0x7F, 0xA0), 0x2028, 0x2029], " "),',
            "C0 controls from TAB only": (
                '**dict.fromkeys([*range(0x09, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029], " "),'
            ),
            "C1 controls kept": '**dict.fromkeys([*range(0x20), 0x2028, 0x2029], " "),',
            "DEL kept": (
                '**dict.fromkeys([*range(0x20), *range(0x80, 0xA0), 0x2028, 0x2029], " "),'
            ),
            "U+009F kept": (
                '**dict.fromkeys([*range(0x20), *range(0x7F, 0x9F), 0x2028, 0x2029], " "),'
            ),
            "controls removed, not spaces": (
                "**dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029], None),"
            ),
        },
    ),
    *_variants(
        ERRORS,
        "**dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], None),",
        {
            "bidi overrides become spaces": (
                '**dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], " "),'
            ),
            "bidi embeddings kept": "**dict.fromkeys([*range(0x2066, 0x206A)], None),",
            "U+202A kept": "**dict.fromkeys([*range(0x202B, 0x202F), *range(0x2066, 0x206A)], None),",
            "U+202E kept": "**dict.fromkeys([*range(0x202A, 0x202E), *range(0x2066, 0x206A)], None),",
            "bidi isolates kept": "**dict.fromkeys([*range(0x202A, 0x202F)], None),",
            "U+2069 kept": "**dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x2069)], None),",
        },
    ),
    *_variants(
        ERRORS,
        '_STOP: Final = r"\\s\\"\'<>`"',
        {
            f"tokens do not stop at {what}": '_STOP: Final = r"' + rest + '"'
            for what, rest in {
                "blanks": "\\\"'<>`",
                "double quotes": "\\s'<>`",
                "single quotes": '\\s\\"<>`',
                "<": "\\s\\\"'>`",
                ">": "\\s\\\"'<`",
                "backquotes": "\\s\\\"'<>",
            }.items()
        },
    ),
    *_variants(
        ERRORS,
        'rf"//(?:[^/?#@{_STOP}]*+@)++"',
        {
            "user info runs past /": 'rf"//(?:[^?#@{_STOP}]*+@)++"',
            "user info runs past ?": 'rf"//(?:[^/#@{_STOP}]*+@)++"',
            "user info runs past #": 'rf"//(?:[^/?@{_STOP}]*+@)++"',
            "user info runs past a token's end": 'rf"//(?:[^/?#@]*+@)++"',
            "user info up to the first @ only": 'rf"//(?:[^/?#@{_STOP}]*+@)"',
        },
    ),
    *_variants(
        ERRORS,
        "[\\w.~%!$*+-]++:(?:[^/?#@{_STOP}]*+@)++",
        {
            "bare user info without a password": "[\\w.~%!$*+-]++:?(?:[^/?#@{_STOP}]*+@)++",
            "bare user info runs past /": "[\\w.~%!$*+-]++:(?:[^?#@{_STOP}]*+@)++",
        },
    ),
    *_variants(
        ERRORS,
        '_CLOSING: Final = ")]},.;:"',
        {
            f"{char!r} is not closing": '_CLOSING: Final = "' + ")]},.;:".replace(char, "") + '"'
            for char in ")]},.;:"
        },
    ),
    *_variants(
        ERRORS,
        'rf"(?<![^{_STOP}])([^#{_STOP}]*+)#[^{_STOP}]*+"',
        {
            "fragment ends at a second #": 'rf"(?<![^{_STOP}])([^#{_STOP}]*+)#[^#{_STOP}]*+"',
            "hashed token may hold # before its #": (
                'rf"(?<![^{_STOP}])([^{_STOP}]*+)#[^{_STOP}]*+"'
            ),
        },
    ),
    *_variants(
        ERRORS,
        "([\\w.%~+-]++)=",
        {
            f"parameter names stop at {char!r}": "([" + "\\w.%~+-".replace(char, "") + "]++)="
            for char in ".%~+-"
        },
    ),
    *_variants(
        ERRORS,
        'rf"[^&#{_STOP}]*+"',
        {
            "values run past &": 'rf"[^#{_STOP}]*+"',
            "values run past #": 'rf"[^&{_STOP}]*+"',
            "values run past a token's end": 'rf"[^&#]*+"',
        },
    ),
)

#: pytest exit codes as mutmut records them: a failing test (1), a pytest error (3), a time-out
#: (mutmut's 36, or killed by SIGXCPU) and a mypy rejection (37) all mean the mutant was caught.
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}
SURVIVED = {0, 5, 33}  # 5 and 33: no test ran, so nothing could catch it


@dataclass(frozen=True)
class ConstantMutant:
    area: Area
    label: str
    source: str  # the mutated file's whole text

    @property
    def name(self) -> str:
        return f"{Path(self.area.source).stem}: {self.label}"


def area_named(name: str) -> Area:
    return next(area for area in AREAS if area.name == name)


def constant_mutants() -> list[ConstantMutant]:
    mutants: list[ConstantMutant] = []
    for area_name, constant in CONSTANT_SETS:
        area = area_named(area_name)
        text = (ROOT / area.source).read_text()
        offsets = [0]
        for line in text.splitlines(keepends=True):
            offsets.append(offsets[-1] + len(line))
        for element in _set_elements(ast.parse(text), constant):
            assert element.end_lineno is not None
            assert element.end_col_offset is not None
            start = offsets[element.lineno - 1] + element.col_offset
            end = offsets[element.end_lineno - 1] + element.end_col_offset
            # The element goes with its comma and the blanks up to the next one.
            tail = re.match(r",[ \t]*\n?[ \t]*", text[end:])
            end += tail.end() if tail else 0
            label = f"{constant} without {element.value!r}"
            mutants.append(ConstantMutant(area, label, text[:start] + text[end:]))
    for area_name, label, old, new in CONSTANT_EDITS:
        area = area_named(area_name)
        text = (ROOT / area.source).read_text()
        if text.count(old) != 1:
            raise SystemExit(f"constant mutant {label!r}: {old!r} is not in {area.source} once")
        mutants.append(ConstantMutant(area, label, text.replace(old, new)))
    return mutants


def _set_elements(tree: ast.Module, constant: str) -> list[ast.Constant]:
    """The elements of the set literal assigned to the module-level name ``constant``."""
    for statement in tree.body:
        target: ast.expr
        if isinstance(statement, ast.AnnAssign):
            target, value = statement.target, statement.value
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == constant and value is not None:
            sets = [node for node in ast.walk(value) if isinstance(node, ast.Set)]
            if len(sets) == 1 and all(isinstance(e, ast.Constant) for e in sets[0].elts):
                return [e for e in sets[0].elts if isinstance(e, ast.Constant)]
    raise SystemExit(f"no set literal of constants is assigned to {constant}")


def run_constant_mutants(mutants: list[ConstantMutant]) -> dict[str, int]:
    """Each mutant in a copy of the package, two at a time; pytest's exit code per mutant."""
    workers = max(1, min(2, os.cpu_count() or 1))
    copies = []
    for n in range(workers):
        copy = MUTANTS / "constants" / f"worker{n}"
        shutil.copytree(ROOT / "aiozipkin_client", copy / "aiozipkin_client")
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        copies.append(copy)

    def pytest_in(copy: Path, tests: tuple[str, ...]) -> int:
        return subprocess.run(
            [str(PYTHON), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        ).returncode

    for copy in copies:
        # The copy must pass as it is, and a copy's change must reach the tests (not the
        # installed package): else every result below would mean nothing.
        if pytest_in(copy, tuple(t for area in AREAS for t in area.tests)) != 0:
            raise SystemExit(f"the tests fail in the unmutated copy {copy}")
    probe = copies[0] / AREAS[0].source
    original = probe.read_text()
    probe.write_text(original + "\nraise RuntimeError('mutation probe')\n")
    if pytest_in(copies[0], AREAS[0].tests) == 0:
        raise SystemExit("a change in the copy did not reach the tests")
    probe.write_text(original)

    def run(index: int) -> list[tuple[str, int]]:
        copy = copies[index]
        results = []
        for mutant in mutants[index::workers]:
            path = copy / mutant.area.source
            original = path.read_text()
            path.write_text(mutant.source)
            try:
                results.append((mutant.name, pytest_in(copy, mutant.area.tests)))
            finally:
                path.write_text(original)
        return results

    with ThreadPoolExecutor(workers) as pool:
        return {name: code for batch in pool.map(run, range(workers)) for name, code in batch}


def judged_equivalent() -> set[str]:
    """The mutant names listed in equivalent.md, each as ``- `name` ...`` at a line's start."""
    if not EQUIVALENT.exists():
        return set()
    return set(re.findall(r"^- `([^`]+)`", EQUIVALENT.read_text(), re.MULTILINE))


def mutmut_exit_codes(area: Area) -> dict[str, int | None]:
    """mutmut's result for each of ``area``'s mutants, from every mutated file."""
    codes: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.glob("**/*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    counted = {name: code for name, code in codes.items() if area.counts(name)}
    for other in AREAS:
        twice = next((name for name in counted if other is not area and other.counts(name)), None)
        if twice is not None:
            raise SystemExit(f"{twice} is counted in {area.name!r} and {other.name!r}")
    return counted


def main() -> int:
    started = time.monotonic()
    # A fresh copy every time: mutmut caches which tests cover which function, and tests change.
    shutil.rmtree(MUTANTS, ignore_errors=True)
    MUTANTS.mkdir()
    globs = [glob for area in AREAS for glob in area.functions]
    print(
        f"mutmut: {len(globs)} function globs in {len(AREAS)} areas (log: {LOG.relative_to(ROOT)})"
    )
    with LOG.open("w") as log:
        run = subprocess.run(
            [str(PYTHON.parent / "mutmut"), "run", *globs],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if run.returncode != 0:
        print(LOG.read_text()[-4000:])
        print(f"mutmut run failed (exit {run.returncode}); its output is in {LOG}")
        return 1
    constants = constant_mutants()
    print(f"constants: {len(constants)} mutants of module-level sets and patterns")
    constant_codes = run_constant_mutants(constants)
    elapsed = time.monotonic() - started

    equivalent = judged_equivalent()
    made: set[str] = set()
    failed = False
    unjudged: list[str] = []
    print(f"\n{'area':<20} {'killed/total':>13} {'score':>7}   survivors (judged equivalent)")
    for area in AREAS:
        codes = mutmut_exit_codes(area)
        codes.update((m.name, constant_codes[m.name]) for m in constants if m.area is area)
        made |= set(codes)
        unrun = [name for name, code in codes.items() if code is None]
        if unrun:
            print(f"{area.name}: {len(unrun)} mutants were not run, e.g. {unrun[0]}")
            failed = True
        killed = sum(code in KILLED for code in codes.values())
        lost = sorted(name for name, code in codes.items() if code in SURVIVED)
        judged = [name for name in lost if name in equivalent]
        unjudged += [name for name in lost if name not in equivalent]
        total = len(codes)
        score = 100.0 * killed / total if total else 0.0
        failed |= score < THRESHOLD
        print(
            f"{area.name:<20} {killed:>6}/{total:<6} {score:>6.1f}%   {len(lost)} ({len(judged)})"
        )
    if unjudged:
        failed = True
        print("\nSurvivors not judged yet (`.venv/bin/mutmut show NAME` shows a mutmut mutant):")
        for name in unjudged:
            print(f"  {name}")
    stale = sorted(equivalent - {name for name in made if codes_survived(name, constant_codes)})
    if stale:
        print("\nListed in equivalent.md but not a survivor now (killed, or renumbered):")
        for name in stale:
            print(f"  {name}")
    print(f"\n`make mutate` took {elapsed:.0f} s")
    return 1 if failed else 0


def codes_survived(name: str, constant_codes: dict[str, int]) -> bool:
    if name in constant_codes:
        return constant_codes[name] in SURVIVED
    return any(mutmut_exit_codes(area).get(name, -1) in SURVIVED for area in AREAS)


if __name__ == "__main__":
    sys.exit(main())
