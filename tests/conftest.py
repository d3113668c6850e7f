"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the ``shared/data`` folder next to the repository root.

    Tests that use it are skipped (with the reason) when the folder does not exist, and fail
    instead when ``SERVESIM_REQUIRE_DATA=1`` (CI with the data checked out).
    """
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        message = f"shared data folder {path} not found"
        if os.environ.get("SERVESIM_REQUIRE_DATA") == "1":
            pytest.fail(f"{message} and SERVESIM_REQUIRE_DATA=1")
        pytest.skip(f"{message} (set SERVESIM_REQUIRE_DATA=1 to make this a failure)")
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Make tests/naive.py importable as ``naive``."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))


def tiny_scenario_dict(**changes: object) -> dict:
    """A small valid scenario (2 H800 instances, 2 models, 60 s); ``a__b=v`` sets a.b."""
    doc: dict = {
        "name": "tiny",
        "seed": 7,
        "duration": 60.0,
        "cluster": [{"gpu": "H800", "count": 2}],
        "workload": {
            "models": 2,
            "rate": 2.0,
            "mix": {"qwen2.5-7b": 1, "llama-2-13b": 1},
            "lengths": {"kind": "uniform", "input_min": 16, "input_max": 1024,
                        "output_min": 1, "output_max": 300},
        },
        "policy": {"name": "fcfs"},
    }
    for key, value in changes.items():
        node = doc
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return doc


@pytest.fixture
def make_scenario():
    """Build a validated tiny Scenario: ``make_scenario(workload__rate=5)``."""
    from servesim.scenario import scenario_from_dict

    def build(**changes: object):
        return scenario_from_dict(tiny_scenario_dict(**changes))

    return build


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many fuzz cases ran (tests/fuzzing.py counts them), with or without ``-s``."""
    import sys

    fuzzing = sys.modules.get("fuzzing")
    lines = fuzzing.summary_lines() if fuzzing is not None else []
    if lines:
        terminalreporter.write_sep("-", "fuzz cases")
        for line in lines:
            terminalreporter.write_line(line)
