"""Tests of the bad-input contract of the ``servesim`` command line.

Every user mistake (a scenario, a trace, a CLI flag) must give exactly one line on stderr,
``servesim: error: ...``, that names the field path (or file:line) and the bad value or what
is allowed; exit code 2; no traceback; and no output in ``--out`` that looks complete.

Most cases call :func:`servesim.cli.main` in-process for speed; the ``subprocess`` cases run
``python -m servesim.cli`` to prove that nothing else (a traceback, a warning) reaches stderr.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from servesim.cli import main

BASE: dict[str, Any] = {
    "name": "errors",
    "seed": 1,
    "duration": 20,
    "cluster": [{"gpu": "H800", "count": 2}],
    "models": [{"name": "qwen2.5-7b"}, {"name": "yi-1.5-9b"}],
    "workload": {
        "rate": 0.5,
        "arrival": {"kind": "poisson"},
        "lengths": {"kind": "fixed", "input": 64, "output": 16},
    },
    "policy": {"name": "fcfs"},
    "slo": {"ttft": 10.0, "tbt": 0.1},
}

TRACE_HEADER = "Request Time,Model Name,Input Length,Output Length\n"


def scenario(change: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
    """A copy of the valid ``BASE`` scenario with ``change`` applied to it."""
    doc = copy.deepcopy(BASE)
    if change is not None:
        change(doc)
    return doc


def write(folder: Path, doc: Any = None, *, text: str | None = None,
          name: str = "bad.yaml") -> Path:
    path = folder / name
    path.write_text(text if text is not None else yaml.safe_dump(doc, sort_keys=False),
                    encoding="utf-8")
    return path


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def cli_subprocess(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m servesim.cli`` in a child process; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "servesim.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code: int, out: str, err: str, *fragments: str,
                          out_dir: Path | None = None) -> None:
    """The contract: exit 2, one ``servesim: error:`` line naming ``fragments``, no traceback,
    nothing in ``out_dir`` (an empty folder is allowed: it cannot look like a finished run)."""
    assert code == 2, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("servesim: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if out_dir is not None:
        assert not (out_dir / "summary.json").exists()
        assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


def run_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str], path: Path,
                 *extra: str) -> tuple[int, str, str, Path]:
    out_dir = tmp_path / "out"
    code, out, err = cli(["run", str(path), "--out", str(out_dir), "--quiet", *extra], capsys)
    return code, out, err, out_dir


def test_base_scenario_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The scenario every mistake starts from runs and writes a summary (so each error below
    is caused by its one change)."""
    code, _, err, out_dir = run_scenario(tmp_path, capsys, write(tmp_path, BASE))
    assert code == 0, err
    assert (out_dir / "summary.json").exists()


