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
