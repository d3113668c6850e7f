"""Statistics of a trace, for ``servesim traces stats`` (check a trace before simulating it).

:func:`trace_stats` summarises arrival times and lengths; :func:`file_stats` reads a trace of any
format (a ServeGen rate trace is regenerated over a span first). Definitions:

- ``duration_s``: last arrival - first arrival; ``rate_rps``: requests / duration_s;
- ``interarrival_cv``: standard deviation / mean of the gaps between consecutive arrivals
  (1 for Poisson; null with fewer than 3 requests or when every gap is 0);
- ``input`` / ``output``: mean, median, p90, p99 of the token counts (linear interpolation);
- ``active_models`` (with a window ``T``): the mean number of models with at least one
  arrival in a window of ``T`` seconds, observed and expected from each model's mean rate as
  ``sum_i (1 - exp(-rate_i T))`` (:mod:`servesim.workload.popularity`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from servesim.errors import TraceError
from servesim.workload import servegen
from servesim.workload.arrivals import MAX_ARRIVALS
from servesim.workload.formats import detect_format, read_trace
from servesim.workload.popularity import expected_active_models, observed_active_models

__all__ = ["STATS_KEYS", "file_stats", "format_stats", "trace_stats"]

STATS_KEYS = ("requests", "duration_s", "rate_rps", "interarrival_cv", "input", "output")
"""Keys every stats object has (``--json``); more keys may follow them."""

DEFAULT_SERVEGEN_SPAN = 3600.0


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _lengths(values: np.ndarray | None) -> dict[str, float | None] | None:
    if values is None or values.size == 0:
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "median": float(p50), "p90": float(p90),
            "p99": float(p99)}


def trace_stats(
    time: np.ndarray,
    inputs: np.ndarray | None,
    outputs: np.ndarray | None,
    model: np.ndarray | None = None,
    models: int = 0,
    window: float | None = None,
) -> dict[str, Any]:
    """The stats object of arrival ``time`` (seconds, sorted) and lengths (None: unknown).

    With ``model`` (int index per request, ``models`` in all) and ``window`` seconds, adds
    ``active_models``.
    """
    time = np.asarray(time, dtype=np.float64)
    n = int(time.size)
    duration = float(time[-1] - time[0]) if n else 0.0
    gaps = np.diff(time)
    cv = None
    if gaps.size >= 2 and gaps.mean() > 0:
        cv = _finite(float(gaps.std() / gaps.mean()))
    out: dict[str, Any] = {
        "requests": n,
        "duration_s": duration,
        "rate_rps": n / duration if duration > 0 else None,
        "interarrival_cv": cv,
        "input": _lengths(inputs),
        "output": _lengths(outputs),
    }
    if model is not None and models > 0:
        counts = np.bincount(np.asarray(model, dtype=np.int64), minlength=models)
        out["models"] = models
        if window is not None and duration > window:
            rates = counts / duration
            out["active_models"] = {
                "window_s": window,
                "observed": observed_active_models(time, model, models, window),
                "expected": expected_active_models(rates, window),
            }
    return out


def file_stats(
    path: str | Path,
    format: str = "auto",
    sort: bool = False,
    window: float | None = None,
    start: float = 0.0,
    duration: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Stats of a trace file; ``[start, start + duration)`` (trace seconds) restricts it.

    A ServeGen rate trace is regenerated with ``seed`` over that span (default: one hour from
    ``start``); it has no lengths, so ``input`` and ``output`` are null.
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    end = math.inf if duration is None else start + duration
    if fmt == "servegen":
        rates = servegen.read_servegen(path)
        end = min(rates.end, start + (duration or DEFAULT_SERVEGEN_SPAN))
        count = rates.expected_count(start, end)
        if not count <= MAX_ARRIVALS:
            raise TraceError(f"{path}: about {count:.3g} requests would be regenerated in "
                             f"[{start:g}, {end:g}) s; at most {MAX_ARRIVALS:,} (a shorter "
                             "--duration)")
        times, tenant = servegen.generate_arrivals(rates, start, end,
                                                   np.random.default_rng(seed))
        out = trace_stats(times, None, None)
        out.update(format=fmt, tenants=len(rates.tenants), span_s=[start, end],
                   expected_requests=rates.expected_count(start, end), seed=seed)
        return out
    trace = read_trace(path, fmt, sort=sort)
    keep = np.flatnonzero((trace.time >= start) & (trace.time < end))
    if keep.size < len(trace):
        trace = trace.take(keep)
    model = trace.model_index if trace.model is not None else None
    out = trace_stats(trace.time, trace.input, trace.output, model, len(trace.model_names),
                      window)
    out["format"] = fmt
    out["failed"] = trace.failed
    if trace.tenant is not None:
        out["tenants"] = len(set(trace.tenant))
    return out


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1e4:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_stats(stats: dict[str, Any], title: str) -> str:
    """Aligned text of a stats object (what ``servesim traces stats`` prints)."""
    lines = [title]
    rows: list[tuple[str, str]] = [
        ("requests", _num(stats["requests"])),
        ("duration_s", _num(stats["duration_s"])),
        ("rate_rps", _num(stats["rate_rps"])),
        ("interarrival_cv", _num(stats["interarrival_cv"])),
    ]
    for side in ("input", "output"):
        values = stats[side]
        text = "-" if values is None else "  ".join(
            f"{key} {_num(values[key])}" for key in ("mean", "median", "p90", "p99"))
        rows.append((f"{side}_tokens", text))
    for key in ("failed", "models", "tenants", "expected_requests"):
        if stats.get(key) is not None:
            rows.append((key, _num(stats[key])))
    active = stats.get("active_models")
    if active is not None:
        rows.append((f"active_models ({_num(active['window_s'])} s)",
                     f"observed {active['observed']:.2f}  expected {active['expected']:.2f}"))
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    return "\n".join(lines)
