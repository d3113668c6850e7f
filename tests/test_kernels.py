"""Kernels and closed forms against the slow references of tests/naive.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from servesim import kernels
from servesim.latency import StepModel
from servesim.metrics import hist_percentile, slo_attainment

gap = st.floats(min_value=1e-4, max_value=5.0, allow_nan=False)


def test_worked_example_is_five_eighths() -> None:
    """The spec's worked example: tokens at 3, 6, 7, 8 with (TTFT, TBT) = (3, 2) give 5/8."""
    assert slo_attainment([3, 6, 7, 8], arrival=0, ttft=3, tbt=2) == pytest.approx(5 / 8)
    assert naive.slo_attainment([3, 3, 1, 1], 3, 2) == pytest.approx(5 / 8)


def test_attainment_edges() -> None:
    """No token gives 0; every deadline met gives 1; a late first token alone gives 0."""
    assert slo_attainment([], arrival=0, ttft=1, tbt=1) == 0.0
    assert slo_attainment([0.5, 1.0, 1.5], arrival=0, ttft=1, tbt=1) == pytest.approx(1.0)
    assert slo_attainment([5.0], arrival=0, ttft=1, tbt=1) == 0.0


@settings(max_examples=300, deadline=None)
@given(st.lists(gap, min_size=1, max_size=60), st.floats(0.01, 5), st.floats(0.001, 1),
       st.floats(0, 100))
def test_attainment_kernel_matches_reference(gaps: list[float], ttft: float, tbt: float,
                                             arrival: float) -> None:
    """The numba scan equals the line-by-line reference on random token times."""
    times = arrival + np.cumsum(gaps)
    got = slo_attainment(times, arrival, ttft, tbt)
    assert got == pytest.approx(naive.slo_attainment(list(np.diff(np.r_[arrival, times])),
                                                     ttft, tbt), rel=1e-9, abs=1e-12)
    assert 0.0 <= got <= 1.0 + 1e-12


def _state(n: int) -> dict[str, np.ndarray]:
    return {
        "arrival": np.zeros(n), "generated": np.zeros(n, np.int64),
        "first_token": np.full(n, np.nan), "last_token": np.full(n, np.nan),
        "slo_start": np.zeros(n), "slo_accum": np.zeros(n), "slo_target": np.zeros(n),
        "slo_qos": np.zeros(n), "ttft_slo": np.zeros(n), "tbt_slo": np.zeros(n),
        "gap_sum": np.zeros(n), "gap_max": np.zeros(n), "late_gaps": np.zeros(n, np.int64),
        "hist": np.zeros(kernels.GAP_HIST_BINS, np.int64),
    }


segment = st.tuples(st.floats(0.0, 3.0), st.integers(1, 40), st.floats(1e-3, 0.05),
                    st.floats(0, 1e-4))


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 10), st.floats(0.01, 3.0), st.floats(0.5, 20), st.floats(0.005, 0.2),
       st.lists(segment, min_size=0, max_size=6))
