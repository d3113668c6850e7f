"""The engine's fast paths against the plain kernels: the per-token loop of ``advance_decode``
(locals and a cached histogram bin) and the ``*_packed`` kernels on the request table's
column blocks must give bit-identical results (benchmarks/README.md, "Optimisations")."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim import kernels
from servesim.engine.requests import RequestTable

_ORDER = ("arrival", "generated", "last_token", "slo_start", "slo_accum", "slo_target",
          "slo_qos", "tbt_slo", "gap_sum", "gap_max", "late_gaps")


def _reference_advance(ids: np.ndarray, steps: int, t0: float, first: float, growth: float,
                       cols: dict[str, np.ndarray], hist: np.ndarray) -> None:
    """advance_decode as it was: every token through the SLO scan in the arrays and
    ``_gap_bin``; the gap statistics summed per segment."""
    for r in ids:
        last = cols["last_token"][r]
        tbt = cols["tbt_slo"][r]
        gsum = 0.0
        gmax = cols["gap_max"][r]
        late = 0
        for i in range(1, steps + 1):
            t = t0 + i * first + growth * (i * (i - 1) * 0.5)
            gap = t - last
            gsum += gap
            if gap > gmax:
                gmax = gap
            if gap > tbt:
                late += 1
            hist[kernels._gap_bin(gap)] += 1
            cum = t - cols["arrival"][r]
            if cum - cols["slo_start"][r] <= cols["slo_target"][r]:
                cols["slo_accum"][r] = cols["slo_target"][r]
            else:
                cols["slo_qos"][r] += cols["slo_accum"][r]
                cols["slo_start"][r] = cum
                cols["slo_accum"][r] = 0.0
            cols["slo_target"][r] += tbt
            last = t
        cols["last_token"][r] = last
        cols["gap_sum"][r] += gsum
        cols["gap_max"][r] = gmax
        cols["late_gaps"][r] += late
        cols["generated"][r] += steps


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 300),
       st.sampled_from([1e-7, 1e-3, 0.02, 0.5, 30.0]), st.sampled_from([0.0, 1e-9, 1e-5, 1e-3]))
def test_advance_decode_equals_token_by_token(seed: int, n: int, steps: int, scale: float,
                                              growth: float) -> None:
    """Same bits in every column and the same gap histogram as the token-by-token loop (gaps
    growing across histogram bins, and first gaps that differ per request)."""
    rng = np.random.default_rng(seed)
    cols = {k: rng.random(n) * rng.choice([0.01, 1.0, 10.0]) for k in _ORDER}
    cols["generated"] = rng.integers(1, 50, n).astype(np.int64)
    cols["late_gaps"] = rng.integers(0, 5, n).astype(np.int64)
    cols["tbt_slo"] = rng.choice([1e-7, 0.05, 0.1], n)
    cols["last_token"] = cols["arrival"] + rng.random(n)
    ids = rng.permutation(n)[: int(rng.integers(1, n + 1))].astype(np.int64)
    t0 = float(cols["last_token"].max() + rng.random() * scale)
    first = float(scale * (0.5 + rng.random()))
    ref = {k: v.copy() for k, v in cols.items()}
    ref_hist = np.zeros(kernels.GAP_HIST_BINS, np.int64)
    hist = ref_hist.copy()
    _reference_advance(ids, steps, t0, first, growth, ref, ref_hist)
    kernels.advance_decode(ids, steps, t0, first, growth, *[cols[k] for k in _ORDER], hist)
    for k in _ORDER:
        assert cols[k].tobytes() == ref[k].tobytes(), k
    assert np.array_equal(hist, ref_hist)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_packed_kernels_equal_column_kernels(seed: int, n: int) -> None:
    """begin_prefill, emit_one_token + settle, decode_batch, kv_max_steps_of, advance_decode +
    settle: the packed kernels on a RequestTable's blocks change its columns exactly as the
    column kernels do on another table."""
    rng = np.random.default_rng(seed)
    args = (np.sort(rng.random(n) * 10), rng.integers(0, 2, n), np.zeros(n), np.zeros(n),
            rng.integers(1, 3000, n), rng.integers(1, 500, n), np.full(n, 10.0),
            np.full(n, 0.1))
    a, b = RequestTable(*args), RequestTable(*args)
    ids = rng.permutation(n)[: int(rng.integers(1, n + 1))].astype(np.int64)
    ha = np.zeros(kernels.GAP_HIST_BINS, np.int64)
    hb = ha.copy()
    got = kernels.begin_prefill_packed(ids, 11.0, 3, 0, a.f64, a.i64, a.i32, a.status, 16, 1)
    want = kernels.begin_prefill(ids, 11.0, 3, 0, b.model, b.input_len, b.generated,
                                 b.kv_blocks, b.first_scheduled, b.status, b.instance, 16, 1)
    assert got == want
    got = kernels.finish_prefill_packed(ids, 12.0, a.f64, a.i64, a.status, ha, 16, 1)
    kernels.emit_one_token(ids, 12.0, b.arrival, b.generated, b.first_token, b.last_token,
                           b.slo_start, b.slo_accum, b.slo_target, b.slo_qos, b.ttft_slo,
                           b.tbt_slo, b.gap_sum, b.gap_max, b.late_gaps, hb)
    want = kernels.settle(ids, 12.0, b.input_len, b.output_len, b.generated, b.kv_blocks,
                          b.status, b.finish, 16, 1)
    assert got == want
    live = ids[b.status[ids] == kernels.RUNNING]
    if live.size:
        got = kernels.decode_batch_packed(live, a.i64)
        assert got == kernels.decode_batch(live, b.input_len, b.output_len, b.generated)
        steps = int(min(got[1], 1 + rng.integers(0, 40)))
        cap = kernels.kv_max_steps_packed(live, a.i64, steps, 500, 16, 1)
        assert cap == kernels.kv_max_steps_of(live, b.input_len, b.output_len, b.generated,
                                              b.kv_blocks, steps, 500, 16, 1)
        got = kernels.finish_decode_packed(live, steps, 12.0, 0.02, 1e-5, 15.0, a.f64, a.i64,
                                           a.status, ha, 16, 1)
        kernels.advance_decode(live, steps, 12.0, 0.02, 1e-5, b.arrival, b.generated,
                               b.last_token, b.slo_start, b.slo_accum, b.slo_target,
                               b.slo_qos, b.tbt_slo, b.gap_sum, b.gap_max, b.late_gaps, hb)
        want = kernels.settle(live, 15.0, b.input_len, b.output_len, b.generated,
                              b.kv_blocks, b.status, b.finish, 16, 1)
        assert got == want
    for block in ("f64", "i64", "i32", "status"):
        assert getattr(a, block).tobytes() == getattr(b, block).tobytes(), block
    assert np.array_equal(ha, hb)


def test_request_table_columns_are_views_of_the_blocks() -> None:
    """Writing a named column writes the block the kernels read."""
    t = RequestTable(np.arange(3.0), np.zeros(3), np.zeros(3), np.zeros(3), np.ones(3),
                     np.ones(3), np.full(3, 10.0), np.full(3, 0.1))
    t.generated[1] = 7
    t.last_token[2] = 4.5
    assert t.i64[kernels.GENERATED, 1] == 7
    assert t.f64[kernels.LAST_TOKEN, 2] == 4.5
    assert np.isnan(t.first_token).all() and (t.instance == -1).all()
    assert t.arrival.flags.c_contiguous and t.arrival.dtype == np.float64
