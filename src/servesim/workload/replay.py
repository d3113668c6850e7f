"""Turn ``workload.trace`` into request columns: read, window, rescale, cut, assign models.

Order of operations (:func:`replay_trace`): read the trace (or regenerate a ServeGen rate trace),
drop what precedes ``trace_start`` and shift time so that ``trace_start`` is 0, scale time by
``time_scale`` (or by the factor that makes the mean rate ``trace_rate``), keep arrivals before
the scenario's ``duration``. Lengths then get the workload's scales and context caps in
:func:`servesim.simulate.prepare`, like generated requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servesim.errors import ScenarioError, TraceError, did_you_mean
from servesim.workload import servegen
from servesim.workload.arrivals import MAX_ARRIVALS
from servesim.workload.formats import detect_format, read_trace
from servesim.workload.lengths import sample_lengths
from servesim.workload.spec import WorkloadSpec

__all__ = ["Replay", "assign_models", "replay_trace"]

DEFAULT_TRACE_MODEL = "model"
"""Deployed name for the requests of a trace without a model column when nothing is deployed."""


@dataclass(frozen=True, eq=False)
class Replay:
    """Requests of a trace, ready for the request table (``time`` sorted ascending)."""

    time: np.ndarray
    """float64 seconds of simulated time."""
    model_names: tuple[str, ...] | None
    """models named by the trace (None: no model column, see :func:`assign_models`)."""
    model_index: np.ndarray
    """int64 index into ``model_names`` per request (zeros without a model column)."""
    tenants: tuple[str, ...]
    tenant_index: np.ndarray
    input: np.ndarray
    output: np.ndarray
    format: str
    failed: int = 0


def _mean_rate(time: np.ndarray) -> float:
    span = float(time[-1] - time[0]) if time.size else 0.0
    return time.size / span if span > 0 else 0.0


def replay_trace(
    wl: WorkloadSpec, path: Path, duration: float, seed: int, base_dir: Path | None = None
) -> Replay:
    """The requests that ``wl.trace`` (resolved to ``path``) puts in ``[0, duration)``."""
    fmt = wl.trace_format if wl.trace_format != "auto" else detect_format(path)
    if fmt == "servegen":
        return _servegen(wl, path, duration, seed, base_dir)
    trace = read_trace(path, fmt, sort=wl.trace_sort)
    keep = np.flatnonzero(trace.time >= wl.trace_start)
    if keep.size == 0:
        raise TraceError(
            f"{path}: no request at or after workload.trace_start = {wl.trace_start:g} s "
            f"(the trace ends at {trace.time[-1]:g} s)"
        )
    if keep.size < len(trace):
        trace = trace.take(keep)
    time = trace.time - wl.trace_start
    scale = wl.time_scale
    if wl.trace_rate is not None:
        observed = _mean_rate(time)
        if observed <= 0:
            raise TraceError(f"{path}: all requests arrive at once, its rate cannot be rescaled "
                             "(workload.trace_rate)")
        scale = observed / wl.trace_rate
    time = time * scale
    inside = time < duration
    if not inside.any():
        raise TraceError(f"{path}: no request of the trace arrives before the scenario's "
                         f"duration ({duration:g} s) after trace_start and scaling")
    tenants: tuple[str, ...] = ("default",)
    tenant_index = np.zeros(len(trace), dtype=np.int32)
    if trace.tenant is not None:
        tenants = tuple(dict.fromkeys(trace.tenant))
        position = {name: i for i, name in enumerate(tenants)}
        tenant_index = np.fromiter(map(position.__getitem__, trace.tenant), dtype=np.int32,
                                   count=len(trace))
    return Replay(
        time=time[inside],
        model_names=trace.model_names if trace.model is not None else None,
        model_index=trace.model_index[inside],
        tenants=tenants,
        tenant_index=tenant_index[inside],
        input=trace.input[inside],
        output=trace.output[inside],
        format=fmt,
        failed=trace.failed,
    )


def _servegen(
    wl: WorkloadSpec, path: Path, duration: float, seed: int, base_dir: Path | None
) -> Replay:
    rates = servegen.read_servegen(path)
    start = wl.trace_start
    if start >= rates.end:
        raise TraceError(f"{path}: workload.trace_start = {start:g} s is after the trace's end "
                         f"({rates.end:g} s)")
    scale = wl.time_scale
    end = min(rates.end, start + duration / scale)
    factor = 1.0
    if wl.trace_rate is not None:
        expected = rates.expected_count(start, end) / (end - start)
        if expected <= 0:
            raise TraceError(f"{path}: no traffic in [{start:g}, {end:g}) s of the trace; its "
                             "rate cannot be rescaled (workload.trace_rate)")
        factor = wl.trace_rate / expected
    count = rates.expected_count(start, end) * factor
    if not count <= MAX_ARRIVALS:
        raise TraceError(f"{path}: about {count:.3g} requests would be regenerated in [{start:g}, "
                         f"{end:g}) s of the trace; at most {MAX_ARRIVALS:,} per run (lower "
                         "workload.trace_rate or the duration)")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    times, tenant = servegen.generate_arrivals(rates, start, end, rng, rate_factor=factor)
    inputs, outputs = sample_lengths(wl.lengths, times.size, rng, base_dir=base_dir)
    return Replay(
        time=(times - start) * scale,
        model_names=None,
        model_index=np.zeros(times.size, dtype=np.int64),
        tenants=rates.tenants,
        tenant_index=tenant,
        input=inputs,
        output=outputs,
        format="servegen",
    )


def assign_models(replay: Replay, deployed: list[str], trace_model: str | None,
                  seed: int) -> np.ndarray:
    """Deployed-model code (int32) per request of a trace without a model column.

    ``trace_model`` names the model; without it one deployed model takes everything, several
    share the requests uniformly at random (a stream of its own, from ``seed``).
    """
    n = replay.time.size
    if trace_model is not None:
        if trace_model not in deployed:
            raise ScenarioError(
                f"workload.trace_model: {trace_model!r} is not a deployed model"
                f"{did_you_mean(trace_model, deployed)}; deployed: {', '.join(deployed[:10])}"
                + (" ..." if len(deployed) > 10 else "")
            )
        return np.full(n, deployed.index(trace_model), dtype=np.int32)
    if len(deployed) == 1:
        return np.zeros(n, dtype=np.int32)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
    return rng.integers(0, len(deployed), size=n).astype(np.int32)