# (id, change of BASE, fragments the message must contain)
SCENARIO_MISTAKES: list[tuple[str, Callable[[dict[str, Any]], object], tuple[str, ...]]] = [
    ("unknown-top-level-key", lambda d: d.update(durtion=5),
     ("durtion: unknown field", "did you mean 'duration'", "allowed:")),
    ("unknown-gpu", lambda d: d["cluster"][0].update(gpu="H801"),
     ("cluster[0].gpu:", "'H801'", "did you mean 'H800'")),
    ("unknown-arrival-kind", lambda d: d["workload"]["arrival"].update(kind="poison"),
     ("workload.arrival.kind:", "'poison'", "did you mean 'poisson'", "allowed:")),
    ("unknown-lengths-kind", lambda d: d["workload"]["lengths"].update(kind="lognorm"),
     ("workload.lengths.kind:", "'lognorm'", "lognormal")),
    ("unknown-nested-key", lambda d: d["workload"]["lengths"].update(ouput=3),
     ("workload.lengths.ouput: unknown field", "did you mean 'output'")),
    ("policy-name-typo", lambda d: d["policy"].update(name="fcsf"),
     ("policy.name:", "'fcsf'", "did you mean 'fcfs'")),
    ("policy-param-unknown", lambda d: d["policy"].update(max_num_seq=8),
     ("policy.max_num_seq: unknown field", "did you mean 'max_num_seqs'")),
    ("policy-param-choice", lambda d: d["policy"].update(routing="random"),
     ("policy.routing:", "'random'", "least-loaded", "round-robin")),
    ("policy-param-bound", lambda d: d["policy"].update(watermark=1.0),
     ("policy.watermark:", "< 1", "1.0")),
    ("policy-not-a-mapping", lambda d: d.update(policy=[1]),
     ("policy:", "mapping", "[1]")),
    ("slo-tbt-negative", lambda d: d["slo"].update(tbt=-0.1),
     ("slo.tbt:", "> 0", "-0.1")),
    ("slo-ttft-nan", lambda d: d["slo"].update(ttft=float("nan")),
     ("slo.ttft:", "finite", "nan")),
    ("usable-fraction-above-1", lambda d: d.update(engine={"usable_fraction": 1.5}),
     ("engine.usable_fraction:", "<= 1", "1.5")),
    ("rate-zero", lambda d: d["workload"].update(rate=0),
     ("workload.rate:", "> 0", "got 0")),
    ("count-zero", lambda d: d["cluster"][0].update(count=0),
     ("cluster[0].count:", ">= 1", "got 0")),
    ("count-wrong-type", lambda d: d["cluster"][0].update(count="two"),
     ("cluster[0].count:", "integer", "'two'")),
    ("seed-string", lambda d: d.update(seed="abc"),
     ("seed:", "integer", "'abc'")),
    ("duration-negative", lambda d: d.update(duration=-5),
     ("duration:", "> 0", "-5")),
    ("cluster-not-a-list", lambda d: d.update(cluster={"gpu": "H800"}),
     ("cluster:", "expected a list")),
    ("cluster-empty", lambda d: d.update(cluster=[]),
     ("cluster:", "at least one instance group")),
    ("workload-not-a-mapping", lambda d: d.update(workload=5),
     ("workload:", "mapping", "5")),
    ("model-unknown-base", lambda d: d["models"].append({"name": "mine", "base": "qwen2.5-8b"}),
     ("models[2].base:", "'qwen2.5-8b'", "did you mean 'qwen2.5-7b'")),
    ("model-unknown-name", lambda d: d["models"].append({"name": "llama-3-8b"}),
     ("models[2].name:", "'llama-3-8b'", "known:")),
    ("mix-weight-zero", lambda d: d["workload"].update(mix={"qwen2.5-7b": 0}),
     ("workload.mix.qwen2.5-7b:", ">= 1", "got 0")),
    ("mix-unknown-model", lambda d: d["workload"].update(mix={"qwen2.5-7x": 1}),
     ("workload.mix.qwen2.5-7x:", "did you mean 'qwen2.5-7b'")),
    ("lengths-min-above-max",
     lambda d: d["workload"]["lengths"].update(kind="uniform", input_min=100, input_max=10),
     ("workload.lengths.input_min:", "<= input_max", "10")),
    ("empirical-without-file", lambda d: d["workload"]["lengths"].update(kind="empirical"),
     ("workload.lengths.file:", "required", "empirical")),
    ("max-context-too-small", lambda d: d["workload"].update(max_context=1),
     ("workload.max_context:", ">= 2", "got 1")),
    ("source-model-not-deployed", lambda d: d["workload"].update(sources=[{"model": "qwen"}]),
     ("workload.sources[0].model:", "'qwen'", "deployed: qwen2.5-7b, yi-1.5-9b")),
    ("model-deployed-twice", lambda d: d["models"].append({"name": "qwen2.5-7b"}),
     ("models:", "'qwen2.5-7b'", "twice")),
    ("fcfs-more-models-than-instances", lambda d: d["cluster"][0].update(count=1),
     ("fcfs", "2 models need at least 2 instances", "the cluster has 1")),
]


@pytest.mark.parametrize(("change", "fragments"), [(c, f) for _, c, f in SCENARIO_MISTAKES],
                         ids=[i for i, _, _ in SCENARIO_MISTAKES])
def test_scenario_mistake_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    change: Callable[[dict[str, Any]], object], fragments: tuple[str, ...],
) -> None:
    """Each mistake in a scenario (bad key, type, bound, name; at every depth) is one line
    naming the field path and the bad value or what is allowed, exit 2, no output files."""
    code, out, err, out_dir = run_scenario(tmp_path, capsys, write(tmp_path, scenario(change)))
    assert_one_line_error(code, out, err, *fragments, out_dir=out_dir)


def test_model_too_big_for_gpu_states_both_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """llama-2-70b on one A10 is refused before the run; the message names the model and the
    GPU and states both sizes (weights and usable memory)."""
    doc = scenario(lambda d: d.update(cluster=[{"gpu": "A10"}], models=[{"name": "llama-2-70b"}]))
    code, out, err, out_dir = run_scenario(tmp_path, capsys, write(tmp_path, doc))
    assert_one_line_error(code, out, err, "models", "llama-2-70b", "A10", out_dir=out_dir)
    assert len(re.findall(r"\d+(?:\.\d+)? GiB", err)) >= 2, err


# --- the scenario file itself ---------------------------------------------------------------


def test_empty_file_names_what_is_missing(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An empty scenario file takes every default and then lacks models: the error names the
    file and the `models` field and says how to deploy models."""
    path = write(tmp_path, text="")
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, str(path), "models:", "workload.models",
                          out_dir=out_dir)


def test_yaml_list_is_not_a_scenario(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML document that is a list is refused: the file must hold a mapping."""
    path = write(tmp_path, text="- name: a\n- name: b\n")
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, str(path), "mapping", "list", out_dir=out_dir)


