"""Every shell example of the documentation runs as written, and the user docs stay true.

**Commands.** The lines of the pages' ```bash blocks that start with ``servesim `` or
``python `` (``\\`` continuations joined; in ``a && b`` each part is taken on its own, so
``pip install -e . && servesim run ...`` runs its ``servesim`` part; ``pip``, ``pytest`` and
other programs are not run). On the pages of :data:`PYTHON_PAGES` the ```python blocks run
too. Each page's examples run in document order in a scratch folder laid out like the
repository root (copies of :data:`COPIED`, and ``../shared`` linking to the real data folder),
so that a later command reads what an earlier one wrote and the repository never changes. A
command must exit 0, unless the page marks it with a trailing comment ``# fails: exit N``.

A plain ``servesim ARGS`` command runs in this process through ``servesim.cli.main`` (the
console script's entry point: the same argument parsing and code, without starting an
interpreter and loading the numba cache per command); anything else (``python ...``, pipes,
variables) runs through bash, with this interpreter's ``python`` and ``servesim`` first on
``PATH``.

Examples that read ``../shared`` run in a second test per page, which skips when the data
folder is absent and fails instead with ``SERVESIM_REQUIRE_DATA=1`` (the ``shared_data``
fixture). Pages whose examples would be slow get faster examples, not a skip; the pages left
out of :data:`PAGES` say why there.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

PAGES = [
    "README.md",
    "docs/user-guide.md",
    "docs/validation.md",
    "docs/scenarios.md",
    "docs/latency-model.md",
    "docs/regression.md",
    "docs/writing-a-policy.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "policies").glob("*.md")),
]
"""Pages whose examples run. Left out: docs/workloads.md (its ```console examples have their
own test, tests/test_workload_docs.py); docs/sweeps.md (the README's sweep and plot, plus a
goodput search of a minute), docs/fairness.md (reproduction scripts of a minute and more),
docs/reproductions/aegaeon.md (a 20-minute reproduction) and benchmarks/README.md (minutes of
benchmarks): their single-run examples are repeated, fast, in the user guide, the validation
report and the policy pages."""

PYTHON_PAGES = {"README.md", "docs/user-guide.md", "docs/validation.md"}
"""Pages whose ```python blocks are complete programs that run too."""

COPIED = ["scenarios", "examples", "traces", "profiles", "scripts", "docs"]
"""Repository folders copied into the scratch folder (copies, not links: ``servesim regress
--update`` or ``scripts/fit_profiles.py --out profiles`` must not touch the repository)."""

COMMAND_TIMEOUT_S = 180
_BLOCK = re.compile(r"^```(bash|python)[ \t]*\n(.*?)^```", re.S | re.M)
_FAILS = re.compile(r"#\s*fails:\s*exit\s+(\d+)\s*$")
_RUN = ("servesim ", "python ")
_SHELL = re.compile(r"[|<>$;&`]")


@dataclass(frozen=True)
class Example:
    """One documented example: a shell command or a Python block, and its expected exit."""

    page: str
    line: int
    text: str
    kind: str = "bash"
    exit_code: int = 0

    @property
    def needs_data(self) -> bool:
        """Reads the project's data folder next to the repository."""
        return "../shared" in self.text

    def __str__(self) -> str:
        first = self.text if self.kind == "bash" else self.text.splitlines()[0] + " ..."
        return f"{self.page}:{self.line}: {first}"


def _split_and(line: str) -> list[str]:
    """Split ``a && b`` outside quotes."""
    parts, current, quote, i = [], "", "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif line.startswith("&&", i):
            parts.append(current.strip())
            current, i = "", i + 2
            continue
        current += ch
        i += 1
    parts.append(current.strip())
    return [p for p in parts if p]


def _bash_commands(page: str, body: str, first_line: int) -> list[Example]:
    commands = []
    logical, start = "", None
    for offset, raw in enumerate(body.splitlines()):
        if start is None:
            start = first_line + offset
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            logical += stripped[:-1].strip() + " "
            continue
        logical += stripped.strip()
        for part in _split_and(logical):
            if part.startswith(_RUN):
                match = _FAILS.search(part)
                commands.append(Example(page, start, part, "bash",
                                        int(match.group(1)) if match else 0))
        logical, start = "", None
    return commands


def extract_examples(page: str, text: str | None = None, python: bool | None = None
                     ) -> list[Example]:
    """The runnable examples of a Markdown page, in document order (```python blocks only
    with ``python``; default: the page is in :data:`PYTHON_PAGES`)."""
    if text is None:
        text = (ROOT / page).read_text(encoding="utf-8")
    if python is None:
        python = page in PYTHON_PAGES
    examples: list[Example] = []
    for block in _BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(2)) + 1
        if block.group(1) == "bash":
            examples += _bash_commands(page, block.group(2), first_line)
        elif python:
            examples.append(Example(page, first_line, block.group(2), "python"))
    return examples


