"""Numba kernels of the hot path, and nothing else.

Every kernel updates struct-of-arrays columns of the request table in place. Each has a
pure-Python twin in ``tests/naive.py`` that the tests compare it with on generated inputs.

The SLO state of a request is the running state of the token-level attainment scan of
``specs/metrics-and-workloads.md``, kept per request so that no per-token history is needed:
``slo_start`` and ``slo_target`` are seconds since arrival, ``slo_accum`` and ``slo_qos`` are
seconds of service covered by met deadlines. After the last token the attainment is
``(slo_qos + min(slo_target, total - slo_start)) / total`` with ``total = last - arrival``.

Inter-token gaps also go into a log-spaced histogram (``GAP_HIST_*``) from which the
cluster-wide TBT percentiles are read.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Histogram of inter-token gaps: bin i covers LO * 10**(i/PER_DECADE) up to the next bin.
GAP_HIST_LO = 1e-6
GAP_HIST_PER_DECADE = 200
GAP_HIST_BINS = GAP_HIST_PER_DECADE * 10  # 1 us .. 10,000 s

# Rows of the request table's column blocks (``RequestTable.f64``, ``.i64``, ``.i32``): the
# ``*_packed`` kernels take a block and unpack the rows they need, so that a call passes a
# handful of arrays (numba's dispatch costs about 0.1 us per array argument).
ARRIVAL, TTFT_SLO, TBT_SLO, FIRST_TOKEN, LAST_TOKEN, FINISH, FIRST_SCHEDULED, SWITCH_WAIT = range(8)
SLO_START, SLO_ACCUM, SLO_TARGET, SLO_QOS, GAP_SUM, GAP_MAX = range(8, 14)
F64_ROWS = 14
INPUT_LEN, OUTPUT_LEN, GENERATED, KV_BLOCKS, LATE_GAPS = range(5)
I64_ROWS = 5
MODEL, TENANT, SOURCE, INSTANCE, PREEMPTIONS = range(5)
I32_ROWS = 5


@njit(cache=True, inline="always")
def _gap_bin(gap: float) -> int:
    if gap <= GAP_HIST_LO:
        return 0
    b = int((math.log10(gap) - math.log10(GAP_HIST_LO)) * GAP_HIST_PER_DECADE)
    if b >= GAP_HIST_BINS:
        return GAP_HIST_BINS - 1
    return b


@njit(cache=True, inline="always")
def _slo_token(
    r: int, t: float, arrival: np.ndarray, slo_start: np.ndarray, slo_accum: np.ndarray,
    slo_target: np.ndarray, slo_qos: np.ndarray, tbt: float,
) -> None:
    """One step of the attainment scan for a token of request ``r`` emitted at ``t``."""
    cum = t - arrival[r]
    if cum - slo_start[r] <= slo_target[r]:
        slo_accum[r] = slo_target[r]
    else:
        slo_qos[r] += slo_accum[r]
        slo_start[r] = cum
        slo_accum[r] = 0.0
    slo_target[r] += tbt


#: ``status`` codes the kernels write (must match :class:`servesim.engine.requests.Status`).
RUNNING = 2
FINISHED = 4


@njit(cache=True)
def settle(
    ids: np.ndarray, now: float, input_len: np.ndarray, output_len: np.ndarray,
    generated: np.ndarray, kv_blocks: np.ndarray, status: np.ndarray, finish: np.ndarray,
    block_size: int, lookahead: int,
) -> tuple[int, int]:
    """After a job: finish requests that emitted their last token (freeing their KV) and size
    the KV of the others to ``ceil((input + generated + lookahead) / block_size)`` blocks.

    Returns ``(change in blocks held, number of requests finished)``.
    """
    delta = 0
    finished = 0
    for j in range(ids.shape[0]):
        r = ids[j]
        if generated[r] >= output_len[r]:
            delta -= kv_blocks[r]
            kv_blocks[r] = 0
            status[r] = FINISHED
            finish[r] = now
            finished += 1
        else:
            blocks = (input_len[r] + generated[r] + lookahead + block_size - 1) // block_size
            delta += blocks - kv_blocks[r]
            kv_blocks[r] = blocks
    return delta, finished


@njit(cache=True)
def begin_prefill(
    ids: np.ndarray, now: float, inst_index: int, inst_model: int, model: np.ndarray,
    input_len: np.ndarray, generated: np.ndarray, kv_blocks: np.ndarray,
    first_scheduled: np.ndarray, status: np.ndarray, instance: np.ndarray, block_size: int,
    lookahead: int,
) -> tuple[int, float, float, int]:
    """Allocate KV for a prefill of ``ids`` (context + the slot of the token it emits), mark
    them running on the instance and sum their context tokens.

    Returns ``(change in blocks held, sum L, sum L^2, requests of another model)``.
    """
    delta = 0
    tokens = 0.0
    tokens_sq = 0.0
    wrong_model = 0
    for j in range(ids.shape[0]):
        r = ids[j]
        if model[r] != inst_model:
            wrong_model += 1
        held = input_len[r] + generated[r]
        blocks = (held + 1 + lookahead + block_size - 1) // block_size
        delta += blocks - kv_blocks[r]
        kv_blocks[r] = blocks
        if first_scheduled[r] != first_scheduled[r]:  # NaN: never scheduled before
            first_scheduled[r] = now
        status[r] = RUNNING
        instance[r] = inst_index
        tokens += held
        tokens_sq += float(held) * float(held)
    return delta, tokens, tokens_sq, wrong_model


@njit(cache=True)
def decode_batch(
    ids: np.ndarray, input_len: np.ndarray, output_len: np.ndarray, generated: np.ndarray
) -> tuple[float, int]:
    """``(total context tokens, fewest tokens any request still has to generate)``."""
    context = 0.0
    fewest = 1 << 62
    for j in range(ids.shape[0]):
        r = ids[j]
        context += input_len[r] + generated[r]
        rem = output_len[r] - generated[r]
        if rem < fewest:
            fewest = rem
    return context, fewest


@njit(cache=True)
def emit_one_token(
    ids: np.ndarray, t: float, arrival: np.ndarray, generated: np.ndarray,
    first_token: np.ndarray, last_token: np.ndarray, slo_start: np.ndarray,
    slo_accum: np.ndarray, slo_target: np.ndarray, slo_qos: np.ndarray, ttft_slo: np.ndarray,
    tbt_slo: np.ndarray, gap_sum: np.ndarray, gap_max: np.ndarray, late_gaps: np.ndarray,
    gap_hist: np.ndarray,
) -> None:
    """Every request in ``ids`` emits one token at time ``t`` (the end of a prefill).

    The first token of a request sets its TTFT and starts its SLO scan (``target = TTFT``);
    a later one (a recomputation after preemption) is an ordinary inter-token gap.
    """
    for j in range(ids.shape[0]):
        r = ids[j]
        if generated[r] == 0:
            first_token[r] = t
            slo_start[r] = 0.0
            slo_accum[r] = 0.0
            slo_qos[r] = 0.0
            slo_target[r] = ttft_slo[r]
        else:
            gap = t - last_token[r]
            gap_sum[r] += gap
            if gap > gap_max[r]:
                gap_max[r] = gap
            if gap > tbt_slo[r]:
                late_gaps[r] += 1
            gap_hist[_gap_bin(gap)] += 1
        _slo_token(r, t, arrival, slo_start, slo_accum, slo_target, slo_qos, tbt_slo[r])
        last_token[r] = t
        generated[r] += 1


@njit(cache=True)
def _gap_bin_bounds(b: int) -> tuple[float, float]:
    """Gaps strictly between the two bounds fall in bin ``b`` whatever the rounding of
    :func:`_gap_bin` (a relative margin of 1e-9 around the exact edges, far above the few ulps
    of error of its log10); ``(inf, -inf)`` (nothing) for the clamped first and last bins."""
    if b <= 0 or b >= GAP_HIST_BINS - 1:
        return math.inf, -math.inf
    lo = GAP_HIST_LO * 10.0 ** (b / GAP_HIST_PER_DECADE)
    hi = GAP_HIST_LO * 10.0 ** ((b + 1) / GAP_HIST_PER_DECADE)
    return lo * (1.0 + 1e-9), hi * (1.0 - 1e-9)


@njit(cache=True)
def advance_decode(
    ids: np.ndarray, steps: int, t0: float, first_step: float, step_growth: float,
    arrival: np.ndarray, generated: np.ndarray, last_token: np.ndarray, slo_start: np.ndarray,
    slo_accum: np.ndarray, slo_target: np.ndarray, slo_qos: np.ndarray, tbt_slo: np.ndarray,
    gap_sum: np.ndarray, gap_max: np.ndarray, late_gaps: np.ndarray, gap_hist: np.ndarray,
) -> None:
    """Credit ``steps`` decode steps of a fixed batch that started at ``t0``.

    Step ``i`` (1-based) ends at ``t0 + i*first_step + step_growth*i*(i-1)/2`` where
    ``first_step = a + c*B + b*C0`` and ``step_growth = b*B`` (the closed form of
    ``specs/latency-model.md``); every request of the batch emits one token per step.

    The per-token loop keeps a request's SLO scan state in locals (the same arithmetic, in the
    same order, as :func:`_slo_token`) and counts gaps per histogram bin, taking the log only
    when a gap leaves the current bin's safe interval: the gaps of a segment grow slowly, so
    most tokens fall in the bin of the previous one. Two bins are cached: one for each
    request's first gap (which depends on what the request did before the segment), one for the
    later gaps (the same for every request of the batch).
    """
    b = -1  # bin of the later gaps, its count and safe interval
    count = 0
    lo = math.inf
    hi = -math.inf
    b1 = -1  # bin of the first gaps
    count1 = 0
    lo1 = math.inf
    hi1 = -math.inf
    for j in range(ids.shape[0]):
        r = ids[j]
        last = last_token[r]
        tbt = tbt_slo[r]
        arr = arrival[r]
        start = slo_start[r]
        accum = slo_accum[r]
        target = slo_target[r]
        qos = slo_qos[r]
        gsum = 0.0
        gmax = gap_max[r]
        late = 0
        for i in range(1, steps + 1):
            t = t0 + i * first_step + step_growth * (i * (i - 1) * 0.5)
            gap = t - last
            gsum += gap
            if gap > gmax:
                gmax = gap
            if gap > tbt:
                late += 1
            if i == 1:
                if not (gap > lo1 and gap < hi1):
                    if count1:
                        gap_hist[b1] += count1
                    b1 = _gap_bin(gap)
                    lo1, hi1 = _gap_bin_bounds(b1)
                    count1 = 0
                count1 += 1
            else:
                if not (gap > lo and gap < hi):
                    if count:
                        gap_hist[b] += count
                    b = _gap_bin(gap)
                    lo, hi = _gap_bin_bounds(b)
                    count = 0
                count += 1
            # one step of the attainment scan (_slo_token)
            cum = t - arr
            if cum - start <= target:
                accum = target
            else:
                qos += accum
                start = cum
                accum = 0.0
            target += tbt
            last = t
        slo_start[r] = start
        slo_accum[r] = accum
        slo_target[r] = target
        slo_qos[r] = qos
        last_token[r] = last
        gap_sum[r] += gsum
        gap_max[r] = gmax
        late_gaps[r] += late
        generated[r] += steps
    if count:
        gap_hist[b] += count
    if count1:
        gap_hist[b1] += count1


@njit(cache=True)
def finish_decode_packed(
    ids: np.ndarray, steps: int, t0: float, first_step: float, step_growth: float, now: float,
    f64: np.ndarray, i64: np.ndarray, status: np.ndarray, gap_hist: np.ndarray,
    block_size: int, lookahead: int,
) -> tuple[int, int]:
    """The end of a fast-forwarded decode job at ``now``: :func:`advance_decode` then
    :func:`settle`, on the request table's column blocks. Returns what ``settle`` returns."""
    advance_decode(ids, steps, t0, first_step, step_growth, f64[ARRIVAL], i64[GENERATED],
                   f64[LAST_TOKEN], f64[SLO_START], f64[SLO_ACCUM], f64[SLO_TARGET],
                   f64[SLO_QOS], f64[TBT_SLO], f64[GAP_SUM], f64[GAP_MAX], i64[LATE_GAPS],
                   gap_hist)
    return settle(ids, now, i64[INPUT_LEN], i64[OUTPUT_LEN], i64[GENERATED], i64[KV_BLOCKS],
                  status, f64[FINISH], block_size, lookahead)