def test_missing_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scenario path that does not exist is named in the error."""
    code, out, err, out_dir = run_scenario(tmp_path, capsys, tmp_path / "nosuch.yaml")
    assert_one_line_error(code, out, err, "nosuch.yaml", "no such scenario file",
                          out_dir=out_dir)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A YAML syntax error (a mis-indented key on line 5) is reported as file:line by the real
    entry point, in a child process: one line, no traceback."""
    text = "name: x\nduration: 20\ncluster:\n  - gpu: H800\n   count: 2\n"
    path = write(tmp_path, text=text)
    out_dir = tmp_path / "out"
    code, out, err = cli_subprocess(["run", str(path), "--out", str(out_dir)], tmp_path)
    assert_one_line_error(code, out, err, f"{path}:5", "invalid YAML", out_dir=out_dir)


def test_yaml_tab_indent_names_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tab where YAML wants spaces is a syntax error at its line."""
    path = write(tmp_path, text="name: x\n\tduration: 20\n")
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, f"{path}:2", "invalid YAML", out_dir=out_dir)


# --- traces ---------------------------------------------------------------------------------


def trace_scenario(trace: str) -> dict[str, Any]:
    """``BASE`` replaying ``trace`` (models named in the trace, shapes from the mix)."""
    def change(d: dict[str, Any]) -> None:
        del d["models"]
        d["workload"].update(trace=trace, mix={"qwen2.5-7b": 1})

    return scenario(change)


def test_trace_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace that does not exist is named in the error, before any output is written."""
    path = write(tmp_path, trace_scenario("missing.csv"))
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, "missing.csv", "not found", out_dir=out_dir)


def test_trace_bad_row_names_file_and_line(tmp_path: Path) -> None:
    """A non-numeric Input Length on line 4 of a trace (after a blank line) is reported as
    trace:4 with the bad cell, by the real entry point in a child process."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEADER + "00:00:00.054,m0,100,20\n\n00:00:01.000,m1,abc,10\n"
                     "00:00:02.000,m0,50,10\n")
    path = write(tmp_path, trace_scenario("trace.csv"))
    out_dir = tmp_path / "out"
    code, out, err = cli_subprocess(["run", str(path), "--out", str(out_dir)], tmp_path)
    assert_one_line_error(code, out, err, f"{trace}:4", "Input Length", "'abc'",
                          out_dir=out_dir)


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("00:00:00.054,m0,100,20\n00:00:01.000,m1,5,0\n",
         (":3:", "Output Length 0", ">= 1")),
        ("00:00:00.054,m0,100,20\n0:61:01.000,m1,5,4\n",
         (":3:", "'0:61:01.000'", "hh:mm:ss")),
        ("00:00:02.000,m0,100,20\n00:00:01.000,m1,5,4\n",
         (":3:", "before the previous row", "sort")),
        ("00:00:00.054,m0,100,20\n00:00:01.000,,5,4\n",
         (":3:", "Model Name is empty")),
        ("", (":1:", "empty trace")),
        ("00:00:00.054,m0,100,20\n00:00:01.000,m1,5,4,9,9\n", (":3:", "6 cells", "4")),
    ],
    ids=["zero-output", "bad-time", "out-of-order", "empty-model", "no-rows", "extra-cells"],
)
def test_trace_row_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                            fragments: tuple[str, ...]) -> None:
    """Bad trace rows are reported at their file line with the bad cell or what is allowed."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE_HEADER + body)
    path = write(tmp_path, trace_scenario("trace.csv"))
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, str(trace), *fragments, out_dir=out_dir)