def _scratch(tmp: Path) -> Path:
    """A working folder laid out like the repository root, with ``../shared`` resolving."""
    work = tmp / "repo"
    work.mkdir()
    for name in COPIED:
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, work / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp / "shared").symlink_to(shared, target_is_directory=True)
    return work


def _in_process_argv(text: str) -> list[str] | None:
    """The argv of a plain ``servesim ...`` command (no pipes, redirections, variables), else
    None."""
    if not text.startswith("servesim ") or _SHELL.search(text.split("#", 1)[0]):
        return None
    return shlex.split(text, comments=True)[1:]


@contextlib.contextmanager
def _inside(cwd: Path):  # type: ignore[no-untyped-def]
    """Run in ``cwd`` with stdout and stderr captured (yields the two buffers)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        os.chdir(old)


def _run_servesim(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    from servesim.cli import main

    with _inside(cwd) as (out, err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _run_python(example: Example, cwd: Path) -> tuple[int, str, str]:
    with _inside(cwd) as (out, err):
        try:
            exec(compile(example.text, f"{example.page}:{example.line}", "exec"), {})  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - reported with the example
            import traceback

            return 1, out.getvalue(), "".join(traceback.format_exception(exc))
    return 0, out.getvalue(), err.getvalue()


def _run_bash(text: str, cwd: Path) -> tuple[int, str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    try:
        proc = subprocess.run(["bash", "-c", text], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, "", f"took over {COMMAND_TIMEOUT_S} s: make the documented command faster"
    return proc.returncode, proc.stdout, proc.stderr


def _run(example: Example, cwd: Path) -> None:
    if example.kind == "python":
        code, out, err = _run_python(example, cwd)
    elif (argv := _in_process_argv(example.text)) is not None:
        code, out, err = _run_servesim(argv, cwd)
    else:
        code, out, err = _run_bash(example.text, cwd)
    if code != example.exit_code:
        mark = "" if example.exit_code == 0 else f" (the page expects exit {example.exit_code})"
        pytest.fail(f"{example}\nexited {code}{mark}\n--- stdout\n{out[-3000:]}\n--- stderr\n"
                    f"{err[-3000:]}", pytrace=False)


def _ids() -> list[str]:
    return [p.removeprefix("docs/").removesuffix(".md") for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=_ids())
def test_page_examples_run(page: str, tmp_path: Path) -> None:
    """The page's examples that need no external data exit as documented, in order."""
    examples = [e for e in extract_examples(page) if not e.needs_data]
    if not examples:
        return
    work = _scratch(tmp_path)
    for example in examples:
        _run(example, work)


@pytest.mark.parametrize("page", PAGES, ids=_ids())
def test_page_data_examples_run(page: str, tmp_path: Path, request: pytest.FixtureRequest
                                ) -> None:
    """The page's examples that read ``../shared/data`` exit as documented, in order."""
    examples = [e for e in extract_examples(page) if e.needs_data]
    if not examples:
        return
    request.getfixturevalue("shared_data")  # skips (or fails) without the data folder
    work = _scratch(tmp_path)
    for example in examples:
        _run(example, work)


def test_user_guide_and_readme_have_examples() -> None:
    """The extraction finds the main pages' examples (a format change must not hide them)."""
    assert len(extract_examples("README.md")) >= 8
    guide = extract_examples("docs/user-guide.md")
    assert len(guide) >= 15
    assert any(e.exit_code == 2 for e in guide), "the guide shows a refused scenario"
    assert any(e.kind == "python" for e in guide)


