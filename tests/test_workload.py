"""Tests of workload generation: arrival processes, length laws, trace and table readers.

Statistical checks use fixed seeds and a stated tolerance, in standard deviations of the
estimator (``SIGMAS``) unless said otherwise, so they are deterministic and would fail only
for a real bias.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from servesim.errors import TraceError
from servesim.workload.arrivals import generate_arrivals
from servesim.workload.lengths import (
    PRESET_MAX_CONTEXT,
    SHAREGPT_PRESETS,
    apply_context_cap,
    read_length_table,
    sample_lengths,
)
from servesim.workload.spec import ArrivalSpec, LengthSpec
from servesim.workload.traces import read_aegaeon_trace

SIGMAS = 5.0
SEEDS = (1, 2, 3)
HEADER = "Request Time,Model Name,Input Length,Output Length\n"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


# --- arrivals -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("spec", "count_cv"),
    [
        (ArrivalSpec(kind="poisson"), 1.0),
        (ArrivalSpec(kind="gamma", cv=0.5), 0.5),
        (ArrivalSpec(kind="gamma", cv=3.0), 3.0),
    ],
)
def test_renewal_mean_rate(spec: ArrivalSpec, count_cv: float, seed: int) -> None:
    """Poisson and gamma arrivals have the requested mean rate.

    The count over a window of length T of a renewal process has variance ~ cv^2 * rate * T;
    the count must be within SIGMAS standard deviations of rate * T.
    """
    rate, start, end = 20.0, 100.0, 5100.0
    times = generate_arrivals(spec, rate, start, end, rng(seed))
    expected = rate * (end - start)
    assert abs(times.size - expected) <= SIGMAS * count_cv * math.sqrt(expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["poisson", "gamma", "deterministic", "onoff"])
def test_arrivals_sorted_inside_window(kind: str, seed: int) -> None:
    """Every kind returns sorted float64 times in [start, end)."""
    spec = ArrivalSpec(kind=kind, cv=2.0, on=3.0, off=2.0)  # type: ignore[arg-type]
    times = generate_arrivals(spec, 7.0, 12.5, 73.25, rng(seed))
    assert times.dtype == np.float64
    assert times.size > 0
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= 12.5 and times[-1] < 73.25


@pytest.mark.parametrize("seed", SEEDS)
def test_gamma_gaps_have_requested_cv(seed: int) -> None:
    """Gamma inter-arrival gaps have mean 1/rate and coefficient of variation cv (within 5 %)."""
    rate, cv = 4.0, 2.0
    times = generate_arrivals(ArrivalSpec(kind="gamma", cv=cv), rate, 0.0, 50_000.0, rng(seed))
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_deterministic_gaps_constant_with_random_phase(seed: int) -> None:
    """Deterministic arrivals are 1/rate apart; the first lies in [start, start + 1/rate)."""
    rate, start, end = 2.5, 10.0, 1010.0
    times = generate_arrivals(ArrivalSpec(kind="deterministic"), rate, start, end, rng(seed))
    np.testing.assert_allclose(np.diff(times), 1.0 / rate, rtol=0, atol=1e-9)
    assert start <= times[0] < start + 1.0 / rate
    assert times.size in (math.floor(rate * (end - start)), math.ceil(rate * (end - start)))


def test_deterministic_phase_varies_with_seed() -> None:
    """The phase of deterministic arrivals is random: different seeds, different first times."""
    firsts = {
        float(generate_arrivals(ArrivalSpec(kind="deterministic"), 1.0, 0.0, 10.0, rng(s))[0])
        for s in range(10)
    }
    assert len(firsts) == 10


@pytest.mark.parametrize("process", ["poisson", "deterministic"])
@pytest.mark.parametrize("seed", SEEDS)
def test_onoff_only_in_on_periods(process: str, seed: int) -> None:
    """On/off arrivals fall only inside on periods [start + k(on+off), ... + on) and come at
    `rate` there: the count is within SIGMAS Poisson standard deviations of rate * on-time."""
    on, off, rate, start, end = 60.0, 40.0, 3.0, 5.0, 10_005.0 + 30.0
    spec = ArrivalSpec(kind="onoff", on=on, off=off, process=process)  # type: ignore[arg-type]
    times = generate_arrivals(spec, rate, start, end, rng(seed))
    phase = (times - start) % (on + off)
    assert np.all(phase < on)
    on_time = 100 * on + 30.0  # 100 full cycles, then 30 s of the 101st on period
    expected = rate * on_time
    assert abs(times.size - expected) <= SIGMAS * math.sqrt(expected)


def test_onoff_without_off_is_the_inner_process() -> None:
    """With off = 0 an on/off process at a rate has that mean rate throughout."""
    spec = ArrivalSpec(kind="onoff", on=10.0, off=0.0)
    times = generate_arrivals(spec, 5.0, 0.0, 2000.0, rng(4))
    assert abs(times.size - 10_000) <= SIGMAS * 100


@pytest.mark.parametrize("kind", ["poisson", "gamma", "deterministic", "onoff"])
def test_arrivals_same_seed_same_array(kind: str) -> None:
    """The same generator state gives bit-identical arrivals; another seed gives others."""
    spec = ArrivalSpec(kind=kind, cv=1.7)  # type: ignore[arg-type]
    first = generate_arrivals(spec, 3.0, 0.0, 500.0, rng(11))
    again = generate_arrivals(spec, 3.0, 0.0, 500.0, rng(11))
    other = generate_arrivals(spec, 3.0, 0.0, 500.0, rng(12))
    np.testing.assert_array_equal(first, again)
    assert first.size != other.size or not np.array_equal(first, other)


def test_spec_rate_overrides_default_rate() -> None:
    """spec.rate, when set, wins over the caller's default rate."""
    times = generate_arrivals(ArrivalSpec(kind="deterministic", rate=10.0), 1.0, 0.0, 100.0, rng())
    assert times.size == 1000