def test_trace_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace whose header lacks a required column names the column and the header found."""
    trace = tmp_path / "trace.csv"
    trace.write_text("Time,Model\n1,m0\n")
    path = write(tmp_path, trace_scenario("trace.csv"))
    code, out, err, out_dir = run_scenario(tmp_path, capsys, path)
    assert_one_line_error(code, out, err, f"{trace}:1", "'Request Time'", "Time, Model",
                          out_dir=out_dir)


# --- command-line flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "fragments"),
    [
        (["workload.rate"], ("--set 'workload.rate'", "path.to.field=value")),
        (["=3"], ("--set '=3'", "path.to.field=value")),
        (["workload..rate=1"], ("--set workload..rate", "path.to.field=value")),
        (["unknown.path=3"], ("unknown: unknown field", "allowed:")),
        (["workload.rat=3"], ("workload.rat: unknown field", "did you mean 'rate'")),
        (["workload.rate=abc"], ("workload.rate:", "number", "'abc'")),
        (["workload.rate=-1"], ("workload.rate:", "> 0", "-1")),
        (["cluster.5.gpu=H100"], ("cluster.5:", "list has 1")),
        (["seed.x=1"], ("seed.x:", "not a mapping")),
        (["policy.name=fcsf"], ("policy.name:", "did you mean 'fcfs'")),
    ],
    ids=["no-equals", "no-path", "empty-part", "unknown-path", "typo", "bad-type", "negative",
         "list-index", "scalar-parent", "policy-typo"],
)
def test_bad_set(tmp_path: Path, capsys: pytest.CaptureFixture[str], sets: list[str],
                 fragments: tuple[str, ...]) -> None:
    """Malformed ``--set`` pairs and overrides that make the scenario invalid are one-line
    errors naming the path."""
    args = [a for s in sets for a in ("--set", s)]
    code, out, err, out_dir = run_scenario(tmp_path, capsys, write(tmp_path, BASE), *args)
    assert_one_line_error(code, out, err, *fragments, out_dir=out_dir)


def test_bad_seed_flag_in_subprocess(tmp_path: Path) -> None:
    """``--seed abc`` is an argparse error: one line naming the flag and the value, exit 2."""
    path = write(tmp_path, BASE)
    out_dir = tmp_path / "out"
    code, out, err = cli_subprocess(["run", str(path), "--seed", "abc", "--out", str(out_dir)],
                                    tmp_path)
    assert_one_line_error(code, out, err, "--seed", "'abc'", out_dir=out_dir)


def test_negative_seed_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--seed -1`` parses but fails the seed bound, which is stated exactly."""
    code, out, err, out_dir = run_scenario(tmp_path, capsys, write(tmp_path, BASE),
                                           "--seed", "-1")
    assert_one_line_error(code, out, err, "seed:", ">= 0", "< 9223372036854775808", "-1",
                          out_dir=out_dir)


def test_fcfs_capacity_error_in_subprocess(tmp_path: Path) -> None:
    """An error found while building the world (fcfs with 2 models on 1 instance) also reaches
    the real entry point as one line, and leaves nothing in --out."""
    path = write(tmp_path, scenario(lambda d: d["cluster"][0].update(count=1)))
    out_dir = tmp_path / "out"
    code, out, err = cli_subprocess(["run", str(path), "--out", str(out_dir)], tmp_path)
    assert_one_line_error(code, out, err, "fcfs", "2 models", out_dir=out_dir)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["runn", "x.yaml"], ("'runn'", "'run'", "'profiles'")),
        (["run", "{scenario}", "--bogus"], ("unrecognized arguments: --bogus",)),
        ([], ("required: command",)),
        (["profiles", "bogus"], ("'bogus'", "'list', 'show', 'fit'")),
        (["profiles", "show", "H800", "qwen2.5-7b", "--tp", "0"], ("--tp", ">= 1", "got 0")),
        (["profiles", "show", "H800", "qwen2.5-7b", "--tp", "x"], ("--tp", "'x'")),
        (["profiles", "show", "H801", "qwen2.5-7b"], ("'H801'", "did you mean 'H800'")),
        (["profiles", "show", "H800", "qwen2.5-7"], ("'qwen2.5-7'", "did you mean 'qwen2.5-7b'")),
        (["profiles", "fit", "{tmp}/none", "--gpu", "H800", "--model", "qwen2.5-7b"],
         ("none", "not a directory")),
        (["profiles", "fit", "{tmp}", "--gpu", "H800", "--model", "qwen2.5-7b"],
         ("no i{input_len}b{batch}.json files",)),
        (["profiles", "fit", "{tmp}", "--gpu", "H800"], ("--model",)),
    ],
    ids=["unknown-subcommand", "unknown-flag", "no-subcommand", "unknown-profiles-command",
         "tp-zero", "tp-not-int", "show-unknown-gpu", "show-unknown-model", "fit-no-dir",
         "fit-empty-dir", "fit-missing-flag"],
)
def test_bad_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                          fragments: tuple[str, ...]) -> None:
    """Unknown subcommands and flags, bad flag values and unknown names on the command line are
    one-line errors with exit code 2."""
    scenario_path = write(tmp_path, BASE)
    argv = [a.format(scenario=scenario_path, tmp=tmp_path) for a in argv]
    code, out, err = cli(argv, capsys)
    assert_one_line_error(code, out, err, *fragments)


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--out`` naming an existing file fails before the run, as one line naming the flag."""
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    code, out, err = cli(["run", str(write(tmp_path, BASE)), "--quiet", "--out", str(blocker)],
                         capsys)
    assert_one_line_error(code, out, err, "--out", str(blocker))
    assert blocker.read_text() == "not a folder"
