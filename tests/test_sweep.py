"""Sweeps, goodput search and plots (``servesim.sweep``, ``servesim.plots``, the CLI)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import tiny_scenario_dict

from servesim.cli import main
from servesim.errors import ServesimError
from servesim.metrics import SUMMARY_KEYS
from servesim.sweep import (
    derive_seed,
    goodput,
    grid_points,
    parse_axis,
    run_sweep,
    search_goodput,
)


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    """A 2-GPU, 2-model scenario file with 15 s of arrivals (each run takes milliseconds)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario_dict(duration=15.0)))
    return path


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Tables equal in every column but wall_seconds (the one non-deterministic key)."""
    pd.testing.assert_frame_equal(a.drop(columns="wall_seconds").reset_index(drop=True),
                                  b.drop(columns="wall_seconds").reset_index(drop=True))


# ---------------------------------------------------------------- grid parsing


def test_parse_axis_lists_ranges_and_yaml_values() -> None:
    """Lists take YAML scalars, ranges include STOP and step exactly in decimal."""
    assert parse_axis("workload.rate=0.5,1,2") == ("workload.rate", [0.5, 1, 2])
    assert parse_axis("policy.name=fcfs,aegaeon") == ("policy.name", ["fcfs", "aegaeon"])
    assert parse_axis("workload.models=2:8:2") == ("workload.models", [2, 4, 6, 8])
    assert parse_axis("slo.scale=0.1:0.3:0.1") == ("slo.scale", [0.1, 0.2, 0.3])
    assert parse_axis("workload.rate=1:2:0.4") == ("workload.rate", [1.0, 1.4, 1.8])
    assert parse_axis("engine.max_time=null,100") == ("engine.max_time", [None, 100])
    assert parse_axis("x=[1, 2],[3]") == ("x", [[1, 2], [3]])
    assert parse_axis("policy.name=my.mod:Policy") == ("policy.name", ["my.mod:Policy"])


@pytest.mark.parametrize("text,expected", [
    ("workload.rate", "expected KEY=V1,V2,... or KEY=START:STOP:STEP"),
    ("=1,2", "expected KEY=V1,V2"),
    ("workload..rate=1", "expected KEY=V1,V2"),
    ("workload.rate=", "no values"),
    ("workload.rate=1,,2", "empty value"),
    ("workload.rate=1:4:0", "STEP must be > 0"),
    ("workload.rate=4:1:1", "START must be <= STOP"),
    ("workload.rate=1:4", "a range is START:STOP:STEP"),
    ("workload.rate=1,1.0", "appears twice"),
    ("workload.rate=0:1e9:1", "at most"),
])
def test_parse_axis_errors_name_the_flag(text: str, expected: str) -> None:
    """Malformed --grid values give a one-line error naming the flag and what is allowed."""
    with pytest.raises(ServesimError) as err:
        parse_axis(text)
    assert str(err.value).startswith("--grid") and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_grid_points_and_seeds() -> None:
    """Points are the product with the first key slowest; seed k is scenario seed + k."""
    assert grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert [derive_seed(7, k) for k in range(3)] == [7, 8, 9]
    assert derive_seed(2**63 - 1, 1) == 0


# ---------------------------------------------------------------- sweeps


def test_sweep_writes_one_row_per_point_and_seed(tiny_file: Path, tmp_path: Path) -> None:
    """rows = points x seeds, with grid values, seed, every summary key, status and error."""
    table = run_sweep(tiny_file, {"workload.rate": [1, 2], "slo.scale": [0.5, 1.0]}, seeds=2,
                      out=tmp_path / "out", workers=1)
    on_disk = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(table) == len(on_disk) == 2 * 2 * 2
    for col in ("workload.rate", "slo.scale", "seed_index", "seed", "status", "error",
                *SUMMARY_KEYS):
        assert col in on_disk.columns
    assert set(on_disk["status"]) == {"ok"} and on_disk["error"].isna().all()
    assert list(on_disk["seed"][:2]) == [7, 8]  # scenario seed 7 + seed index
    assert list(on_disk["workload.rate"]) == [1, 1, 1, 1, 2, 2, 2, 2]  # grid order
    _same(table, on_disk)
    # same seed, same point: the same numbers as a single run
    from servesim import load_scenario, simulate

    single = simulate(load_scenario(tiny_file, {"workload.rate": 2, "slo.scale": 1.0}, seed=8))
    row = on_disk[(on_disk["workload.rate"] == 2) & (on_disk["slo.scale"] == 1.0)
                  & (on_disk["seed"] == 8)].iloc[0]
    assert row["slo_attainment"] == single.summary["slo_attainment"]
    assert row["events"] == single.summary["events"]


def test_failing_point_is_recorded_and_sweep_goes_on(tiny_file: Path, tmp_path: Path) -> None:
    """A point that raises (3 pinned models on 2 GPUs) is a failed row; the others run."""
    table = run_sweep(tiny_file, {"workload.models": [2, 3, 1]}, out=tmp_path / "out",
                      workers=2)
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert "3 models need at least 3 instances" in table["error"][1]
    assert math.isnan(table["slo_attainment"][1]) and table["wall_seconds"][1] >= 0
    assert table["requests_total"][2] > 0


def test_resume_skips_done_rows_and_matches_uninterrupted(tiny_file: Path,
                                                         tmp_path: Path) -> None:
    """--resume runs only missing (point, seed) rows; the table equals a one-go sweep."""
    out = tmp_path / "out"
    run_sweep(tiny_file, {"workload.rate": [1, 2]}, seeds=2, out=out, workers=1)
    seen = []
    table = run_sweep(tiny_file, {"workload.rate": [1, 2, 3]}, seeds=3, out=out, workers=1,
                      resume=True, progress=lambda p: seen.append((p.total, p.skipped)))
    assert seen[-1] == (9 - 4, 4)
    one_go = run_sweep(tiny_file, {"workload.rate": [1, 2, 3]}, seeds=3, workers=1)
    _same(table, one_go)


def test_existing_results_refused_and_mismatch_named(tiny_file: Path, tmp_path: Path) -> None:
    """Without --resume an existing file is refused; another scenario is named field by field."""
    out = tmp_path / "out"
    run_sweep(tiny_file, {"workload.rate": [1]}, out=out, workers=1)
    with pytest.raises(ServesimError, match="pass --resume"):
        run_sweep(tiny_file, {"workload.rate": [1]}, out=out, workers=1)
    with pytest.raises(ServesimError, match=r"different scenario \(slo.tbt: 0.1 in the file, "
                                            r"0.2 now\)"):
        run_sweep(tiny_file, {"workload.rate": [1]}, sets={"slo.tbt": 0.2}, out=out,
                  resume=True, workers=1)
    with pytest.raises(ServesimError, match="grid keys workload.rate, not slo.scale"):
        run_sweep(tiny_file, {"slo.scale": [1]}, out=out, resume=True, workers=1)
    table = run_sweep(tiny_file, {"workload.rate": [2]}, out=out, overwrite=True, workers=1)
    assert list(table["workload.rate"]) == [2]


def test_process_pool_and_dask_give_identical_rows(tiny_file: Path) -> None:
    """One process, a process pool and a Dask LocalCluster give the same rows, bit for bit."""
    distributed = pytest.importorskip("distributed")
    grid = {"workload.rate": [1.5, 3], "slo.scale": [0.5]}
    inline = run_sweep(tiny_file, grid, seeds=2, workers=1)
    pool = run_sweep(tiny_file, grid, seeds=2, workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = run_sweep(tiny_file, grid, seeds=2, dask=client)
    _same(inline, pool)
    _same(inline, on_dask)
    assert (inline["status"] == "ok").all()


def test_cli_sweep_prints_table_and_fails_fast_on_bad_keys(
        tiny_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown keys and bad values stop the sweep before any run (exit 2, one line)."""
    out = tmp_path / "out"
    assert main(["sweep", str(tiny_file), "--grid", "workload.rat=1,2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "workload.rat: unknown field (did you mean 'rate'?)" in err
    assert main(["sweep", str(tiny_file), "--grid", "workload.rate=1,-1", "--out",
                 str(out)]) == 2
    assert "grid point workload.rate=-1" in capsys.readouterr().err
    assert main(["sweep", str(tiny_file), "--grid", "workload.rate=3:1:1"]) == 2
    assert "--grid workload.rate=3:1:1: START must be <= STOP" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", str(tiny_file), "--grid", "workload.rate=1,2", "--seeds", "2",
                 "--workers", "1", "--out", str(out), "--quiet"]) == 0
    assert len(pd.read_parquet(out / "results.parquet")) == 4


