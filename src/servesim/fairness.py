"""Fairness metrics over a run's request table (``specs/fairness.md``).

Definitions (service weights ``w_p = 1``, ``w_q = 2`` unless given):

- **service** of a request: ``w_p * input + w_q * generated`` (0 for a request that never got a
  token), spread uniformly over the interval from its first to its last token (a one-token
  request counts at once); :func:`accumulated_service` is the resulting per-tenant curve;
- **service rate** over a window: the accumulated service gained in the window / its length
  (:func:`service_rates`); **demand rate**: the service of the requests that *arrived* in the
  window / its length;
- a tenant is **backlogged** at ``t`` when it has requests that arrived and were not yet
  scheduled (its queue is not empty, VTC's definition);
- **absolute service difference** at ``t``: ``max - min`` of the accumulated service of the
  tenants backlogged at ``t`` (0 with fewer than two);
- **VTC table metric** (the VTC artifact's ``get_service_diff_over_time``): at ``ticks - 1``
  equally spaced ticks after ``warmup`` (window of ``window`` seconds centred on each), the sum
  over tenants of ``min(max_service - y_u, |demand_u - y_u|)``; its max, mean and variance over
  the ticks are the table's Max Diff, Avg Diff and Diff Var. As in the artifact, requests that
  never got a token count neither as service nor as demand;
- **Jain's index** over per-tenant service divided by the tenant's weight:
  ``(sum x)^2 / (n * sum x^2)``, over tenants with at least one request. The service counted is
  the one received during the arrival window ``[0, duration]`` (after it every run drains its
  backlog, which would make every policy's totals equal to the demand).

Summary keys (:func:`fairness_summary`): ``jain_index`` and ``service_diff_max`` /
``service_diff_avg`` (the VTC table metric over the arrival window ``[0, duration]``: warmup
``min(30, duration/4)`` s, window ``min(60, duration)`` s, 19 ticks). A single-tenant run has
``jain_index = 1`` and service differences 0 (nobody to be unfair to); a run in which no request
got a token has all three null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "SERVICE_WINDOW", "accumulated_service", "backlogged", "demand_rates", "fairness_summary",
    "jain_index", "plot_service_difference", "plot_service_rates", "request_service",
    "service_curves", "service_difference", "service_rates", "vtc_table_metric",
]

#: Default sliding window (seconds) of service and demand rates.
SERVICE_WINDOW = 60.0


def request_service(frame: pd.DataFrame, w_p: float = 1.0, w_q: float = 2.0) -> np.ndarray:
    """Service of each request: ``w_p * input + w_q * generated``, 0 without a first token."""
    started = frame["first_token"].notna().to_numpy()
    value = (w_p * frame["input_len"].to_numpy(dtype=np.float64)
             + w_q * frame["generated"].to_numpy(dtype=np.float64))
    return np.where(started, value, 0.0)


def accumulated_service(first: np.ndarray, last: np.ndarray, service: np.ndarray,
                        times: np.ndarray) -> np.ndarray:
    """``A(t) = sum_i s_i * clip((t - f_i) / (l_i - f_i), 0, 1)`` at every ``t`` of ``times``.

    Exact and O((n + len(times)) log n): ``A`` is piecewise linear with slope changes at the
    ``f_i`` and ``l_i``. Requests with ``l_i <= f_i`` add ``s_i`` at once at ``l_i``; requests
    with a NaN time are ignored.
    """
    f = np.asarray(first, dtype=np.float64)
    lt = np.asarray(last, dtype=np.float64)
    s = np.asarray(service, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(lt) & (s != 0)
    f, lt, s = f[ok], lt[ok], s[ok]
    out = np.zeros(t.shape[0])
    jump = lt <= f
    if jump.any():
        idx = np.argsort(lt[jump], kind="stable")
        cum = np.concatenate(([0.0], np.cumsum(s[jump][idx])))
        out += cum[np.searchsorted(lt[jump][idx], t, side="right")]
    ramp = ~jump
    if ramp.any():
        f, lt, s = f[ramp], lt[ramp], s[ramp]
        slope = s / (lt - f)
        points = np.concatenate((f, lt))
        deltas = np.concatenate((slope, -slope))
        order = np.argsort(points, kind="stable")
        points, deltas = points[order], deltas[order]
        slopes = np.cumsum(deltas)  # slope right after each breakpoint
        # value at each breakpoint: integral of the slope up to it
        values = np.concatenate(([0.0], np.cumsum(slopes[:-1] * np.diff(points))))
        k = np.searchsorted(points, t, side="right") - 1
        inside = k >= 0
        kk = np.where(inside, k, 0)
        out += np.where(inside, values[kk] + slopes[kk] * (t - points[kk]), 0.0)
    return out


def _codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[Any]]:
    col = frame["tenant"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), list(col.cat.categories)
    cats = pd.Categorical(col)
    return np.asarray(cats.codes), list(cats.categories)


def service_curves(frame: pd.DataFrame, times: np.ndarray, w_p: float = 1.0,
                   w_q: float = 2.0) -> np.ndarray:
    """Accumulated service of every tenant (rows, category order) at ``times`` (columns)."""
    codes, names = _codes(frame)
    svc = request_service(frame, w_p, w_q)
    first = frame["first_token"].to_numpy(dtype=np.float64)
    last = frame["last_token"].to_numpy(dtype=np.float64)
    return np.array([accumulated_service(first[codes == u], last[codes == u],
                                         svc[codes == u], times)
                     for u in range(len(names))]).reshape(len(names), len(times))


def service_rates(frame: pd.DataFrame, centres: np.ndarray, window: float = SERVICE_WINDOW,
                  w_p: float = 1.0, w_q: float = 2.0) -> np.ndarray:
    """Service rate (service/s) of every tenant in windows of ``window`` s centred on
    ``centres``: shape (tenants, centres)."""
    c = np.asarray(centres, dtype=np.float64)
    # both ends of every window in one evaluation (one sort of the curve's breakpoints per
    # tenant instead of two; each time is evaluated on its own, so the values are the same)
    ends = service_curves(frame, np.concatenate((c + window / 2.0, c - window / 2.0)), w_p, w_q)
    hi, lo = ends[:, :c.shape[0]], ends[:, c.shape[0]:]
    return (hi - lo) / window


def demand_rates(frame: pd.DataFrame, centres: np.ndarray, window: float = SERVICE_WINDOW,
                 w_p: float = 1.0, w_q: float = 2.0) -> np.ndarray:
    """Demanded service rate: ``w_p*input + w_q*output`` of the requests arriving in each
    window, / ``window``; shape (tenants, centres)."""
    codes, names = _codes(frame)
    arrival = frame["arrival"].to_numpy(dtype=np.float64)
    demand = (w_p * frame["input_len"].to_numpy(dtype=np.float64)
              + w_q * frame["output_len"].to_numpy(dtype=np.float64))
    c = np.asarray(centres, dtype=np.float64)
    out = np.zeros((len(names), c.shape[0]))
    for u in range(len(names)):
        mine = codes == u
        order = np.argsort(arrival[mine], kind="stable")
        at = arrival[mine][order]
        cum = np.concatenate(([0.0], np.cumsum(demand[mine][order])))
        hi = np.searchsorted(at, c + window / 2.0, side="right")
        lo = np.searchsorted(at, c - window / 2.0, side="left")
        out[u] = (cum[hi] - cum[lo]) / window
    return out


def backlogged(frame: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """Boolean (tenants, times): the tenant has arrived, not yet scheduled requests at t."""
    codes, names = _codes(frame)
    arrival = frame["arrival"].to_numpy(dtype=np.float64)
    scheduled = frame["first_scheduled"].to_numpy(dtype=np.float64)
    finish = frame["finish"].to_numpy(dtype=np.float64)
    # a request leaves the queue when it is first scheduled or resolved without running
    leave = np.fmin(scheduled, finish)
    leave = np.where(np.isnan(leave), np.inf, leave)
    t = np.asarray(times, dtype=np.float64)
    out = np.zeros((len(names), t.shape[0]), dtype=bool)
    for u in range(len(names)):
        mine = codes == u
        arrived = np.searchsorted(np.sort(arrival[mine]), t, side="right")
        left = np.searchsorted(np.sort(leave[mine]), t, side="right")
        out[u] = arrived > left
    return out


def service_difference(frame: pd.DataFrame, times: np.ndarray, w_p: float = 1.0,
                       w_q: float = 2.0) -> np.ndarray:
    """``max - min`` accumulated service over the tenants backlogged at each time (0 when
    fewer than two are)."""
    acc = service_curves(frame, times, w_p, w_q)
    back = backlogged(frame, times)
    hi = np.where(back, acc, -np.inf).max(axis=0, initial=-np.inf)
    lo = np.where(back, acc, np.inf).min(axis=0, initial=np.inf)
    return np.where(back.sum(axis=0) >= 2, hi - lo, 0.0)


def vtc_table_metric(frame: pd.DataFrame, duration: float, window: float = SERVICE_WINDOW,
                     ticks: int = 20, warmup: float = 30.0, w_p: float = 1.0,
                     w_q: float = 2.0) -> dict[str, Any]:
    """The VTC paper's service-difference table metric (module docstring).

    Returns ``{"max", "avg", "var", "ticks", "values"}`` (``values[k]`` at ``ticks[k]``); the
    numbers are None when no request got a token.
    """
    # the columns the metric reads, then the rows (filtering every column of a large request
    # table first would copy all of them)
    used = [c for c in ("tenant", "arrival", "first_token", "last_token", "input_len",
                        "generated", "output_len") if c in frame.columns]
    served = frame[used][frame["first_token"].notna()]
    centres = warmup + (duration - warmup) / ticks * np.arange(1, ticks)
    if served.empty:
        return {"max": None, "avg": None, "var": None, "ticks": centres,
                "values": np.zeros(0)}
    codes = served["tenant"]
    if isinstance(codes.dtype, pd.CategoricalDtype):
        served = served.assign(tenant=codes.cat.remove_unused_categories())
    y = service_rates(served, centres, window, w_p, w_q)
    demand = demand_rates(served, centres, window, w_p, w_q)
    top = y.max(axis=0)
    values = np.minimum(top - y, np.abs(demand - y)).sum(axis=0)
    return {"max": float(values.max()), "avg": float(values.mean()),
            "var": float(values.var()), "ticks": centres, "values": values}


def jain_index(values: np.ndarray) -> float | None:
    """Jain's fairness index ``(sum x)^2 / (n sum x^2)``; 1 for a single value; None when
    empty or all zero."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.any(x):
        return None
    return float(x.sum() ** 2 / (x.size * np.square(x).sum()))