def test_million_arrivals() -> None:
    """A million Poisson arrivals come back in one call, sorted and inside the window."""
    times = generate_arrivals(ArrivalSpec(), 1000.0, 0.0, 1000.0, rng(5))
    assert abs(times.size - 1_000_000) <= SIGMAS * 1000
    assert np.all(np.diff(times) >= 0) and times[-1] < 1000.0


def test_empty_window_and_bad_rate() -> None:
    """An empty window gives no arrivals; a rate <= 0 is refused."""
    assert generate_arrivals(ArrivalSpec(), 1.0, 5.0, 5.0, rng()).size == 0
    with pytest.raises(ValueError, match="rate"):
        generate_arrivals(ArrivalSpec(), 0.0, 0.0, 5.0, rng())


# --- lengths --------------------------------------------------------------------------------


def test_fixed_lengths() -> None:
    """kind fixed gives the configured input and output for every request."""
    inputs, outputs = sample_lengths(LengthSpec(kind="fixed", input=300, output=20), 5, rng())
    assert inputs.dtype == np.int64 and outputs.dtype == np.int64
    assert inputs.tolist() == [300] * 5 and outputs.tolist() == [20] * 5


def test_uniform_lengths_inclusive_bounds() -> None:
    """kind uniform draws integers in [min, max], both ends included."""
    spec = LengthSpec(kind="uniform", input_min=3, input_max=5, output_min=7, output_max=8)
    inputs, outputs = sample_lengths(spec, 2000, rng())
    assert set(inputs.tolist()) == {3, 4, 5}
    assert set(outputs.tolist()) == {7, 8}


@pytest.mark.parametrize("seed", SEEDS)
def test_lognormal_median(seed: int) -> None:
    """kind lognormal has the configured medians (within 2 %) and lengths >= 1."""
    spec = LengthSpec(
        kind="lognormal", input_median=400, input_sigma=0.8, output_median=50, output_sigma=1.5
    )
    inputs, outputs = sample_lengths(spec, 200_000, rng(seed))
    assert np.median(inputs) == pytest.approx(400, rel=0.02)
    assert np.median(outputs) == pytest.approx(50, rel=0.02)
    assert inputs.min() >= 1 and outputs.min() >= 1


