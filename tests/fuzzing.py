"""Shared helpers of the fuzz tests (``tests/test_fuzz_*.py``): settings, the bad-input
contract, weird values, and the case counters printed at the end of the pytest run.

Run the fuzzers longer with ``SERVESIM_FUZZ_SCALE`` (multiplies every ``max_examples``) and on
new inputs with ``SERVESIM_FUZZ_SEED`` (an integer; without it the runs are derandomized, so CI
sees the same cases every time)::

    SERVESIM_FUZZ_SCALE=20 SERVESIM_FUZZ_SEED=$RANDOM python -m pytest tests/test_fuzz_*.py
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

from servesim.cli import main

F = TypeVar("F", bound=Callable[..., Any])

SCALE = float(os.environ.get("SERVESIM_FUZZ_SCALE", "1"))
SEED = os.environ.get("SERVESIM_FUZZ_SEED")

#: cases tried per family ("scenario", "trace"), by outcome; printed by tests/conftest.py.
COUNTS: dict[str, Counter[str]] = {}


def examples(n: int) -> int:
    """``n`` scaled by ``SERVESIM_FUZZ_SCALE`` (at least 1)."""
    return max(1, round(n * SCALE))


def fuzz(n: int) -> Callable[[F], F]:
    """Hypothesis settings of a fuzz test: ``examples(n)`` cases, no deadline, no example
    database, deterministic unless ``SERVESIM_FUZZ_SEED`` is set."""
    chosen = settings(
        max_examples=examples(n),
        deadline=None,
        database=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )

    def apply(test: F) -> F:
        test = chosen(test)
        return seed(int(SEED))(test) if SEED is not None else test

    return apply


def record(family: str, outcome: str) -> None:
    """Count one case of ``family`` ("scenario", "trace") with its ``outcome``."""
    counts = COUNTS.setdefault(family, Counter())
    counts["cases"] += 1
    counts[outcome] += 1


def summary_lines() -> list[str]:
    """One line per family: ``fuzz: N scenario cases, A ran, B rejected with one-line errors``."""
    lines = []
    for family, counts in COUNTS.items():
        ok = "ran" if family == "scenario" else "parsed"
        lines.append(f"fuzz: {counts['cases']} {family} cases, {counts[ok]} {ok}, "
                     f"{counts['rejected']} rejected with one-line errors")
    return lines


def assert_one_line(message: str, *fragments: str) -> None:
    """The error contract: a non-empty message on one line, naming every fragment."""
    assert message.strip(), "empty error message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr), where stderr also holds the
    warnings that a terminal would show (pytest captures them otherwise)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                    for w in caught)
    return code, out, shown + err


def assert_cli_contract(code: int, out: str, err: str) -> str:
    """Exit 0 with nothing on stderr, or exit 2 with one ``servesim: error:`` line."""
    assert code in (0, 2), (code, err)
    assert "Traceback" not in out + err, err
    if code == 0:
        assert err == "", err
        return "ran"
    assert err.startswith("servesim: error: ") and err.count("\n") == 1, err
    assert_one_line(err.rstrip("\n"))
    return "rejected"


# --- weird values -----------------------------------------------------------------------------

HUGE_INTS = [0, -1, 1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(10**30)]
EXTREME_FLOATS = [0.0, -0.0, -1.5, 1e-308, 5e-324, 1e308, -1e308, float("nan"), float("inf"),
                  float("-inf")]
#: strings a YAML file gives for numbers YAML 1.1 does not read as numbers, and YAML words.
NUMBERISH_TEXT = ["nan", "NaN", "inf", "-inf", ".nan", ".inf", "1e308", "1e999", "-1e999",
                  "1e-999", "10**30", "0x10", "1_000", "", " ", "null", "~", "yes", "NO", "0.5",
                  "-0", "1,5", "\N{DIGIT FOUR}\N{ARABIC-INDIC DIGIT TWO}", "\u00bd"]
UNICODE_TEXT = ["h\u0308800", "\u202eH800", "qwen2.5\u20137b", "\U0001f600", "\u0000",
                "a\nb", "line\u2028sep", "\ufeffname", "\u0645\u0648\u062f\u064a\u0644", "\u00df"]


def scalars() -> st.SearchStrategy[Any]:
    """Scalars a YAML document can hold (safe_load: null, bool, int, float, str, date, bytes)."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(HUGE_INTS),
        st.sampled_from(EXTREME_FLOATS),
        st.sampled_from(NUMBERISH_TEXT),
        st.sampled_from(UNICODE_TEXT),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.dates(min_value=datetime.date(1, 1, 1)),
        st.binary(max_size=6),
    )


def weird_values() -> st.SearchStrategy[Any]:
    """Any value a scenario field should refuse or survive: scalars, small lists and mappings
    (with unicode and non-string keys), sets, and deeply nested lists and mappings."""
    keys = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans(),
                     st.sampled_from(UNICODE_TEXT))
    return st.one_of(
        scalars(),
        st.lists(scalars(), max_size=3),
        st.dictionaries(keys, scalars(), max_size=3),
        st.sets(st.integers(-2, 2), max_size=3),
        st.builds(Deep, scalars(), st.sampled_from([2, 30, 300, 3000]), st.booleans()),
    )


@dataclasses.dataclass(frozen=True)
class Deep:
    """``value`` nested ``depth`` lists (or ``{"a": ...}`` mappings) deep, built by
    :func:`expand` when the case runs: hypothesis recurses printing deeply nested data."""

    value: Any
    depth: int
    mapping: bool = False


def expand(node: Any) -> Any:
    """``node`` with every :class:`Deep` inside it built."""
    if isinstance(node, Deep):
        value = expand(node.value)
        for _ in range(node.depth):
            value = {"a": value} if node.mapping else [value]
        return value
    if isinstance(node, dict):
        return {key: expand(value) for key, value in node.items()}
    if isinstance(node, list):
        return [expand(value) for value in node]
    return node
