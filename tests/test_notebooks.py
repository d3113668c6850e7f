"""The what-if notebooks in notebooks/ run top to bottom, and are committed without outputs.

Executing them takes about two minutes in all (marker ``notebooks``; deselect with
``pytest -m "not notebooks"``). Strip outputs before committing::

    python tests/test_notebooks.py --strip
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"capacity_planning", "noisy_tenant", "hardware_what_if", "bring_your_profile"}

CELL_TIMEOUT_S = 300
"""Per-cell limit: a cell over it is a hang, not a slow machine (each notebook takes < 2 min)."""


def strip_outputs(path: Path) -> bool:
    """Clear the outputs and execution counts of every code cell; True if the file changed."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(notebook)
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def test_every_notebook_is_here() -> None:
    """The four notebooks of the user guide exist (a rename must update the docs)."""
    assert {p.stem for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    """Code cells carry no outputs and no execution counts (run ``--strip`` before committing)."""
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs; strip them with "
                       "python tests/test_notebooks.py --strip")


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    """Every cell executes without raising, in the notebooks folder (relative paths as for a
    user who opens it in Jupyter), with a fresh kernel of this interpreter."""
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",  # jupyter_client starts it with sys.executable
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError with the cell's traceback
    errors = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    if sys.argv[1:] != ["--strip"]:
        sys.exit("usage: python tests/test_notebooks.py --strip")
    for nb_path in NOTEBOOKS:
        print(f"{nb_path.relative_to(ROOT)}: {'stripped' if strip_outputs(nb_path) else 'clean'}")
