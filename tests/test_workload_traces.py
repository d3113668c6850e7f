"""Trace readers (Azure, Mooncake, VTC, BurstGPT, ServeGen), format detection, replay in a
scenario (time scaling, rate rescaling, trace_start, model assignment) and
``servesim traces stats``.

Real traces come from ../shared/data (skipped when absent); BurstGPT, whose data is not
there, is tested on small files the tests write. Statistical checks use fixed seeds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from servesim.cli import main
from servesim.errors import ScenarioError, TraceError
from servesim.scenario import scenario_from_dict
from servesim.simulate import prepare
from servesim.workload import servegen
from servesim.workload.formats import detect_format, read_trace
from servesim.workload.stats import STATS_KEYS, file_stats, trace_stats

AZURE = "azure_llm_2023/AzureLLMInferenceTrace_{}.csv"
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- real traces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "requests", "rate", "cv"),
    [("code", 8819, 2.57, 13.15), ("conv", 19366, 5.53, 1.094)],
)
def test_azure_traces_have_their_published_character(
    shared_data: Path, kind: str, requests: int, rate: float, cv: float
) -> None:
    """Azure 2023 code: ~2.6 req/s and very bursty (inter-arrival CV ~13); conversation:
    ~5.5 req/s with CV ~1.1; both about an hour long."""
    stats = file_stats(shared_data / AZURE.format(kind))
    assert stats["format"] == "azure" and stats["requests"] == requests
    assert stats["rate_rps"] == pytest.approx(rate, abs=0.01)
    assert stats["interarrival_cv"] == pytest.approx(cv, abs=0.01)
    assert 3400 < stats["duration_s"] < 3600
    assert stats["input"]["median"] > stats["output"]["median"]


def test_mooncake_traces(shared_data: Path) -> None:
    """Mooncake timestamps are milliseconds: the conversation trace spans ~1 hour with the
    README's 12,031 requests and mean input ~12,035; the synthetic one is Poisson (CV ~1)."""
    conversation = read_trace(shared_data / "mooncake/conversation_trace.jsonl")
    assert len(conversation) == 12031 and conversation.model is None
    assert conversation.time[-1] == pytest.approx(3536.999)
    assert conversation.input.mean() == pytest.approx(12035.06, abs=0.01)
    synthetic = file_stats(shared_data / "mooncake/synthetic_trace.jsonl")
    assert synthetic["requests"] == 3993
    assert synthetic["interarrival_cv"] == pytest.approx(1.0, abs=0.05)


def test_vtc_arena_trace(shared_data: Path) -> None:
    """The VTC arena trace: 1,500 requests over 600 s from 27 tenants."""
    trace = read_trace(shared_data / "vtc/real_trace.csv")
    assert len(trace) == 1500 and trace.tenant is not None
    assert len(set(trace.tenant)) == 27 and trace.time[-1] == pytest.approx(600.0)


def test_formats_detected(shared_data: Path) -> None:
    """Every shared trace's format is detected from its name or first line."""
    expected = {
        AZURE.format("code"): "azure",
        "mooncake/synthetic_trace.jsonl": "mooncake",
        "vtc/real_trace.csv": "vtc",
        "aegaeon/workloads/synth-64-0.1-1.0-1.0.csv": "aegaeon",
        "servegen/language/m-small/chunk-1-trace.csv": "servegen",
        "servegen/language/m-small": "servegen",
    }
    for name, fmt in expected.items():
        assert detect_format(shared_data / name) == fmt, name


def test_servegen_folder_regenerates_its_rates(shared_data: Path) -> None:
    """A ServeGen folder is a pool of tenants with identical 600 s windows; regenerated
    arrivals over an hour match the expected count within 5 sigma of a Poisson count (the
    windows' CVs make the spread larger only a little at this volume), and the same seed gives
    the same arrivals."""
    rates = servegen.read_servegen(shared_data / "servegen/language/m-large")
    assert len(rates.tenants) == 162 and rates.rate.shape == (162, 2016)
    assert set(np.diff(rates.window_start).tolist()) == {600.0}
    start, end = 72000.0, 75600.0
    times, tenant = servegen.generate_arrivals(rates, start, end, np.random.default_rng(3))
    expected = rates.expected_count(start, end)
    assert abs(times.size - expected) <= 5 * math.sqrt(expected) * 3
    assert np.all(np.diff(times) >= 0) and times[0] >= start and times[-1] < end
    busiest = int(np.argmax(rates.rate[:, 120:126].sum(axis=1)))
    assert np.bincount(tenant).argmax() == busiest
    again, _ = servegen.generate_arrivals(rates, start, end, np.random.default_rng(3))
    np.testing.assert_array_equal(times, again)