@njit(cache=True)
def finish_prefill_packed(
    ids: np.ndarray, t: float, f64: np.ndarray, i64: np.ndarray, status: np.ndarray,
    gap_hist: np.ndarray, block_size: int, lookahead: int,
) -> tuple[int, int]:
    """The end of a prefill at ``t``: :func:`emit_one_token` then :func:`settle`, on the
    request table's column blocks. Returns what ``settle`` returns."""
    emit_one_token(ids, t, f64[ARRIVAL], i64[GENERATED], f64[FIRST_TOKEN], f64[LAST_TOKEN],
                   f64[SLO_START], f64[SLO_ACCUM], f64[SLO_TARGET], f64[SLO_QOS],
                   f64[TTFT_SLO], f64[TBT_SLO], f64[GAP_SUM], f64[GAP_MAX], i64[LATE_GAPS],
                   gap_hist)
    return settle(ids, t, i64[INPUT_LEN], i64[OUTPUT_LEN], i64[GENERATED], i64[KV_BLOCKS],
                  status, f64[FINISH], block_size, lookahead)


@njit(cache=True)
def begin_prefill_packed(
    ids: np.ndarray, now: float, inst_index: int, inst_model: int, f64: np.ndarray,
    i64: np.ndarray, i32: np.ndarray, status: np.ndarray, block_size: int, lookahead: int,
) -> tuple[int, float, float, int]:
    """:func:`begin_prefill` on the request table's column blocks."""
    return begin_prefill(ids, now, inst_index, inst_model, i32[MODEL], i64[INPUT_LEN],
                         i64[GENERATED], i64[KV_BLOCKS], f64[FIRST_SCHEDULED], status,
                         i32[INSTANCE], block_size, lookahead)