def test_streaming_state_matches_reference(arrival: float, wait: float, ttft: float,
                                           tbt: float, segments: list) -> None:
    """Prefill + decode segments through the kernels give the attainment, gap sum, max gap
    and late-gap count of the explicit token list."""
    s = _state(1)
    s["arrival"][0] = arrival
    s["ttft_slo"][0] = ttft
    s["tbt_slo"][0] = tbt
    ids = np.array([0], dtype=np.int64)
    t = arrival + wait
    kernels.emit_one_token(ids, t, s["arrival"], s["generated"], s["first_token"],
                           s["last_token"], s["slo_start"], s["slo_accum"], s["slo_target"],
                           s["slo_qos"], s["ttft_slo"], s["tbt_slo"], s["gap_sum"],
                           s["gap_max"], s["late_gaps"], s["hist"])
    times = [t]
    for pause, steps, first, growth in segments:
        t0 = times[-1] + pause
        kernels.advance_decode(ids, steps, t0, first, growth, s["arrival"], s["generated"],
                               s["last_token"], s["slo_start"], s["slo_accum"],
                               s["slo_target"], s["slo_qos"], s["tbt_slo"], s["gap_sum"],
                               s["gap_max"], s["late_gaps"], s["hist"])
        times += [t0 + i * first + growth * i * (i - 1) / 2 for i in range(1, steps + 1)]
    gaps = list(np.diff(np.r_[arrival, times]))
    total = times[-1] - arrival
    att = (s["slo_qos"][0] + min(s["slo_target"][0], total - s["slo_start"][0])) / total
    assert att == pytest.approx(naive.slo_attainment(gaps, ttft, tbt), rel=1e-9, abs=1e-12)
    inter = gaps[1:]
    assert s["generated"][0] == len(times)
    assert s["gap_sum"][0] == pytest.approx(sum(inter), rel=1e-9, abs=1e-12)
    assert s["gap_max"][0] == pytest.approx(max(inter, default=0.0))
    assert s["late_gaps"][0] == sum(g > tbt for g in inter)
    assert s["hist"].sum() == len(inter)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-4, 0.05), st.floats(0, 1e-6), st.floats(0, 1e-3), st.floats(0, 1e6),
       st.integers(1, 256), st.integers(0, 500))
def test_closed_form_decode_equals_step_sum(a: float, b: float, c: float, context: float,
                                            batch: int, steps: int) -> None:
    """k steps in closed form take the sum of the k step times, and steps_within inverts it."""
    sm = StepModel(0.0, 0.0, 0.0, a, b, c)
    ref = naive.decode_token_times(0.0, steps, a, b, c, context, batch)
    total = ref[-1] if ref else 0.0
    assert sm.decode_time(steps, context, batch) == pytest.approx(total, rel=1e-9, abs=1e-15)
    if steps:
        assert sm.decode_steps_within(total * (1 + 1e-12), context, batch) == steps
        assert sm.decode_steps_within(ref[-1] - 0.5 * (ref[-1] - (ref[-2] if steps > 1 else 0)),
                                      context, batch) == steps - 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 600)), min_size=1, max_size=12),
       st.integers(1, 700), st.integers(0, 3000), st.sampled_from([1, 16, 32]),
       st.integers(0, 2))
def test_kv_max_steps_matches_brute_force(reqs: list, cap_steps: int, capacity: int,
                                          block: int, lookahead: int) -> None:
    """The binary search finds the same step count as trying every k."""
    held = np.array([h for h, _ in reqs], dtype=np.int64)
    remaining = np.array([r for _, r in reqs], dtype=np.int64)
    cap = min(cap_steps, int(remaining.min()))
    got = kernels.kv_max_steps(held, remaining, cap, capacity, block, lookahead)
    assert got == naive.kv_max_steps(list(held), list(remaining), cap, capacity, block,
                                     lookahead)


def test_gap_histogram_percentiles_are_within_bin_resolution() -> None:
    """TBT percentiles read from the log histogram are within 0.6 % of the exact ones."""
    rng = np.random.default_rng(3)
    gaps = rng.lognormal(np.log(0.03), 0.6, 20000)
    hist = np.zeros(kernels.GAP_HIST_BINS, np.int64)
    for g in gaps:
        hist[kernels._gap_bin(g)] += 1
    for q in (50, 90, 99):
        assert hist_percentile(hist, q) == pytest.approx(np.percentile(gaps, q), rel=0.012)


def _tables(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "input_len": rng.integers(1, 3000, n).astype(np.int64),
        "output_len": rng.integers(1, 500, n).astype(np.int64),
        "model": rng.integers(0, 2, n).astype(np.int32),
        "kv_blocks": rng.integers(0, 200, n).astype(np.int64),
        "first_scheduled": np.where(rng.random(n) < 0.5, np.nan, rng.random(n)),
        "status": np.zeros(n, np.int8),
        "instance": np.full(n, -1, np.int32),
        "finish": np.full(n, np.nan),
    }


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.sampled_from([1, 16]),
       st.integers(0, 3))