@pytest.mark.parametrize(("family", "cv"), [("Gamma", 0.5), ("Gamma", 3.0), ("Weibull", 0.7),
                                           ("Weibull", 4.0), ("Exponential", 1.0)])
def test_servegen_window_laws(tmp_path: Path, family: str, cv: float) -> None:
    """Inside one long window the gaps have mean 1/rate and the window's CV (within 5 %)."""
    path = write(tmp_path, f"0,2.0,{cv},{family},0,0\n100000,0,0,,0,0\n", "chunk-0-trace.csv")
    rates = servegen.read_servegen(path)
    times, _ = servegen.generate_arrivals(rates, 0.0, 100000.0, np.random.default_rng(2))
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(0.5, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_weibull_shape_for_cv() -> None:
    """The Weibull shape solved from a CV has that CV (shape 1 is exponential)."""
    assert servegen.weibull_shape_for_cv(1.0) == pytest.approx(1.0, abs=1e-9)
    for cv in (0.3, 2.0, 10.0):
        k = servegen.weibull_shape_for_cv(cv)
        ratio = math.exp(math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k))
        assert math.sqrt(ratio - 1) == pytest.approx(cv, rel=1e-6)


# --- BurstGPT (a file written here) ---------------------------------------------------------


def test_burstgpt_failed_requests_are_counted_not_replayed(tmp_path: Path) -> None:
    """Rows with zero response tokens are failed: left out of the trace, counted in failed;
    Model names the model and Log Type the tenant."""
    path = write(tmp_path, BURST_HEADER + "5,ChatGPT,100,20,120,Conversation log\n"
                 "6.5,GPT-4,50,0,50,API log\n7,GPT-4,30,10,40,API log\n"
                 "9,ChatGPT,12,0,12,Conversation log\n", "burst.csv")
    assert detect_format(path) == "burstgpt"
    trace = read_trace(path)
    assert len(trace) == 2 and trace.failed == 2
    assert trace.time.tolist() == [5.0, 7.0]
    assert trace.model == ("ChatGPT", "GPT-4")
    assert trace.tenant == ("Conversation log", "API log")
    assert trace.input.tolist() == [100, 30] and trace.output.tolist() == [20, 10]
    stats = file_stats(path)
    assert stats["requests"] == 2 and stats["failed"] == 2