@njit(cache=True)
def decode_batch_packed(ids: np.ndarray, i64: np.ndarray) -> tuple[float, int]:
    """:func:`decode_batch` on the request table's ``i64`` block."""
    return decode_batch(ids, i64[INPUT_LEN], i64[OUTPUT_LEN], i64[GENERATED])


@njit(cache=True)
def record_token_times(
    ids: np.ndarray, steps: int, t0: float, first_step: float, step_growth: float,
    generated_before: np.ndarray, offsets: np.ndarray, token_times: np.ndarray,
) -> None:
    """Write the emission time of each token of a decode segment into a CSR token table.

    ``offsets[r]`` is where request ``r``'s tokens start in ``token_times``; token number
    ``generated_before[j] + i - 1`` of request ``ids[j]`` is emitted at the end of step ``i``.
    """
    for j in range(ids.shape[0]):
        base = offsets[ids[j]] + generated_before[j]
        for i in range(1, steps + 1):
            token_times[base + i - 1] = t0 + i * first_step + step_growth * (i * (i - 1) * 0.5)


@njit(cache=True)
def _blocks_needed(
    held: np.ndarray, remaining: np.ndarray, steps: int, block_size: int, lookahead: int
) -> int:
    total = 0
    for j in range(held.shape[0]):
        extra = steps if steps < remaining[j] - 1 else remaining[j] - 1
        total += (held[j] + extra + lookahead + block_size - 1) // block_size
    return total


