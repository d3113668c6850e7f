"""docs/workloads.md stays runnable: every YAML example loads, every ``$ servesim ...``
command exits 0, and the Python snippet runs (from the repository root, as the page says)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from servesim.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "workloads.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == kind]


def examples() -> dict[str, str]:
    """YAML examples by the file name on their first line (``# file: NAME``)."""
    found = {}
    for body in blocks("yaml"):
        first = body.splitlines()[0]
        assert first.startswith("# file: "), f"a YAML example without '# file:': {first}"
        found[first.removeprefix("# file: ").strip()] = body
    return found


def commands() -> list[list[str]]:
    return [shlex.split(line[2:], comments=True) for body in blocks("console")
            for line in body.splitlines() if line.startswith("$ servesim ")]


def test_page_has_one_example_per_source() -> None:
    """Each workload source named by the issue has a runnable example."""
    text = "\n".join(examples().values())
    for needle in ("kind: sharegpt", "aegaeon/workloads", "azure_llm_2023", "mooncake",
                   "vtc/real_trace", "trace_format: burstgpt", "servegen", "popularity"):
        assert needle in text, needle


def test_examples_and_commands_run(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `$ servesim ...` command of the page exits 0 (YAML names point at the page's
    examples written to a temporary folder), and the Python snippet runs."""
    for name, body in examples().items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(ROOT)
    for argv in commands():
        args = [str(tmp_path / a) if a in examples() else a for a in argv[1:]]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(args)
        assert code == 0, f"servesim {' '.join(argv[1:])} failed:\n{out.getvalue()}"
    monkeypatch.chdir(tmp_path)
    for body in blocks("python"):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, str(PAGE), "exec"), {})  # noqa: S102
    assert os.getcwd() == str(tmp_path)