def test_dask_unreachable_address_is_a_clear_error(
        tiny_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable scheduler gives a one-line error after the bounded timeout."""
    pytest.importorskip("distributed")
    t0 = time.perf_counter()
    code = main(["sweep", str(tiny_file), "--grid", "workload.rate=1", "--dask",
                 "tcp://127.0.0.1:9", "--dask-timeout", "1", "--out", "unused", "--quiet"])
    assert code == 2 and time.perf_counter() - t0 < 20
    assert "--dask tcp://127.0.0.1:9: cannot connect within 1 s" in capsys.readouterr().err


def test_ctrl_c_leaves_valid_file_and_resume_completes(tiny_file: Path, tmp_path: Path) -> None:
    """SIGINT after the first row: exit 130, a readable file; --resume finishes the table."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "servesim.cli", "sweep", str(tiny_file), "--grid",
           "workload.rate=1:12:1", "--set", "duration=40", "--workers", "1", "--out",
           str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "results.parquet").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    partial = pd.read_parquet(out / "results.parquet")
    assert 1 <= len(partial) < 12 and (partial["status"] == "ok").all()
    assert not [p for p in os.listdir(out) if p != "results.parquet"]  # no temporary left
    resumed = run_sweep(tiny_file, {"workload.rate": list(range(1, 13))},
                        sets={"duration": 40}, out=out, resume=True, workers=1)
    one_go = run_sweep(tiny_file, {"workload.rate": list(range(1, 13))},
                       sets={"duration": 40}, workers=1)
    _same(resumed, one_go)


