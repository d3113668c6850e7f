"""Metrics: per-request, per-instance, per-tenant tables, the timeline and the summary.

Definitions follow ``specs/metrics-and-workloads.md``:

- token-level SLO attainment of a request (Aegaeon): the exact scan over token gaps, see
  :func:`slo_attainment`; failed (never started within ``slo.start_timeout``), rejected and
  unfinished requests count 0; the system figure is the mean over requests;
- ``slo_met``: TTFT and every inter-token gap within their SLO (request-level rate);
- TBT percentiles are over every inter-token gap of the run, read from a log histogram with
  200 bins per decade (relative error under 0.6 %); TTFT and E2E percentiles are exact.

Summary keys are a stable contract (ARCHITECTURE.md, "Outputs"); the fairness keys
``jain_index``, ``service_diff_max`` and ``service_diff_avg`` are defined in
:mod:`servesim.fairness` for every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from servesim import fairness, kernels
from servesim.engine.instance import PHASES
from servesim.engine.requests import FAIL_REASONS, Status

if TYPE_CHECKING:
    from servesim.engine.world import World

SUMMARY_KEYS = (
    "requests_total", "requests_finished", "requests_failed", "slo_attainment",
    "slo_met_fraction", "ttft_p50", "ttft_p90", "ttft_p99", "tbt_p50", "tbt_p90", "tbt_p99",
    "e2e_p50", "e2e_p99", "throughput_tokens_per_s", "goodput_rps", "gpu_utilization",
    "switches", "switch_seconds", "jain_index", "service_diff_max", "service_diff_avg",
    "sim_seconds", "events", "wall_seconds",
)

#: Weights of input and output tokens in a request's service (VTC's w_p, w_q).
SERVICE_INPUT_WEIGHT = 1.0
SERVICE_OUTPUT_WEIGHT = 2.0


def slo_attainment(token_times: Sequence[float] | np.ndarray, arrival: float, ttft: float,
                   tbt: float) -> float:
    """Token-level SLO attainment of one request (Aegaeon's definition).

    Args:
        token_times: absolute emission times of the request's output tokens (seconds).
        arrival: arrival time (seconds).
        ttft: time-to-first-token SLO (seconds).
        tbt: time-between-tokens SLO (seconds).

    Returns:
        The fraction of the request's service time covered by met deadlines, in [0, 1];
        0 for a request with no token.

    >>> slo_attainment([3, 6, 7, 8], arrival=0, ttft=3, tbt=2)
    0.625
    """
    times = np.asarray(token_times, dtype=np.float64)
    if times.size == 0:
        return 0.0
    gaps = np.diff(np.concatenate(([float(arrival)], times)))
    return float(kernels.slo_attainment_from_gaps(gaps, float(ttft), float(tbt)))


def _final_attainment(world: World) -> np.ndarray:
    req = world.requests
    total = req.last_token - req.arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        qos = req.slo_qos + np.minimum(req.slo_target, total - req.slo_start)
        att = np.where(total > 0, qos / total, 1.0)
    ok = (req.status == Status.FINISHED) & (req.generated > 0)
    return np.where(ok, att, 0.0)


def _percentile(values: np.ndarray, q: float) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.percentile(values, q)) if values.size else None


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """:func:`_percentile` at each of ``qs``."""
    values = values[np.isfinite(values)]
    if not values.size:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(values, list(qs))]


def hist_percentile(hist: np.ndarray, q: float) -> float | None:
    """Percentile ``q`` (0-100) of the gap histogram (geometric bin centre)."""
    total = int(hist.sum())
    if total == 0:
        return None
    rank = q / 100.0 * total
    idx = int(np.searchsorted(np.cumsum(hist), max(rank, 1e-12), side="left"))
    idx = min(idx, hist.shape[0] - 1)
    per = kernels.GAP_HIST_PER_DECADE
    return float(kernels.GAP_HIST_LO * 10 ** ((idx + 0.5) / per))


def requests_frame(world: World, model_names: Sequence[str], tenant_names: Sequence[str]
                   ) -> pd.DataFrame:
    """One row per request (see docs/outputs.md for the columns)."""
    req = world.requests
    status_names = np.array([s.name.lower() for s in Status])
    reason_names = np.array([FAIL_REASONS.get(i, "") for i in range(max(FAIL_REASONS) + 1)])
    gaps = np.maximum(req.generated - 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tbt_mean = np.where(gaps > 0, req.gap_sum / gaps, np.nan)
    ttft = req.first_token - req.arrival
    finished = req.status == Status.FINISHED
    slo_met = finished & (ttft <= req.ttft_slo) & (req.late_gaps == 0)
    frame = pd.DataFrame(
        {
            "id": np.arange(req.n, dtype=np.int64),
            "arrival": req.arrival,
            "model": pd.Categorical.from_codes(req.model, categories=pd.Index(list(model_names))),
            "tenant": pd.Categorical.from_codes(req.tenant,
                                                categories=pd.Index(list(tenant_names))),
            "source": req.source,
            "input_len": req.input_len,
            "output_len": req.output_len,
            "generated": req.generated,
            "status": status_names[req.status],
            "fail_reason": reason_names[req.fail_reason],
            "instance": req.instance,
            "first_scheduled": req.first_scheduled,
            "first_token": req.first_token,
            "last_token": req.last_token,
            "finish": req.finish,
            "ttft": ttft,
            "e2e": np.where(finished, req.finish - req.arrival, np.nan),
            "queue_delay": req.first_scheduled - req.arrival,
            "tbt_mean": tbt_mean,
            "tbt_max": np.where(gaps > 0, req.gap_max, np.nan),
            "late_gaps": req.late_gaps,
            "preemptions": req.preemptions,
            "switch_wait": req.switch_wait,
            "ttft_slo": req.ttft_slo,
            "tbt_slo": req.tbt_slo,
            "slo_attainment": _final_attainment(world),
            "slo_met": slo_met,
        }
    )
    return frame


def instances_frame(world: World, model_names: Sequence[str]) -> pd.DataFrame:
    """One row per instance: busy seconds per phase, idle, utilization, switches."""
    span = max(world.env.now, 1e-12)
    rows = []
    for inst in world.instances:
        busy = sum(inst.busy.values())
        rows.append(
            {
                "instance": inst.index,
                "name": inst.name,
                "gpu": inst.gpu.name,
                "tp": inst.tp,
                "role": inst.role,
                "model": model_names[inst.model] if inst.model >= 0 else None,
                **{f"{p}_seconds": inst.busy[p] for p in PHASES},
                "idle_seconds": max(0.0, span - busy),
                "utilization": busy / span,
                "switches": inst.switches,
                "switch_seconds": inst.switch_seconds,
                "kv_capacity_blocks": inst.kv_capacity_blocks,
                "kv_blocks_peak": inst.kv_blocks_peak,
            }
        )
    return pd.DataFrame(rows)


def service(frame: pd.DataFrame) -> np.ndarray:
    """Service of each request: ``w_p * input + w_q * generated`` (input counted once started)."""
    started = frame["first_token"].notna().to_numpy()
    return np.where(
        started,
        SERVICE_INPUT_WEIGHT * frame["input_len"].to_numpy()
        + SERVICE_OUTPUT_WEIGHT * frame["generated"].to_numpy(),
        0.0,
    )


def tenants_frame(frame: pd.DataFrame, weights: np.ndarray | None = None) -> pd.DataFrame:
    """One row per tenant: counts, tokens, service, weight, weighted service (service /
    weight), attainment, TTFT percentiles. ``weights`` are per tenant code (None: 1)."""
    work = frame.assign(service=service(frame))
    grouped = work.groupby("tenant", observed=False)
    out = pd.DataFrame(
        {
            "requests": grouped.size(),
            "finished": grouped["status"].apply(lambda s: int((s == "finished").sum())),
            "failed": grouped["status"].apply(lambda s: int((s == "failed").sum())),
            "rejected": grouped["status"].apply(lambda s: int((s == "rejected").sum())),
            "input_tokens": grouped["input_len"].sum(),
            "output_tokens": grouped["generated"].sum(),
            "service": grouped["service"].sum(),
            "slo_attainment": grouped["slo_attainment"].mean(),
            "slo_met_fraction": grouped["slo_met"].mean(),
            "ttft_p50": grouped["ttft"].median(),
            "ttft_p99": grouped["ttft"].quantile(0.99),
        }
    )
    w = np.ones(len(out))
    if weights is not None:
        k = min(len(out), int(np.asarray(weights).shape[0]))
        w[:k] = np.asarray(weights, dtype=np.float64)[:k]
    at = list(out.columns).index("service") + 1
    out.insert(at, "weight", w)
    out.insert(at + 1, "weighted_service", out["service"] / w)
    return out.reset_index()


def _waiting_at(arrival: np.ndarray, first_sched: np.ndarray, finish: np.ndarray,
                times: np.ndarray) -> list[int]:
    """Requests waiting at each time ``e``: ``arrival <= e``, and neither first scheduled nor
    finished by ``e`` (NaN: not yet). Counted with two sorted arrays and binary search,
    ``O((n + windows) log n)``: a request is waiting iff it arrived and
    ``max(arrival, leave) > e`` with ``leave`` the first of its two times (NaN: never)."""
    leave = np.fmin(first_sched, finish)
    leave[np.isnan(leave)] = np.inf
    np.maximum(arrival, leave, out=leave)  # in place: one temporary of n floats, not five
    leave.sort()
    gone = np.searchsorted(leave, times, side="right")
    del leave
    arrived = np.searchsorted(np.sort(arrival), times, side="right")
    return (arrived - gone).tolist()


def timeline_frame(frame: pd.DataFrame, interval: float, end: float) -> pd.DataFrame:
    """Per window and tenant: arrivals, finishes, service rate and queue length at window end.

    A request's service (``w_p * input + w_q * output``) is spread uniformly over the interval
    from its first to its last token (``specs/fairness.md``). ``service_rate`` is over the
    row's window of ``interval`` seconds, ``windowed_service_rate`` over the trailing
    :data:`servesim.fairness.SERVICE_WINDOW` (60 s); ``backlogged``: requests wait at ``time``;
    ``service_diff``: max - min accumulated service over the tenants backlogged at ``time``
    (the same on every row of that time).
    """
    n_win = max(1, int(np.ceil(end / interval)))
    edges = np.arange(n_win + 1) * interval
    tenants = list(frame["tenant"].cat.categories)
    codes = frame["tenant"].cat.codes.to_numpy()
    arrival = frame["arrival"].to_numpy()
    finish = frame["finish"].to_numpy()
    first = frame["first_token"].to_numpy()
    last = frame["last_token"].to_numpy()
    first_sched = frame["first_scheduled"].to_numpy()
    svc = service(frame)
    diff = fairness.service_difference(frame, edges[1:])
    window = fairness.SERVICE_WINDOW
    rows = []
    for t, name in enumerate(tenants):
        mine = codes == t
        arr_counts = np.histogram(arrival[mine], bins=edges)[0]
        fin = finish[mine & (frame["status"].to_numpy() == "finished")]
        fin_counts = np.histogram(fin, bins=edges)[0]
        # service spread uniformly over [first, last]
        # the curve at the window edges and at the edges minus the trailing window, in one
        # evaluation (one sort; each time is evaluated on its own, so the values are the same)
        both = fairness.accumulated_service(first[mine], last[mine], svc[mine],
                                            np.concatenate((edges, edges[1:] - window)))
        acc = both[:n_win + 1]
        rate = np.diff(acc) / interval
        trailing = (acc[1:] - both[n_win + 1:]) / window
        waiting_end = _waiting_at(arrival[mine], first_sched[mine], finish[mine], edges[1:])
        for k in range(n_win):
            rows.append(
                {
                    "time": float(edges[k + 1]),
                    "tenant": name,
                    "arrivals": int(arr_counts[k]),
                    "finished": int(fin_counts[k]),
                    "service_rate": float(rate[k]),
                    "windowed_service_rate": float(trailing[k]),
                    "accumulated_service": float(acc[k + 1]),
                    "queue_length": waiting_end[k],
                    "backlogged": waiting_end[k] > 0,
                    "service_diff": float(diff[k]),
                }
            )
    return pd.DataFrame(rows)


def summary(world: World, frame: pd.DataFrame, duration: float, wall_seconds: float
            ) -> dict[str, Any]:
    """The flat summary dict (keys :data:`SUMMARY_KEYS`)."""
    req = world.requests
    n = req.n
    span = float(world.env.now)
    finished = frame["status"].to_numpy() == "finished"
    failed = np.isin(frame["status"].to_numpy(), ("failed", "unfinished"))
    busy = sum(sum(i.busy.values()) for i in world.instances)
    n_inst = len(world.instances)
    # several percentiles of a column in one call: one partition of the column instead of
    # one per percentile (NumPy computes each from the same order statistics: same values)
    ttft_p = _percentiles(frame["ttft"].to_numpy(), (50, 90, 99))
    e2e_p = _percentiles(frame["e2e"].to_numpy(), (50, 99))
    out: dict[str, Any] = {
        "requests_total": int(n),
        "requests_finished": int(finished.sum()),
        "requests_failed": int(failed.sum()),
        "slo_attainment": float(frame["slo_attainment"].mean()) if n else None,
        "slo_met_fraction": float(frame["slo_met"].mean()) if n else None,
        "ttft_p50": ttft_p[0],
        "ttft_p90": ttft_p[1],
        "ttft_p99": ttft_p[2],
        "tbt_p50": hist_percentile(world.gap_hist, 50),
        "tbt_p90": hist_percentile(world.gap_hist, 90),
        "tbt_p99": hist_percentile(world.gap_hist, 99),
        "e2e_p50": e2e_p[0],
        "e2e_p99": e2e_p[1],
        "throughput_tokens_per_s": float(req.generated.sum()) / span if span > 0 else 0.0,
        "goodput_rps": float(frame["slo_met"].sum()) / duration,
        "gpu_utilization": busy / (n_inst * span) if span > 0 and n_inst else 0.0,
        "switches": int(sum(i.switches for i in world.instances)),
        "switch_seconds": float(sum(i.switch_seconds for i in world.instances)),
        **fairness.fairness_summary(frame, world.tenant_weights, duration),
        "sim_seconds": span,
        "events": int(world.env.events),
        "wall_seconds": wall_seconds,
    }
    assert tuple(out) == SUMMARY_KEYS
    return out