@pytest.mark.parametrize("preset", sorted(SHAREGPT_PRESETS))
def test_sharegpt_presets(preset: str) -> None:
    """ShareGPT lognormal presets (source: lognormal) have their fitted medians and are capped
    at 4096 tokens by default, or at the spec's max_context when it is set."""
    preset_law = SHAREGPT_PRESETS[preset]
    spec = LengthSpec(kind="sharegpt", preset=preset, source="lognormal")  # type: ignore[arg-type]
    inputs, outputs = sample_lengths(spec, 200_000, rng(7))
    assert np.median(inputs) == pytest.approx(preset_law.input_median, rel=0.03)
    assert np.median(outputs) == pytest.approx(preset_law.output_median, rel=0.03)
    assert (inputs + outputs).max() <= PRESET_MAX_CONTEXT
    assert inputs.min() >= 1 and outputs.min() >= 1
    capped = LengthSpec(
        kind="sharegpt", preset=preset, source="lognormal", max_context=512  # type: ignore[arg-type]
    )
    inputs, outputs = sample_lengths(capped, 10_000, rng(7))
    assert (inputs + outputs).max() <= 512


def test_scales_round_and_stay_positive() -> None:
    """input_scale / output_scale multiply lengths, rounded to the nearest token, >= 1."""
    spec = LengthSpec(kind="fixed", input=101, output=3, input_scale=2.0, output_scale=0.1)
    inputs, outputs = sample_lengths(spec, 3, rng())
    assert inputs.tolist() == [202] * 3
    assert outputs.tolist() == [1] * 3


def test_spec_max_context_applies_after_scaling() -> None:
    """The spec's max_context caps the scaled lengths, shortening the input first."""
    spec = LengthSpec(kind="fixed", input=300, output=100, input_scale=2.0, max_context=500)
    inputs, outputs = sample_lengths(spec, 2, rng())
    assert inputs.tolist() == [499, 499] and outputs.tolist() == [1, 1]


def test_lengths_same_seed_same_arrays() -> None:
    """The same generator state gives identical lengths."""
    spec = LengthSpec(kind="sharegpt", preset="vllm")
    first = sample_lengths(spec, 1000, rng(3))
    again = sample_lengths(spec, 1000, rng(3))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


@given(
    inputs=st.lists(st.integers(0, 10**7), min_size=1, max_size=50),
    data=st.data(),
    max_context=st.integers(2, 10**6),
)
def test_context_cap_property(inputs: list[int], data: st.DataObject, max_context: int) -> None:
    """apply_context_cap: input + output <= cap and both >= 1; input is cut only past cap - 1,
    and lengths already within the cap are unchanged."""
    outputs = data.draw(st.lists(st.integers(0, 10**7), min_size=len(inputs), max_size=len(inputs)))
    raw_in, raw_out = np.array(inputs), np.array(outputs)
    capped_in, capped_out = apply_context_cap(raw_in, raw_out, max_context)
    assert np.all(capped_in + capped_out <= max_context)
    assert np.all(capped_in >= 1) and np.all(capped_out >= 1)
    np.testing.assert_array_equal(capped_in, np.clip(raw_in, 1, max_context - 1))
    fits = (np.maximum(raw_in, 1) + np.maximum(raw_out, 1)) <= max_context
    np.testing.assert_array_equal(capped_out[fits], np.maximum(raw_out, 1)[fits])


def test_context_cap_none_keeps_lengths() -> None:
    """No cap leaves lengths unchanged (only raised to >= 1)."""
    capped_in, capped_out = apply_context_cap(np.array([5, 0]), np.array([7, 9]), None)
    assert capped_in.tolist() == [5, 1] and capped_out.tolist() == [7, 9]


# --- empirical length tables ----------------------------------------------------------------


def test_empirical_draws_table_pairs(tmp_path: Path) -> None:
    """kind empirical draws whole (input, output) rows of the CSV, extra columns ignored."""
    table = tmp_path / "lengths.csv"
    table.write_text("id,input,output\na,10,1\nb,20,2\nc,30,3\n")
    spec = LengthSpec(kind="empirical", file=str(table))
    inputs, outputs = sample_lengths(spec, 3000, rng())
    assert set(zip(inputs.tolist(), outputs.tolist(), strict=True)) == {(10, 1), (20, 2), (30, 3)}


