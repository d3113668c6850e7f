"""Arrival processes: turn an :class:`~servesim.workload.spec.ArrivalSpec` into arrival times.

Every generator is vectorised: gaps are drawn in chunks sized from the expected count and
accumulated with ``cumsum``, so a million arrivals take milliseconds. The draws depend only on
the generator's state and the arguments, so the same ``rng`` state gives the same array.

All processes are *stationary from* ``start``: the first arrival is drawn from the forward
recurrence time of the renewal process (an exponential gap for Poisson, a size-biased gamma gap
times a uniform for gamma, a uniform phase for deterministic), so a window cut at ``start``
looks like a window cut from a process that has been running for ever. The VTC paper's
"uniform" arrivals are the deterministic kind.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from servesim.workload.spec import ArrivalSpec

__all__ = ["MAX_ARRIVALS", "generate_arrivals", "peak_rate"]

MAX_ARRIVALS = 100_000_000
"""The most requests one run may generate or regenerate (rate x duration, summed over sources);
a scenario that asks for more is refused at load instead of exhausting memory."""

# Extra gaps drawn beyond the expected count, in standard deviations of the count: with 6 the
# first chunk almost always suffices, and a short chunk only costs one more round.
_CHUNK_SIGMAS = 6.0
_CHUNK_MIN = 64


def generate_arrivals(
    spec: ArrivalSpec, rate: float, start: float, end: float, rng: np.random.Generator
) -> np.ndarray:
    """Arrival times (seconds, float64, sorted ascending) in ``[start, end)``.

    ``rate`` (requests/s) is the caller's resolved default; ``spec.rate`` overrides it when set.
    ``ramp`` goes linearly from that rate at ``start`` to ``spec.rate_end`` at ``end``;
    ``piecewise`` ignores it and uses ``spec.rates`` from ``start + spec.times``.
    For ``onoff`` the rate applies inside on periods only: on periods are ``[start + k*(on+off),
    start + k*(on+off) + on)`` for k = 0, 1, ...; the mean rate over a long window is
    ``rate * on / (on + off)``.
    """
    effective_rate = float(spec.rate if spec.rate is not None else rate)
    if not (effective_rate > 0 and math.isfinite(effective_rate)):
        raise ValueError(f"arrival rate must be a finite number > 0, got {effective_rate}")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"arrival window must be finite, got [{start}, {end})")
    if end <= start:
        return np.empty(0, dtype=np.float64)

    if spec.kind == "onoff":
        return _onoff(spec, effective_rate, start, end, rng)
    if spec.kind == "ramp":
        return _ramp(spec, effective_rate, start, end, rng)
    if spec.kind == "piecewise":
        return _piecewise(spec, start, end, rng)
    if spec.kind == "poisson":
        return _renewal(effective_rate, 1.0, start, end, rng)
    if spec.kind == "gamma":
        return _renewal(effective_rate, spec.cv, start, end, rng)
    if spec.kind == "deterministic":
        return _deterministic(effective_rate, start, end, rng)
    raise ValueError(f"unknown arrival kind {spec.kind!r}")


def peak_rate(spec: ArrivalSpec, rate: float) -> float:
    """The highest rate (requests/s) of ``spec`` with the caller's default ``rate``: an upper
    bound of the arrivals per second, used to refuse runs too large to hold in memory."""
    peak = float(spec.rate if spec.rate is not None else rate)
    if spec.kind == "ramp" and spec.rate_end is not None:
        peak = max(peak, spec.rate_end)
    if spec.kind == "piecewise" and spec.rates:
        peak = max(spec.rates)
    return peak


def _chunk_size(expected: float) -> int:
    return int(expected + _CHUNK_SIGMAS * math.sqrt(expected) + _CHUNK_MIN)


def _renewal(
    rate: float, cv: float, start: float, end: float, rng: np.random.Generator
) -> np.ndarray:
    """Renewal process with gamma gaps of mean ``1/rate`` and CV ``cv`` (cv=1: Poisson)."""
    if not cv * cv > 1e-300:  # the gamma shape 1/cv^2 would overflow: the gaps are constant
        return _deterministic(rate, start, end, rng)
    poisson = cv == 1.0
    shape = 1.0 / (cv * cv)
    scale = cv * cv / rate

    def gaps(n: int) -> np.ndarray:
        if poisson:
            return rng.exponential(1.0 / rate, size=n)
        return rng.gamma(shape, scale, size=n)

    # Forward recurrence time: for a stationary renewal process the first gap is a
    # size-biased gap (gamma with shape + 1) times a uniform; for Poisson it is just a gap.
    if poisson:
        first = float(rng.exponential(1.0 / rate))
    else:
        first = float(rng.gamma(shape + 1.0, scale) * rng.random())
    now = start + first
    if now >= end:
        return np.empty(0, dtype=np.float64)

    pieces: list[np.ndarray] = [np.array([now])]
    while True:
        chunk = gaps(_chunk_size(rate * (end - now)))
        times = now + np.cumsum(chunk)
        inside = int(np.searchsorted(times, end, side="left"))
        pieces.append(times[:inside])
        if inside < times.size:
            break
        now = float(times[-1])
    return np.concatenate(pieces)


def _deterministic(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """Constant gap ``1/rate`` with a uniform random phase in ``[0, gap)``."""
    gap = 1.0 / rate
    first = start + gap * float(rng.random())
    count = max(0, math.ceil((end - first) / gap))
    times = first + gap * np.arange(count, dtype=np.float64)
    return times[times < end]


def _onoff(
    spec: ArrivalSpec, rate: float, start: float, end: float, rng: np.random.Generator
) -> np.ndarray:
    """``spec.process`` arrivals during on periods only.

    The inner process runs on an "on-time" clock that stops during off periods, so a
    deterministic process keeps its spacing across an off period and a Poisson process is
    exactly Poisson inside every on period.
    """
    on, off = float(spec.on), float(spec.off)
    period = on + off
    cycles = math.floor((end - start) / period)
    on_total = cycles * on + min(end - start - cycles * period, on)
    inner = ArrivalSpec(kind=spec.process, rate=rate)
    on_clock = generate_arrivals(inner, rate, 0.0, on_total, rng)
    cycle = np.floor(on_clock / on)
    # Rounding can put an offset a hair outside [0, on); keep it inside the on period.
    offset = np.clip(on_clock - cycle * on, 0.0, np.nextafter(on, 0.0))
    times = start + cycle * period + offset
    return times[(times >= start) & (times < end)]


def _time_changed(process: Literal["poisson", "deterministic"], mass: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Arrivals of a unit-rate ``process`` on ``[0, mass)`` of the integrated-rate clock."""
    if mass <= 0:
        return np.empty(0, dtype=np.float64)
    return generate_arrivals(ArrivalSpec(kind=process, rate=1.0), 1.0, 0.0, mass, rng)