# ---------------------------------------------------------------- goodput


def test_search_goodput_finds_boundary_of_monotone_function() -> None:
    """Bisection on 1 - x/100 >= 0.9 finds x = 10 (integers exactly; floats within tol)."""
    calls: list[float] = []

    def metric(x: float) -> float:
        calls.append(x)
        return 1 - x / 100

    ints = search_goodput(metric, 1, 64, target=0.9, integer=True)
    assert (ints.best, ints.bound) == (10, 11) and not ints.warnings
    assert len(calls) <= 2 + math.ceil(math.log2(63))
    floats = search_goodput(metric, 0.5, 64.0, target=0.9, tol=0.01)
    assert floats.best is not None and floats.bound is not None
    assert floats.best <= 10 < floats.bound and floats.bound - floats.best <= 0.01
    assert search_goodput(metric, 1, 5, target=0.9).bound is None  # HI still meets
    assert search_goodput(metric, 20, 30, target=0.9).best is None  # LO misses already
    seeds = search_goodput(lambda x: [1 - x / 100 + 0.01, 1 - x / 100 - 0.01], 1, 64,
                           target=0.9, integer=True)
    assert seeds.best == 10 and seeds.points[0].per_seed == (1.0, 0.98)


def test_search_goodput_warns_when_not_monotone() -> None:
    """Points that contradict 'the metric falls as the value grows' produce warnings."""
    result = search_goodput(lambda x: 0.5 if x < 5 else 1.0, 1, 10, target=0.9, integer=True,
                            label="workload.rate")
    assert result.best == 10
    assert any("not monotone" in w and "workload.rate=1" in w for w in result.warnings)
    assert any("rises" in w for w in result.warnings)


def test_goodput_on_a_real_scenario(tiny_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI prints every point evaluated and the largest rate meeting the target."""
    assert main(["goodput", str(tiny_file), "--vary", "workload.rate=1:60", "--tol", "4",
                 "--target", "0.9"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(lines) >= 3 and "workload.rate=1 " in lines[0]
    assert out.splitlines()[-1].startswith("goodput: workload.rate = ")
    result = goodput(tiny_file, "workload.models", 1, 2, target=0.5)  # integer field
    assert result.best == 2 and all(isinstance(p.value, int) for p in result.points)
    assert main(["goodput", str(tiny_file), "--vary", "workload.rate=5:1"]) == 2
    assert "LO must be < HI" in capsys.readouterr().err
    assert main(["goodput", str(tiny_file), "--vary", "workload.rate=1:5", "--metric",
                 "slo_atainment"]) == 2
    assert "did you mean 'slo_attainment'" in capsys.readouterr().err


# ---------------------------------------------------------------- plots


def _synthetic_results(path: Path) -> Path:
    rows = [{"workload.rate": rate, "policy.name": policy, "seed": seed, "status": "ok",
             "slo_attainment": 1 - rate / 10 - (0.05 if policy == "b" else 0) + seed / 100}
            for rate in (1, 2, 4) for policy in ("a", "b") for seed in range(3)]
    rows.append({"workload.rate": 8, "policy.name": "a", "seed": 0, "status": "failed",
                 "slo_attainment": None})
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_plot_writes_png_and_svg_without_display(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`servesim plot` renders mean lines with CI bands to PNG and SVG files."""
    results = _synthetic_results(tmp_path / "results.parquet")
    png = tmp_path / "fig.png"
    assert main(["plot", str(results), "--x", "workload.rate", "--y", "slo_attainment",
                 "--hue", "policy.name", "--target", "0.9", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    svg = tmp_path / "fig.svg"
    assert main(["plot", str(tmp_path), "--x", "policy.name", "--y", "slo_attainment",
                 "--col", "workload.rate", "--out", str(svg)]) == 0
    assert "<svg" in svg.read_text()
    assert main(["plot", str(results), "--x", "workload.rate", "--y", "slo_atainment"]) == 2
    assert "did you mean 'slo_attainment'" in capsys.readouterr().err
    assert main(["plot", str(results), "--x", "workload.rate", "--y", "slo_attainment",
                 "--out", str(tmp_path / "fig.jpg")]) == 2


def test_summarize_gives_t_interval_over_seeds(tmp_path: Path) -> None:
    """The band is mean +- t(0.975, n-1) sd / sqrt(n) over seeds; failed rows are left out."""
    from servesim.plots import load_results, summarize

    table = load_results(_synthetic_results(tmp_path / "results.parquet"))
    stats = summarize(table[table["status"] == "ok"], "workload.rate", "slo_attainment",
                      ["policy.name"])
    first = stats.iloc[0]
    assert first["n"] == 3 and first["mean"] == pytest.approx(0.91)
    assert first["high"] - first["mean"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3),
                                                          rel=1e-5)


def test_servesim_import_stays_light() -> None:
    """`import servesim` loads neither Dask nor matplotlib; servesim.sweep loads on use."""
    code = ("import sys, servesim; assert 'distributed' not in sys.modules; "
            "assert 'matplotlib' not in sys.modules; servesim.sweep.run_sweep; "
            "assert 'distributed' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