def test_empirical_token_column_names_and_base_dir(tmp_path: Path) -> None:
    """input_tokens/output_tokens columns work, and a relative file is resolved against
    base_dir (the scenario folder)."""
    (tmp_path / "t.csv").write_text("input_tokens,output_tokens\n5,6\n\n")
    spec = LengthSpec(kind="empirical", file="t.csv")
    inputs, outputs = sample_lengths(spec, 4, rng(), base_dir=tmp_path)
    assert inputs.tolist() == [5] * 4 and outputs.tolist() == [6] * 4


def test_empirical_zero_length_becomes_one(tmp_path: Path) -> None:
    """A zero length in a table is accepted and sampled as 1 token."""
    (tmp_path / "t.csv").write_text("input,output\n4,0\n")
    _, outputs = sample_lengths(
        LengthSpec(kind="empirical", file=str(tmp_path / "t.csv")), 2, rng()
    )
    assert outputs.tolist() == [1, 1]


def test_empirical_cache_notices_edits(tmp_path: Path) -> None:
    """The parsed table is cached per (path, mtime): rewriting the file is picked up."""
    table = tmp_path / "t.csv"
    table.write_text("input,output\n1,2\n")
    assert read_length_table(table)[0].tolist() == [1]
    assert read_length_table(table) is read_length_table(table)
    table.write_text("input,output\n3,4\n")
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert read_length_table(table)[0].tolist() == [3]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("input,out\n1,2\n", 1, "missing column 'output'"),
        ("input_tokens,x\n1,2\n", 1, "missing column 'output_tokens'"),
        ("input,output\n1,2\n\nabc,3\n", 4, "'abc' is not a number"),
        ("input,output\n1,2\n2,-4\n", 3, "output -4 is negative"),
        ("input,output\n1,2.5\n", 2, "not a whole number"),
        ("input,output\n", 1, "empty length table"),
        ("", 1, "empty file"),
    ],
)
def test_empirical_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """A bad length table raises TraceError 'file:line: what is wrong'."""
    table = tmp_path / "bad.csv"
    table.write_text(text)
    with pytest.raises(TraceError) as caught:
        sample_lengths(LengthSpec(kind="empirical", file=str(table)), 1, rng())
    assert str(caught.value).startswith(f"{table.resolve()}:{line}: ")
    assert message in str(caught.value)


def test_empirical_missing_file(tmp_path: Path) -> None:
    """A missing table file is a TraceError naming the places searched."""
    spec = LengthSpec(kind="empirical", file="nope.csv")
    with pytest.raises(TraceError, match="nope.csv: file not found"):
        sample_lengths(spec, 1, rng(), base_dir=tmp_path)


# --- Aegaeon traces -------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_aegaeon_trace_small_file(tmp_path: Path) -> None:
    """The reader parses times (hh:mm:ss.mmm), models, lengths; model_names is sorted and
    model_index points into it; ties in time are allowed; no tenant column gives None."""
    path = write(
        tmp_path,
        HEADER + "00:00:00.054,synth_model_46,1514,380\n00:00:00.054,synth_model_08,7,101\n"
        "01:02:03.500,synth_model_46,168,416\n",
    )
    trace = read_aegaeon_trace(path)
    assert len(trace) == 3
    np.testing.assert_allclose(trace.time, [0.054, 0.054, 3723.5])
    assert trace.model == ("synth_model_46", "synth_model_08", "synth_model_46")
    assert trace.model_names == ("synth_model_08", "synth_model_46")
    assert trace.model_index.tolist() == [1, 0, 1]
    assert trace.input.tolist() == [1514, 7, 168] and trace.output.tolist() == [380, 101, 416]
    assert trace.input.dtype == np.int64 and trace.time.dtype == np.float64
    assert trace.tenant is None


