"""Slow, obvious references of every kernel and closed form, for the tests to compare with."""

from __future__ import annotations

import math


def slo_attainment(gaps: list[float], ttft: float, tbt: float) -> float:
    """The attainment scan of specs/metrics-and-workloads.md, line by line."""
    total = sum(gaps)
    if not gaps:
        return 0.0
    if total <= 0:
        return 1.0
    qos = 0.0
    start = 0.0
    accum = 0.0
    target = ttft
    cum = 0.0
    for g in gaps:
        cum += g
        if cum - start <= target:
            accum = target
            target += tbt
        else:
            qos += accum
            start = cum
            accum = 0.0
            target += tbt
    qos += min(target, total - start)
    return qos / total


def decode_token_times(t0: float, steps: int, a: float, b: float, c: float, context: float,
                       batch: int) -> list[float]:
    """End time of each of ``steps`` decode steps, summed one step at a time."""
    times = []
    t = t0
    ctx = context
    for _ in range(steps):
        t += a + c * batch + b * ctx
        ctx += batch
        times.append(t)
    return times


def kv_max_steps(held: list[int], remaining: list[int], cap_steps: int, capacity: int,
                 block_size: int, lookahead: int) -> int:
    """Brute force: the largest k <= cap_steps whose block need fits."""
    def need(k: int) -> int:
        return sum(
            math.ceil((h + min(k, r - 1) + lookahead) / block_size)
            for h, r in zip(held, remaining, strict=True)
        )

    best = 0
    for k in range(0, cap_steps + 1):
        if need(k) <= capacity:
            best = k
        else:
            break
    return best


def settle(ids, now, input_len, output_len, generated, kv_blocks, status, finish, block_size,
           lookahead):
    """Reference of kernels.settle on Python lists/arrays (mutates like the kernel)."""
    delta = 0
    finished = 0
    for r in ids:
        if generated[r] >= output_len[r]:
            delta -= kv_blocks[r]
            kv_blocks[r] = 0
            status[r] = 4
            finish[r] = now
            finished += 1
        else:
            blocks = math.ceil((input_len[r] + generated[r] + lookahead) / block_size)
            delta += blocks - kv_blocks[r]
            kv_blocks[r] = blocks
    return delta, finished


def begin_prefill(ids, now, inst_index, inst_model, model, input_len, generated, kv_blocks,
                  first_scheduled, status, instance, block_size, lookahead):
    """Reference of kernels.begin_prefill."""
    delta, tokens, tokens_sq, wrong = 0, 0.0, 0.0, 0
    for r in ids:
        wrong += model[r] != inst_model
        held = input_len[r] + generated[r]
        blocks = math.ceil((held + 1 + lookahead) / block_size)
        delta += blocks - kv_blocks[r]
        kv_blocks[r] = blocks
        if math.isnan(first_scheduled[r]):
            first_scheduled[r] = now
        status[r] = 2
        instance[r] = inst_index
        tokens += held
        tokens_sq += held * held
    return delta, tokens, tokens_sq, wrong