def test_burstgpt_all_failed_is_an_error(tmp_path: Path) -> None:
    """A trace whose every request failed has nothing to replay: an error, not an empty run."""
    path = write(tmp_path, BURST_HEADER + "1,ChatGPT,10,0,10,API log\n", "b.csv")
    with pytest.raises(TraceError, match="every request failed"):
        read_trace(path, "burstgpt")


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "line", "message"),
    [
        ("azure", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.1,5\n", 1,
         "missing column 'GeneratedTokens'"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.1,5,2\n"
                  "yesterday,5,2\n", 3, "is not a date and time"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.1,-5,2\n", 2,
         "ContextTokens -5 is negative"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.1,5,2\n"
                  "2023-11-16 18:17:01.1,5,2\n", 3, "is before the previous row's"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n", 1, "empty trace"),
        ("vtc", "arrival_s,tenant,input_len,output_len\n0.5,a,10,x\n", 2,
         "output_len 'x' is not a number"),
        ("vtc", "arrival_s,tenant,input_len,output_len\n0.5,a,10,3\n\n0.2,b,1,1\n", 4,
         "arrival_s 0.2 is before"),
        ("vtc", "arrival_s,tenant,input_len,output_len\n-1,a,10,3\n", 2, "must be a finite"),
        ("vtc", "arrival_s,tenant,input_len\n1,a,10\n", 1, "missing column 'output_len'"),
        ("burstgpt", BURST_HEADER + "1,ChatGPT,10,5,15,API log\n2,ChatGPT,1.5,5,15,x\n", 3,
         "not a whole number"),
        ("burstgpt", "Timestamp,Model,Request tokens\n1,m,2\n", 1,
         "missing column 'Response tokens'"),
    ],
)
def test_csv_trace_errors_name_file_and_line(
    tmp_path: Path, fmt: str, text: str, line: int, message: str
) -> None:
    """A missing column, a non-numeric or negative value, an unsorted timestamp or an empty
    trace is a TraceError 'path:line: what is wrong'."""
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as caught:
        read_trace(path, fmt)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 3}\n', 2,
         "missing key 'input_length'"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n\nnot json\n', 3,
         "not a JSON object"),
        ('{"timestamp": 0, "input_length": -5, "output_length": 1}\n', 1, "is negative"),
        ('{"timestamp": 0, "input_length": "5", "output_length": 1}\n', 1, "is not a number"),
        ('{"timestamp": 9, "input_length": 5, "output_length": 1}\n'
         '{"timestamp": 3, "input_length": 5, "output_length": 1}\n', 2, "is before"),
        ("\n", 1, "empty trace"),
    ],
)
def test_mooncake_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """Bad JSON lines are TraceErrors with the file line."""
    path = write(tmp_path, text, "t.jsonl")
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("0,1,1,Gamma,1,1\n600,1,1,Gamma\n", 2, "expected 6 fields"),
        ("0,1,1,Gamma,1,1\n600,x,1,Gamma,1,1\n", 2, "rate 'x' is not a number"),
        ("0,1,1,Lognormal,1,1\n", 1, "family 'Lognormal'"),
        ("0,1,1,Gamma,1,1\n0,1,1,Gamma,1,1\n", 2, "is not after the previous window"),
        ("0,-1,1,Gamma,1,1\n", 1, "must be a finite number >= 0"),
    ],
)
def test_servegen_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """Bad ServeGen rows are TraceErrors with the file line."""
    path = write(tmp_path, text, "chunk-3-trace.csv")
    with pytest.raises(TraceError) as caught:
        servegen.read_servegen(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


def test_sort_option_sorts_instead_of_failing(tmp_path: Path) -> None:
    """sort=True (--sort, workload.trace_sort) sorts rows by time, ties in file order."""
    path = write(tmp_path, "arrival_s,tenant,input_len,output_len\n"
                 "2,a,1,1\n1,b,2,2\n1,c,3,3\n")
    trace = read_trace(path, sort=True)
    assert trace.time.tolist() == [1.0, 1.0, 2.0]
    assert trace.tenant == ("b", "c", "a") and trace.input.tolist() == [2, 3, 1]


def test_undetectable_format(tmp_path: Path) -> None:
    """A CSV header of no known format is read as Aegaeon (the missing columns are named);
    one sharing two columns with a format is that format; an empty file says so."""
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(TraceError, match=r":1: missing column 'Request Time'; header has: a, b"):
        read_trace(path)
    path = write(tmp_path, "TIMESTAMP,ContextTokens,Generated\n", "typo.csv")
    with pytest.raises(TraceError, match=r":1: missing column 'GeneratedTokens'"):
        read_trace(path)
    with pytest.raises(TraceError, match=r":1: empty file, cannot detect"):
        read_trace(write(tmp_path, "", "empty.csv"))


# --- replay in a scenario -------------------------------------------------------------------


def vtc_file(tmp_path: Path) -> Path:
    return write(tmp_path, "arrival_s,tenant,input_len,output_len\n" + "".join(
        f"{t:.1f},{'ab'[t % 2]},{10 + t},{5 + t}\n" for t in range(0, 100)), "vtc.csv")


def scenario(trace: Path, models: list | None = None, **workload: object):
    doc: dict = {
        "seed": 5, "duration": 1000.0, "cluster": [{"gpu": "H800", "count": 2}],
        "workload": {"trace": str(trace), **workload},
    }
    if models is not None:
        doc["models"] = models
    return scenario_from_dict(doc)


def test_replay_time_scale_start_and_tenants(tmp_path: Path) -> None:
    """trace_start skips the trace's beginning and becomes time 0; time_scale stretches
    time; the duration cuts; the trace's tenants become the run's tenants."""
    path = vtc_file(tmp_path)
    prep = prepare(scenario(path, trace_start=10.0, time_scale=2.0,
                            models=[{"name": "qwen2.5-7b"}]))
    table = prep.requests
    np.testing.assert_allclose(table.arrival, 2.0 * np.arange(0, 90))
    assert table.input_len.tolist() == list(range(20, 110))
    assert prep.tenants == ["a", "b"] and table.tenant[:3].tolist() == [0, 1, 0]
    cut = prepare(scenario(path, time_scale=2.0, models=[{"name": "qwen2.5-7b"}])
                  .replace({"duration": 50}))
    assert cut.requests.n == 25


def test_replay_rate_rescaling(tmp_path: Path) -> None:
    """trace_rate compresses a replayed trace to that mean rate (requests / span); it and
    time_scale exclude each other."""
    path = vtc_file(tmp_path)  # 100 requests over 99 s
    table = prepare(scenario(path, trace_rate=4.0, models=[{"name": "qwen2.5-7b"}])).requests
    assert table.n == 100
    assert (table.n / (table.arrival[-1] - table.arrival[0])) == pytest.approx(4.0)
    with pytest.raises(ScenarioError, match="trace_rate: set either trace_rate or time_scale"):
        scenario(path, trace_rate=4.0, time_scale=2.0)


def test_replay_model_assignment(tmp_path: Path) -> None:
    """A trace without a model column goes to the only deployed model, to trace_model, or
    uniformly at random over several deployed models; nothing deployed deploys 'model'."""
    path = vtc_file(tmp_path)
    two = [{"name": "qwen2.5-7b"}, {"name": "yi-1.5-9b"}]
    spread = prepare(scenario(path, models=two))
    assert set(spread.requests.model.tolist()) == {0, 1}
    again = prepare(scenario(path, models=two))
    np.testing.assert_array_equal(spread.requests.model, again.requests.model)
    named = prepare(scenario(path, models=two, trace_model="yi-1.5-9b"))
    assert set(named.requests.model.tolist()) == {1}
    alone = prepare(scenario(path))
    assert alone.deployment.names == ["model"]
    with pytest.raises(ScenarioError, match=r"trace_model: 'yi-1.5' .*did you mean 'yi-1.5-9b'"):
        prepare(scenario(path, models=two, trace_model="yi-1.5"))


def test_replay_errors(tmp_path: Path) -> None:
    """A trace_start past the end, or a window with no request, is an error, not an empty
    run."""
    path = vtc_file(tmp_path)
    with pytest.raises(TraceError, match="no request at or after workload.trace_start"):
        prepare(scenario(path, trace_start=500.0))
    with pytest.raises(TraceError, match="no request of the trace arrives before"):
        prepare(scenario(path, trace_start=95.5).replace({"workload.time_scale": 1e6,
                                                           "duration": 1.0}))


def test_replay_servegen_with_lengths_and_rate(tmp_path: Path) -> None:
    """A ServeGen trace is regenerated over [trace_start, trace_start + duration): tenants
    are the chunk files, lengths come from workload.lengths, trace_rate multiplies the
    rates."""
    folder = tmp_path / "pool"
    folder.mkdir()
    for n, rate in ((0, 2.0), (1, 6.0)):
        write(folder, "".join(f"{w * 600},{rate},1.5,Gamma,0,0\n" for w in range(4)),
              f"chunk-{n}-trace.csv")
    lengths = {"kind": "fixed", "input": 33, "output": 7}
    prep = prepare(scenario(folder, trace_start=300.0, lengths=lengths,
                            models=[{"name": "qwen2.5-7b"}]).replace({"duration": 600}))
    table = prep.requests
    assert prep.tenants == ["chunk-0", "chunk-1"]
    assert abs(table.n - 8 * 600) <= 5 * 1.5 * math.sqrt(8 * 600)
    assert set(table.input_len.tolist()) == {33} and table.arrival.max() < 600
    counts = np.bincount(table.tenant)
    assert counts[1] > 2 * counts[0]
    faster = prepare(scenario(folder, trace_rate=16.0, lengths=lengths,
                              models=[{"name": "qwen2.5-7b"}]).replace({"duration": 600}))
    assert abs(faster.requests.n - 16 * 600) <= 5 * 1.5 * math.sqrt(16 * 600)


def test_replay_azure_runs(shared_data: Path, tmp_path: Path) -> None:
    """An Azure trace replays end to end on one deployed model (two minutes of it)."""
    from servesim.simulate import simulate

    sc = scenario(shared_data / AZURE.format("conv"), models=[{"name": "qwen2.5-7b"}])
    result = simulate(sc.replace({"duration": 60}))
    assert result.summary["requests_total"] > 100
    assert result.summary["requests_finished"] == result.summary["requests_total"]


# --- servesim traces stats ------------------------------------------------------------------


def test_trace_stats_definitions() -> None:
    """rate = requests / (last - first); CV = std / mean of the gaps; percentiles linear."""
    stats = trace_stats(np.array([0.0, 1.0, 3.0, 6.0]), np.array([1, 2, 3, 4]),
                        np.array([10, 10, 10, 10]))
    assert stats["requests"] == 4 and stats["duration_s"] == 6.0
    assert stats["rate_rps"] == pytest.approx(4 / 6)
    gaps = np.array([1.0, 2.0, 3.0])
    assert stats["interarrival_cv"] == pytest.approx(gaps.std() / gaps.mean())
    assert stats["input"] == {"mean": 2.5, "median": 2.5, "p90": 3.7, "p99": pytest.approx(3.97)}
    single = trace_stats(np.array([5.0]), np.array([1]), np.array([1]))
    assert single["rate_rps"] is None and single["interarrival_cv"] is None


def test_cli_stats_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with requests, duration_s, rate_rps, interarrival_cv and
    input/output (mean, median, p90, p99); the format is detected."""
    code, out, _ = cli(["traces", "stats", str(shared_data / AZURE.format("code")), "--json"],
                       capsys)
    assert code == 0
    stats = json.loads(out)
    assert list(stats)[: len(STATS_KEYS)] == list(STATS_KEYS)
    assert set(stats["input"]) == {"mean", "median", "p90", "p99"}
    assert stats["interarrival_cv"] == pytest.approx(13.15, abs=0.01)


def test_cli_stats_text_and_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text form lists the same figures; --window adds observed vs expected active
    models for a trace with a model column."""
    rows = "".join(f"00:00:{t // 10:02d}.{t % 10}00,m{t % 3},{t + 1},2\n" for t in range(300))
    path = write(tmp_path, "Request Time,Model Name,Input Length,Output Length\n" + rows)
    code, out, _ = cli(["traces", "stats", str(path), "--window", "2"], capsys)
    assert code == 0
    assert "(aegaeon)" in out and "rate_rps" in out and "interarrival_cv" in out
    assert re.search(r"input_tokens +mean 150.5  median 150.5", out)
    assert "active_models (2 s)  observed 3.00  expected" in out


def test_cli_stats_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad traces exit 2 with one 'servesim: error:' line naming file:line; --sort accepts
    unsorted input."""
    path = write(tmp_path, "arrival_s,tenant,input_len,output_len\n2,a,1,1\n1,a,1,1\n")
    code, out, err = cli(["traces", "stats", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"servesim: error: {path}:3: arrival_s 1 is before")
    assert err.count("\n") == 1
    code, out, _ = cli(["traces", "stats", str(path), "--sort", "--json"], capsys)
    assert code == 0 and json.loads(out)["requests"] == 2
    code, _, err = cli(["traces", "stats", str(tmp_path / "none.csv")], capsys)
    assert code == 2 and "file not found" in err
    code, _, err = cli(["traces", "stats", str(path), "--format", "mooncake"], capsys)
    assert code == 2 and ":1: not a JSON object" in err


def test_cli_stats_servegen_span(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ServeGen trace is regenerated over --start/--duration; lengths are unknown (null)."""
    code, out, _ = cli(["traces", "stats", str(shared_data / "servegen/language/m-small/"
                        "chunk-1-trace.csv"), "--start", "72000", "--duration", "1200",
                        "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["format"] == "servegen" and stats["input"] is None
    assert stats["span_s"] == [72000.0, 73200.0]
    assert abs(stats["requests"] - stats["expected_requests"]) <= 5 * 3 * math.sqrt(
        max(stats["expected_requests"], 1))


def test_cli_stats_of_a_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scenario YAML is checked on its generated workload."""
    doc = {"duration": 200, "cluster": [{"gpu": "H800"}],
           "workload": {"models": 4, "rate": 0.5,
                        "lengths": {"kind": "fixed", "input": 10, "output": 3}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, _ = cli(["traces", "stats", str(path), "--json", "--window", "5"], capsys)
    stats = json.loads(out)
    assert code == 0 and stats["format"] == "scenario" and stats["models"] == 4
    assert stats["input"]["mean"] == 10.0
    assert stats["active_models"]["expected"] == pytest.approx(4 * (1 - math.exp(-2.5)),
                                                               rel=0.15)