def test_aegaeon_trace_column_order_and_tenant(tmp_path: Path) -> None:
    """Columns may come in any order; an optional Tenant column is read."""
    path = write(
        tmp_path,
        "Output Length,Tenant,Input Length,Model Name,Request Time\n5,alice,6,m,00:00:01\n",
    )
    trace = read_aegaeon_trace(path)
    assert trace.output.tolist() == [5] and trace.input.tolist() == [6]
    assert trace.time.tolist() == [1.0] and trace.tenant == ("alice",)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("Request Time,Model Name,Input Length\n00:00:01.000,m,5\n", 1, "missing column"),
        (HEADER + "00:00:01.000,m,5,2\n00:00:02.000,m,x5,2\n", 3, "'x5' is not a number"),
        (HEADER + "00:00:01.000,m,0,2\n", 2, "Input Length 0 is too small"),
        (HEADER + "00:00:01.000,m,3,-2\n", 2, "Output Length -2 is negative"),
        (HEADER + "00:00:01.000,m,3,0\n", 2, "Output Length 0 is too small"),
        (HEADER + "00:00:01.000,m,3,2\n\n1:00,m,3,2\n", 4, "is not hh:mm:ss.mmm"),
        (HEADER + "00:00:02.000,m,3,2\n00:00:01.000,m,3,2\n", 3, "sort the file"),
        (HEADER + "00:00:02.000,,3,2\n", 2, "Model Name is empty"),
        (HEADER, 1, "empty trace"),
        ("", 1, "empty file"),
    ],
)
def test_aegaeon_trace_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """A bad trace raises TraceError 'path:line: what is wrong' (line = 1-based file line)."""
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as caught:
        read_aegaeon_trace(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


def test_aegaeon_trace_missing_column_is_named(tmp_path: Path) -> None:
    """The missing-column error names the column that is missing."""
    path = write(tmp_path, "Request Time,Model Name,Input Length\n00:00:01.000,m,5\n")
    with pytest.raises(TraceError, match="missing column 'Output Length'"):
        read_aegaeon_trace(path)


def test_aegaeon_trace_missing_file(tmp_path: Path) -> None:
    """A missing trace file is a TraceError naming the path."""
    with pytest.raises(TraceError, match="file not found"):
        read_aegaeon_trace(tmp_path / "absent.csv")


def test_aegaeon_trace_large_file(tmp_path: Path) -> None:
    """A 100k-row trace round-trips (times to the millisecond, every model and length)."""
    gen = rng(9)
    n = 100_000
    millis = np.sort(gen.integers(0, 10 * 3600 * 1000, size=n))
    models = gen.integers(0, 80, size=n)
    inputs, outputs = gen.integers(1, 5000, size=n), gen.integers(1, 900, size=n)
    rows = [
        f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d},"
        f"synth_model_{m:02d},{i},{o}"
        for ms, m, i, o in zip(
            millis.tolist(), models.tolist(), inputs.tolist(), outputs.tolist(), strict=True
        )
    ]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    trace = read_aegaeon_trace(path)
    np.testing.assert_allclose(trace.time, millis / 1000.0, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(trace.input, inputs)
    np.testing.assert_array_equal(trace.output, outputs)
    assert [trace.model_names[k] for k in trace.model_index[:5]] == [
        f"synth_model_{m:02d}" for m in models[:5]
    ]


def test_aegaeon_real_workload(shared_data: Path) -> None:
    """The published synth-64-0.1-1.0-1.0 workload reads cleanly: 64 models named
    synth_model_00..63, sorted times, positive lengths, about 0.1 req/s per model (within
    30 %, a loose bound for one ~2-minute Poisson sample)."""
    trace = read_aegaeon_trace(shared_data / "aegaeon/workloads/synth-64-0.1-1.0-1.0.csv")
    assert trace.model_names == tuple(f"synth_model_{i:02d}" for i in range(64))
    assert np.all(np.diff(trace.time) >= 0)
    assert trace.input.min() >= 1 and trace.output.min() >= 1
    per_model_rate = len(trace) / trace.time[-1] / 64
    assert per_model_rate == pytest.approx(0.1, rel=0.3)