@njit(cache=True)
def kv_max_steps(
    held: np.ndarray, remaining: np.ndarray, cap_steps: int, capacity_blocks: int,
    block_size: int, lookahead: int,
) -> int:
    """Largest ``k <= cap_steps`` whose KV need fits ``capacity_blocks``.

    A request holding ``held`` tokens (input + generated) with ``remaining`` tokens to go needs
    ``ceil((held + min(k, remaining - 1) + lookahead) / block_size)`` blocks after ``k`` steps
    (a finishing request never needs the slot of a token it will not process). Returns 0 when
    not even one step fits (the policy must preempt).
    """
    if _blocks_needed(held, remaining, cap_steps, block_size, lookahead) <= capacity_blocks:
        return cap_steps
    lo = 0
    hi = cap_steps  # need(lo) fits (or lo == 0), need(hi) does not
    if _blocks_needed(held, remaining, 0, block_size, lookahead) > capacity_blocks:
        return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _blocks_needed(held, remaining, mid, block_size, lookahead) <= capacity_blocks:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True)
def kv_max_steps_of(
    ids: np.ndarray, input_len: np.ndarray, output_len: np.ndarray, generated: np.ndarray,
    kv_blocks: np.ndarray, cap_steps: int, free_blocks: int, block_size: int, lookahead: int,
) -> int:
    """:func:`kv_max_steps` for the batch ``ids`` of the request table, given the instance's
    free blocks (the batch's own blocks count as available to it)."""
    n = ids.shape[0]
    held = np.empty(n, dtype=np.int64)
    remaining = np.empty(n, dtype=np.int64)
    capacity = free_blocks
    for j in range(n):
        r = ids[j]
        held[j] = input_len[r] + generated[r]
        remaining[j] = output_len[r] - generated[r]
        capacity += kv_blocks[r]
    return kv_max_steps(held, remaining, cap_steps, capacity, block_size, lookahead)


@njit(cache=True)
def kv_max_steps_packed(
    ids: np.ndarray, i64: np.ndarray, cap_steps: int, free_blocks: int, block_size: int,
    lookahead: int,
) -> int:
    """:func:`kv_max_steps_of` on the request table's ``i64`` block."""
    return kv_max_steps_of(ids, i64[INPUT_LEN], i64[OUTPUT_LEN], i64[GENERATED],
                           i64[KV_BLOCKS], cap_steps, free_blocks, block_size, lookahead)


@njit(cache=True)
def slo_attainment_from_gaps(gaps: np.ndarray, ttft: float, tbt: float) -> float:
    """The exact attainment scan over gaps ``g_0 = time to first token, g_1, ...``."""
    total = 0.0
    for g in gaps:
        total += g
    if total <= 0.0:
        return 1.0 if gaps.shape[0] > 0 else 0.0
    qos = 0.0
    start = 0.0
    accum = 0.0
    target = ttft
    cum = 0.0
    for g in gaps:
        cum += g
        if cum - start <= target:
            accum = target
        else:
            qos += accum
            start = cum
            accum = 0.0
        target += tbt
    qos += min(target, total - start)
    return qos / total