def test_settle_and_begin_prefill_match_reference(seed: int, n: int, block: int,
                                                  lookahead: int) -> None:
    """The bookkeeping kernels (KV sizing, finishing, prefill allocation) equal the references
    on random request tables, column by column."""
    rng = np.random.default_rng(seed)
    t = _tables(rng, n)
    t["generated"] = np.minimum(rng.integers(0, 600, n), t["output_len"]).astype(np.int64)
    ids = rng.choice(n, size=rng.integers(1, n + 1), replace=False).astype(np.int64)
    a = {k: v.copy() for k, v in t.items()}
    b = {k: v.copy() for k, v in t.items()}
    got = kernels.settle(ids, 3.5, a["input_len"], a["output_len"], a["generated"],
                         a["kv_blocks"], a["status"], a["finish"], block, lookahead)
    ref = naive.settle(ids, 3.5, b["input_len"], b["output_len"], b["generated"],
                       b["kv_blocks"], b["status"], b["finish"], block, lookahead)
    assert tuple(got) == ref
    for k in ("kv_blocks", "status"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(np.isnan(a["finish"]), np.isnan(b["finish"]))
    got = kernels.begin_prefill(ids, 2.0, 3, 1, a["model"], a["input_len"], a["generated"],
                                a["kv_blocks"], a["first_scheduled"], a["status"],
                                a["instance"], block, lookahead)
    ref = naive.begin_prefill(ids, 2.0, 3, 1, b["model"], b["input_len"], b["generated"],
                              b["kv_blocks"], b["first_scheduled"], b["status"],
                              b["instance"], block, lookahead)
    assert got[0] == ref[0] and got[3] == ref[3]
    assert got[1] == pytest.approx(ref[1]) and got[2] == pytest.approx(ref[2])
    for k in ("kv_blocks", "status", "instance", "first_scheduled"):
        np.testing.assert_array_equal(a[k], b[k])
    ctx, fewest = kernels.decode_batch(ids, a["input_len"], a["output_len"], a["generated"])
    assert ctx == float(sum(a["input_len"][ids] + a["generated"][ids]))
    assert fewest == int(min(a["output_len"][ids] - a["generated"][ids]))
    free = int(rng.integers(0, 500))
    cap = max(1, int(fewest))
    expect = naive.kv_max_steps(
        list(a["input_len"][ids] + a["generated"][ids]),
        list(a["output_len"][ids] - a["generated"][ids]), cap,
        free + int(a["kv_blocks"][ids].sum()), block, lookahead)
    if fewest >= 1:
        assert kernels.kv_max_steps_of(ids, a["input_len"], a["output_len"], a["generated"],
                                       a["kv_blocks"], cap, free, block, lookahead) == expect


def test_record_token_times_matches_closed_form() -> None:
    """Token times written to the CSR table are the closed-form step ends."""
    ids = np.array([0, 2], dtype=np.int64)
    offsets = np.array([0, 10, 20, 30], dtype=np.int64)
    out = np.full(30, np.nan)
    before = np.array([1, 3], dtype=np.int64)
    kernels.record_token_times(ids, 4, 1.0, 0.02, 0.001, before, offsets, out)
    # first_step 0.02 = a + c*B + b*C0 and growth 0.001 = b*B with B = 2, b = 0.0005
    steps = naive.decode_token_times(1.0, 4, 0.02 - 0.0005 * 10, 0.0005, 0.0, 10, 2)
    np.testing.assert_allclose(out[1:5], steps)
    np.testing.assert_allclose(out[23:27], steps)
    assert np.isnan(out[0]) and np.isnan(out[10:20]).all()
