"""servesim regress: golden-metric comparison of a scenario suite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from servesim.cli import main
from servesim.regress import compare, run_suite

ROOT = Path(__file__).resolve().parents[1]


def _suite(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(ROOT / "scenarios" / "ci" / "fcfs-overload.yaml", suite / "small.yaml")
    return suite


def test_update_then_compare_passes(tmp_path, capsys) -> None:
    """--update writes one golden per scenario; a rerun matches exactly and exits 0."""
    suite = _suite(tmp_path)
    assert main(["regress", "--suite", str(suite), "--update"]) == 0
    assert (suite / "golden" / "small.json").exists()
    assert main(["regress", "--suite", str(suite)]) == 0
    assert "ok: 1 scenarios" in capsys.readouterr().out


def test_changed_metric_is_a_regression(tmp_path, capsys) -> None:
    """A golden value that differs from the run is reported in the table and exits 1."""
    suite = _suite(tmp_path)
    main(["regress", "--suite", str(suite), "--update"])
    gold = suite / "golden" / "small.json"
    doc = json.loads(gold.read_text())
    doc["requests_finished"] += 1
    doc["slo_attainment"] = (doc["slo_attainment"] or 0) + 0.01
    gold.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["regress", "--suite", str(suite)]) == 1
    out = capsys.readouterr().out
    assert "requests_finished" in out and "slo_attainment" in out and "FAILED" in out


def test_per_metric_tolerance_and_missing_golden(tmp_path) -> None:
    """tolerances.yaml loosens one metric; a scenario without golden file fails."""
    suite = _suite(tmp_path)
    report = run_suite(suite)
    assert report.missing_golden == ["small"] and not report.ok
    run_suite(suite, update=True)
    gold = suite / "golden" / "small.json"
    doc = json.loads(gold.read_text())
    doc["ttft_p50"] *= 1.001
    gold.write_text(json.dumps(doc))
    assert not run_suite(suite).ok
    (suite / "golden" / "tolerances.yaml").write_text("ttft_p50: 0.01\n")
    assert run_suite(suite).ok


def test_compare_rules() -> None:
    """Integers compare exactly, floats within rtol, wall_seconds is ignored, nulls match."""
    g = {"events": 10, "slo_attainment": 0.5, "wall_seconds": 1.0, "jain_index": None}
    assert compare("s", g, {**g, "wall_seconds": 9.0}, 1e-9, {}) == []
    assert [d.metric for d in compare("s", g, {**g, "events": 11}, 1.0, {})] == ["events"]
    assert compare("s", g, {**g, "slo_attainment": 0.5 + 1e-12}, 1e-9, {}) == []
    assert [d.metric for d in compare("s", g, {**g, "jain_index": 0.9}, 1e-9, {})] == [
        "jain_index"]


def test_bad_suite_is_a_one_line_error(tmp_path, capsys) -> None:
    """A missing suite folder exits 2 with one line."""
    assert main(["regress", "--suite", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


def test_committed_suite_matches_golden() -> None:
    """The committed CI suite reproduces its golden metrics (what .ci/run also checks)."""
    report = run_suite(ROOT / "scenarios" / "ci")
    assert report.ok, report.differences