def fairness_summary(frame: pd.DataFrame, weights: np.ndarray | None, duration: float
                     ) -> dict[str, float | None]:
    """``jain_index``, ``service_diff_max``, ``service_diff_avg`` of a run (module docstring).

    ``weights`` are per tenant category code (None: all 1)."""
    codes, names = _codes(frame)
    present = np.bincount(codes, minlength=len(names)) > 0
    per_tenant = service_curves(frame, np.array([float(duration)]))[:, 0]
    w = np.ones(len(names))
    if weights is not None:
        k = min(len(names), int(np.asarray(weights).shape[0]))
        w[:k] = np.asarray(weights, dtype=np.float64)[:k]
    jain = jain_index((per_tenant / w)[present])
    table = vtc_table_metric(frame, duration, window=min(SERVICE_WINDOW, duration),
                             warmup=min(30.0, duration / 4.0))
    return {"jain_index": jain, "service_diff_max": table["max"],
            "service_diff_avg": table["avg"]}


# -- figures (matplotlib is imported on first use) --------------------------------------------


def plot_service_rates(frame: pd.DataFrame, duration: float, window: float = SERVICE_WINDOW,
                       points: int = 100, ax: Any = None, title: str = "") -> Any:
    """The VTC paper's standard figure: each tenant's service rate over time (windows of
    ``window`` s centred on ``points`` ticks over ``[0, duration]``). Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    _, names = _codes(frame)
    ticks = np.linspace(0.0, duration, points)
    rates = service_rates(frame, ticks, window)
    for name, rate in zip(names, rates, strict=True):
        ax.plot(ticks, rate, label=str(name), linewidth=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"service rate ({window:g}-s window, /s)")
    ax.set_xlim(0, duration)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(names) <= 8:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_service_difference(frames: dict[str, pd.DataFrame], duration: float,
                            points: int = 200, ax: Any = None, title: str = "") -> Any:
    """Absolute accumulated-service difference among backlogged tenants over time, one line
    per labelled run (``{"fcfs": result.requests, ...}``). Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ticks = np.linspace(0.0, duration, points)
    for label, frame in frames.items():
        ax.plot(ticks, service_difference(frame, ticks), label=label, linewidth=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("service difference (backlogged)")
    ax.set_xlim(0, duration)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax
