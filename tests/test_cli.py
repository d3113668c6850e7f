"""Tests of the ``servesim`` command line: ``run`` and its outputs, ``--set``, ``--seed``,
``--json``, and the ``profiles list/show/fit`` subcommands.

Commands go through :func:`servesim.cli.main` in-process (the subprocess path is covered by
``tests/test_errors.py``); scenarios are tiny so the whole file runs in a few seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from servesim import load_scenario
from servesim.cli import main
from servesim.latency import Profile
from servesim.metrics import SUMMARY_KEYS
from servesim.simulate import simulate

OUTPUT_FILES = ("summary.json", "requests.parquet", "instances.parquet", "tenants.parquet",
                "timeline.parquet", "scenario.yaml")
FAIRNESS_KEYS = ("jain_index", "service_diff_max", "service_diff_avg")


def tiny_scenario(**workload: Any) -> dict[str, Any]:
    """2 H800 instances, 2 models (many-models form), 20 s of Poisson arrivals."""
    return {
        "name": "cli-tiny",
        "seed": 3,
        "duration": 20,
        "cluster": [{"gpu": "H800", "count": 2}],
        "workload": {
            "models": 2,
            "rate": 1.0,
            "mix": {"qwen2.5-7b": 1, "yi-1.5-9b": 1},
            "lengths": {"kind": "uniform", "input_min": 16, "input_max": 256,
                        "output_min": 4, "output_max": 64},
            **workload,
        },
        "policy": {"name": "fcfs"},
    }


def write_scenario(folder: Path, doc: dict[str, Any], name: str = "scenario.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = cli(argv, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    return out


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenario(tmp_path_factory.mktemp("scenario"), tiny_scenario())


@pytest.fixture(scope="module")
def run_dir(scenario_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``servesim run --out`` of the tiny scenario, shared by the output tests."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", str(scenario_file), "--out", str(out), "--quiet"]) == 0
    return out


# --- run --out ------------------------------------------------------------------------------


def test_run_out_writes_every_output_file(run_dir: Path) -> None:
    """``run --out DIR`` writes the summary, the four Parquet tables and the resolved scenario,
    and leaves no temporary folder behind."""
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(OUTPUT_FILES)
    for name in OUTPUT_FILES:
        assert (run_dir / name).stat().st_size > 0, name


def test_summary_json_has_exactly_the_documented_keys(run_dir: Path) -> None:
    """summary.json holds exactly ``SUMMARY_KEYS`` in order; fairness keys are filled for
    every run (a single-tenant run: Jain 1, service differences 0), and the counts add up."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary) == list(SUMMARY_KEYS)
    assert [summary[key] for key in FAIRNESS_KEYS] == [1.0, 0.0, 0.0]
    assert summary["requests_total"] > 0
    assert summary["requests_finished"] + summary["requests_failed"] <= summary["requests_total"]
    assert 0.0 <= summary["slo_attainment"] <= 1.0


def test_output_tables_match_the_request_count(run_dir: Path) -> None:
    """requests.parquet has one row per request of the summary; instances.parquet one per
    instance of the cluster."""
    summary = json.loads((run_dir / "summary.json").read_text())
    requests = pd.read_parquet(run_dir / "requests.parquet")
    instances = pd.read_parquet(run_dir / "instances.parquet")
    assert len(requests) == summary["requests_total"]
    assert len(instances) == 2
    for name in ("tenants.parquet", "timeline.parquet"):
        assert len(pd.read_parquet(run_dir / name)) >= 1, name


def test_written_scenario_reloads_and_reproduces_the_requests(
    run_dir: Path, scenario_file: Path
) -> None:
    """The resolved scenario.yaml loads back with ``load_scenario`` into the same scenario,
    and simulating it gives the same requests table as the one written."""
    original = load_scenario(scenario_file)
    reloaded = load_scenario(run_dir / "scenario.yaml")
    assert reloaded.to_dict() == original.to_dict()
    again = simulate(reloaded).requests
    written = pd.read_parquet(run_dir / "requests.parquet")
    pd.testing.assert_frame_equal(again.reset_index(drop=True), written, check_dtype=False,
                                  check_categorical=False)


def test_reloaded_scenario_compares_equal(run_dir: Path, scenario_file: Path) -> None:
    """A scenario and the resolved scenario.yaml written for it compare equal."""
    assert load_scenario(run_dir / "scenario.yaml") == load_scenario(scenario_file)


# --- --set, --seed, --json ------------------------------------------------------------------


def test_set_rate_scales_the_request_count(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--set workload.rate=4`` (from 1) gives about four times as many requests (Poisson
    counts of ~40 and ~160: the ratio is within [2.5, 6] far beyond 5 sigma)."""
    base = json.loads(run_ok(["run", str(scenario_file), "--json"], capsys))
    fast = json.loads(run_ok(["run", str(scenario_file), "--json", "--set", "workload.rate=4"],
                             capsys))
    ratio = fast["requests_total"] / base["requests_total"]
    assert 2.5 <= ratio <= 6.0, (base["requests_total"], fast["requests_total"])


def test_set_policy_parameter_is_applied_and_recorded(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--set policy.max_num_seqs=1`` is accepted, and the resolved scenario.yaml records it
    (next to the overridden ``policy.routing``)."""
    out = tmp_path / "out"
    run_ok(["run", str(scenario_file), "--quiet", "--out", str(out),
            "--set", "policy.max_num_seqs=1", "--set", "policy.routing=round-robin"], capsys)
    written = yaml.safe_load((out / "scenario.yaml").read_text())
    assert written["policy"]["max_num_seqs"] == 1
    assert written["policy"]["routing"] == "round-robin"
    assert load_scenario(out / "scenario.yaml").policy.params.max_num_seqs == 1


def test_seed_changes_results_and_same_seed_is_byte_identical(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seed`` overrides the scenario seed: another seed gives other arrivals, the same seed
    twice gives byte-identical requests.parquet files."""
    paths = {}
    for label, seed in (("a", "11"), ("b", "11"), ("c", "12")):
        out = tmp_path / label
        run_ok(["run", str(scenario_file), "--quiet", "--seed", seed, "--out", str(out)], capsys)
        paths[label] = out / "requests.parquet"
        assert yaml.safe_load((out / "scenario.yaml").read_text())["seed"] == int(seed)
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    a, c = pd.read_parquet(paths["a"]), pd.read_parquet(paths["c"])
    assert len(a) != len(c) or not np.array_equal(a["arrival"], c["arrival"])


def test_json_prints_the_summary_as_parseable_json(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --json`` prints only the summary, as JSON with the documented keys."""
    summary = json.loads(run_ok(["run", str(scenario_file), "--json"], capsys))
    assert list(summary) == list(SUMMARY_KEYS)


def test_plain_run_prints_the_summary_table(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--json`` or ``--quiet``, ``run`` prints a title line naming the scenario,
    policy and seed, then one row per summary key."""
    out = run_ok(["run", str(scenario_file)], capsys)
    lines = out.splitlines()
    assert lines[0] == "servesim: cli-tiny (policy fcfs, seed 3)"
    for key in SUMMARY_KEYS:
        assert re.search(rf"^\s+{key}\s+\S", out, re.MULTILINE), key


# --- profiles -------------------------------------------------------------------------------


def test_profiles_list_lists_fitted_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    """``profiles list`` has a header and a row for the fitted H800 / qwen2.5-7b profile."""
    out = run_ok(["profiles", "list"], capsys)
    assert out.splitlines()[0].split()[:3] == ["gpu", "model", "tp"]
    assert re.search(r"^H800\s+qwen2\.5-7b\s+1\s", out, re.MULTILINE)


def test_profiles_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``profiles show H800 qwen2.5-7b --json`` prints the profile: prefill and decode
    coefficients {a, b, c} (non-negative), R^2 per phase and the data source."""
    doc = json.loads(run_ok(["profiles", "show", "H800", "qwen2.5-7b", "--json"], capsys))
    assert (doc["gpu"], doc["model"], doc["tp"]) == ("H800", "qwen2.5-7b", 1)
    for phase in ("prefill", "decode"):
        assert set(doc[phase]) == {"a", "b", "c"}
        assert all(v >= 0 for v in doc[phase].values())
        assert 0 < doc["r2"][phase] <= 1
    assert doc["source"]


def test_profiles_show_text(capsys: pytest.CaptureFixture[str]) -> None:
    """``profiles show`` without ``--json`` prints the prefill and decode formulas."""
    out = run_ok(["profiles", "show", "h800", "qwen2.5-7b"], capsys)
    assert out.startswith("H800 / qwen2.5-7b (TP=1)")
    assert "prefill: T =" in out and "decode:  T =" in out


def test_profiles_show_unknown_gpu_suggests_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown GPU in ``profiles show`` is a one-line error with a did-you-mean, exit 2."""
    code, out, err = cli(["profiles", "show", "H8000", "qwen2.5-7b"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("servesim: error: ")
    assert "'H8000'" in err and "did you mean 'H800'" in err


PREFILL = (6e-3, 2e-5, 2e-9)  # a (s), b (s/token), c (s/token^2)
DECODE = (8e-3, 2e-7, 1e-4)  # a (s), b (s/context token), c (s/request)


def write_grid(folder: Path) -> None:
    """Noise-free ``i{input}b{batch}.json`` files (the format of ``servesim.fitting``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for inp in (16, 64, 128, 256, 512, 1024):
        for batch in (1, 2, 4, 8, 16):
            tokens = inp * batch
            pre = PREFILL[0] + PREFILL[1] * tokens + PREFILL[2] * inp * inp * batch
            dec = DECODE[0] + DECODE[1] * (inp + 5) * batch + DECODE[2] * batch
            doc = {"avg_prefill_latency": pre, "prefill_latencies": [pre] * 5,
                   "avg_decode_latency": dec, "decode_latencies": [dec] * 5}
            (folder / f"i{inp}b{batch}.json").write_text(json.dumps(doc))


def test_profiles_fit_writes_a_readable_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``profiles fit DIR --out FILE`` writes a YAML profile that ``Profile.from_dict`` reads,
    with the canonical GPU/model names and the coefficients the files were made from; without
    ``--out`` the same YAML goes to stdout."""
    write_grid(tmp_path / "grid")
    target = tmp_path / "fitted" / "profile.yaml"
    out = run_ok(["profiles", "fit", str(tmp_path / "grid"), "--gpu", "h800",
                  "--model", "qwen2_5_7b", "--out", str(target)], capsys)
    assert str(target) in out
    profile = Profile.from_dict(yaml.safe_load(target.read_text()), origin=str(target))
    assert (profile.gpu, profile.model) == ("H800", "qwen2.5-7b")
    assert [profile.prefill.a, profile.prefill.b, profile.prefill.c] == pytest.approx(
        PREFILL, rel=0.02)
    assert [profile.decode.a, profile.decode.b, profile.decode.c] == pytest.approx(
        DECODE, rel=0.02)
    printed = run_ok(["profiles", "fit", str(tmp_path / "grid"), "--gpu", "H800",
                      "--model", "qwen2.5-7b"], capsys)
    assert Profile.from_dict(yaml.safe_load(printed)).prefill == profile.prefill