def test_extraction_rules() -> None:
    """Continuations are joined, ``&&`` parts split, other programs ignored, exits marked."""
    page = "\n".join([
        "text", "```bash",
        "pip install -e . && servesim run a.yaml",
        "servesim sweep a.yaml --grid x=1,2 \\",
        "    --seeds 2   # comment",
        "servesim run bad.yaml   # fails: exit 2",
        "pytest -q",
        "python -c 'print(\"a && b\")'",
        "```", "```text", "servesim run not-a-command.yaml", "```",
        "```python", "print(1)", "```",
    ])
    got = [(e.line, e.kind, e.text, e.exit_code)
           for e in extract_examples("page.md", page, python=True)]
    assert got == [
        (3, "bash", "servesim run a.yaml", 0),
        (4, "bash", "servesim sweep a.yaml --grid x=1,2 --seeds 2   # comment", 0),
        (6, "bash", "servesim run bad.yaml   # fails: exit 2", 2),
        (8, "bash", "python -c 'print(\"a && b\")'", 0),
        (14, "python", "print(1)\n", 0),
    ]
    assert _in_process_argv("servesim run a.yaml --set x=1  # a > b") == [
        "run", "a.yaml", "--set", "x=1"]
    assert _in_process_argv("servesim run a.yaml | head") is None


# --------------------------------------------------------------------------- the docs stay true


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
LINKED_PAGES = ["README.md", "docs/user-guide.md", "docs/validation.md",
                "docs/policies/README.md"]


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_relative_links_resolve(page: str) -> None:
    """Every relative link of the user-facing index pages names an existing file or folder."""
    text = (ROOT / page).read_text(encoding="utf-8")
    missing = [target for target in _LINK.findall(text)
               if "://" not in target and not (ROOT / page).parent.joinpath(target).exists()]
    assert not missing, f"{page}: broken links {missing}"


def test_policies_index_lists_every_registered_policy() -> None:
    """docs/policies/README.md has a row for every registered policy, linking to its page,
    and that page names the policy."""
    from servesim.policies.base import REGISTRY

    index = (ROOT / "docs" / "policies" / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([^`]+)` \|.*\[[^]]+\]\(([^)]+)\) \|$", index, re.M))
    assert set(rows) == set(REGISTRY), f"index rows {sorted(rows)} != {sorted(REGISTRY)}"
    for name, target in rows.items():
        page = ROOT / "docs" / "policies" / target
        assert f"`{name}`" in page.read_text(encoding="utf-8"), f"{target} never names {name}"


def validation_profile_rows() -> list[str]:
    """The rows of docs/validation.md's profile table, from profiles/*/*.yaml."""
    rows = []
    for path in sorted((ROOT / "profiles").glob("*/*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        r2, mape, meta = doc["r2"], doc["mape"], doc.get("meta", {})
        caveats = len(meta.get("caveats", []))
        meets = mape["prefill"] <= 0.10 and mape["decode"] <= 0.05
        verdict = "yes" if meets else f"no ({caveats} caveat{'s' if caveats != 1 else ''})"
        rows.append(
            f"| {doc['gpu']} | {doc['model']} | {r2['prefill']:.4f} | {r2['decode']:.4f} | "
            f"{100 * mape['prefill']:.1f} % | {100 * mape['decode']:.1f} % | "
            f"{meta.get('points_kept')} / {meta.get('points_total')} | {verdict} |")
    return rows


def test_validation_profile_table_is_current() -> None:
    """docs/validation.md's R²/MAPE table equals the committed profiles (regenerate the rows
    with ``python tests/test_docs_commands.py --profile-table``)."""
    text = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    block = text.split("<!-- profiles:begin", 1)[1].split("<!-- profiles:end -->", 1)[0]
    documented = [line for line in block.splitlines()
                  if line.startswith("| ") and not line.startswith("| GPU |")]
    assert documented == validation_profile_rows()


if __name__ == "__main__":
    if sys.argv[1:] != ["--profile-table"]:
        sys.exit("usage: python tests/test_docs_commands.py --profile-table")
    print("\n".join(validation_profile_rows()))