def _ramp(spec: ArrivalSpec, rate: float, start: float, end: float,
          rng: np.random.Generator) -> np.ndarray:
    """Rate ``rate + (rate_end - rate) * (t - start) / (end - start)``: the unit-rate process
    on the clock ``L(t) = rate*u + slope*u^2/2`` (``u = t - start``), mapped back exactly."""
    r0 = rate
    r1 = float(spec.rate_end if spec.rate_end is not None else rate)
    span = end - start
    half_slope = (r1 - r0) / (2.0 * span)
    mass = r0 * span + half_slope * span * span
    if not math.isfinite(mass):  # a span so short (1e-320 s) that the slope overflows
        mass = 0.5 * (r0 + r1) * span
    clock = _time_changed(spec.process, mass, rng)
    # u solves half_slope*u^2 + r0*u = L; this form is stable for half_slope -> 0
    u = 2.0 * clock / (r0 + np.sqrt(np.maximum(r0 * r0 + 4.0 * half_slope * clock, 0.0)))
    times = start + u
    return times[times < end]


def _piecewise(spec: ArrivalSpec, start: float, end: float,
               rng: np.random.Generator) -> np.ndarray:
    """Rate ``rates[i]`` from ``start + times[i]``: the unit-rate process on the piecewise-linear
    integrated-rate clock, mapped back by linear interpolation (exact)."""
    edges = start + np.asarray(spec.times, dtype=np.float64)
    rates = np.asarray(spec.rates, dtype=np.float64)
    keep = edges < end
    edges, rates = edges[keep], rates[keep]
    bounds = np.append(edges, end)
    mass = np.concatenate(([0.0], np.cumsum(rates * np.diff(bounds))))
    clock = _time_changed(spec.process, float(mass[-1]), rng)
    times = np.interp(clock, mass, bounds)
    return times[(times >= start) & (times < end)]
