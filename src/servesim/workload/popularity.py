"""Multi-model popularity: per-model rates with a production-like long tail, and the check of
the expected number of concurrently active models.

Rates (:func:`model_rates`) are deterministic: model ``i`` (0 = most popular) gets the
``(i + 0.5) / M`` upper quantile of the law, so a small deployment still has the law's shape
and no seed is involved.

- ``equal``: every model at the mean rate.
- ``power_law``: rate of model ``i`` proportional to ``(i + 1) ** -exponent`` (Zipf).
- ``lognormal``: quantiles of a lognormal with log-space std ``sigma``. With infinitely many
  models the least popular fraction ``q`` would receive ``Phi(Phi^-1(q) - sigma)`` of the
  requests (:func:`lognormal_sigma_for`); with ``M`` quantiles the top of the law is cut off,
  so the parameter is better solved on the actual rates (:func:`solve_tail`, or
  ``tail_fraction`` / ``tail_share`` in the scenario): 779 models of which 94 % receive 1.35 %
  of the requests is ``sigma = 4.29`` (power law: exponent 1.97).

The rates are then scaled so their mean is the requested mean rate; with ``min_rate`` /
``max_rate`` they are clipped and the scale is solved (bisection) so the *clipped* rates have
that mean, e.g. 47 models with rates in [0.01, 1.13] req/s and mean 0.037.

Active models: a model is active in a window of ``T`` seconds if it receives at least one
request in it. For Poisson arrivals at rates ``lambda_i`` the expected count is
``E[m] = sum_i (1 - exp(-lambda_i T))``, i.e. ``M (1 - exp(-lambda T))`` for equal rates
(lambda = 0.037 req/s, T = 16.79 s: 46.3 of 100 models). :func:`observed_active_models` counts
the same thing on arrival times, to check a generated or recorded workload against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from servesim.config import fld
from servesim.errors import ScenarioError

__all__ = [
    "PopularitySpec",
    "expected_active_models",
    "law_parameter",
    "lognormal_sigma_for",
    "model_rates",
    "observed_active_models",
    "solve_tail",
    "tail_share",
]

_NORMAL = NormalDist()


@dataclass(frozen=True)
class PopularitySpec:
    """How the per-model rate is spread over the models (``workload.popularity``).

    Applies to the one-source-per-model default and to sources with ``model: '*'``; the
    source's (or workload's) rate is the *mean* per-model rate. Model 0 is the most popular.
    """

    kind: Literal["equal", "power_law", "lognormal"] = fld(
        "equal",
        "equal: every model at the rate; power_law: model i at a rate proportional to "
        "(i+1)^-exponent; lognormal: quantiles of a lognormal with log-space std `sigma` "
        "(production-like long tail: 779 models with sigma 4.29 give 94 % of the models "
        "1.35 % of the requests)",
    )
    exponent: float = fld(1.0, "power_law: Zipf exponent", ge=0)
    sigma: float = fld(2.0, "lognormal: standard deviation of log(rate)", ge=0)
    tail_fraction: float | None = fld(
        None,
        "with tail_share: solve sigma (lognormal) or exponent (power_law) so that the least "
        "popular tail_fraction of the models receives tail_share of the requests",
        gt=0, lt=1,
    )
    tail_share: float | None = fld(
        None, "share of requests received by the least popular tail_fraction of models",
        gt=0, lt=1,
    )
    min_rate: float | None = fld(
        None, "clip every model's rate to at least this (req/s); the mean is kept", gt=0
    )
    max_rate: float | None = fld(
        None, "clip every model's rate to at most this (req/s); the mean is kept", gt=0
    )

    def validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        if (self.tail_fraction is None) != (self.tail_share is None):
            missing = "tail_share" if self.tail_share is None else "tail_fraction"
            raise ScenarioError(f"{p}{missing}: tail_fraction and tail_share go together")
        if self.tail_fraction is not None and self.kind == "equal":
            raise ScenarioError(f"{p}tail_fraction: needs kind power_law or lognormal")
        if (self.tail_fraction is not None and self.tail_share is not None
                and self.tail_share >= self.tail_fraction):
            raise ScenarioError(
                f"{p}tail_share: must be < tail_fraction ({self.tail_fraction}): a tail of "
                "the least popular models gets less than its share of models"
            )
        if (self.min_rate is not None and self.max_rate is not None
                and self.min_rate > self.max_rate):
            raise ScenarioError(f"{p}min_rate: must be <= max_rate ({self.max_rate})")


def _shape(kind: str, parameter: float, models: int) -> np.ndarray:
    """Relative rates (mean 1), most popular first; ``parameter`` is the exponent (power_law)
    or sigma (lognormal)."""
    rank = np.arange(models, dtype=np.float64)
    if kind == "equal":
        weights = np.ones(models)
    elif kind == "power_law":
        weights = (rank + 1.0) ** -parameter
    elif kind == "lognormal":
        upper = 1.0 - (rank + 0.5) / models
        z = np.array([_NORMAL.inv_cdf(q) for q in upper.tolist()])
        # Subtract the largest exponent before exp: sigma * z can be hundreds.
        weights = np.exp(parameter * z - parameter * z.max())
    else:
        raise ValueError(f"unknown popularity kind {kind!r}")
    return weights / weights.mean()


def solve_tail(kind: str, models: int, fraction: float, share: float) -> float:
    """The exponent (power_law) or sigma (lognormal) for which the least popular ``fraction``
    of ``models`` models receives ``share`` of the requests (bisection; the share falls as the
    parameter grows). Raises ValueError when no parameter in [0, 60] reaches it."""
    def share_at(parameter: float) -> float:
        return tail_share(_shape(kind, parameter, models), fraction)

    lo, hi = 0.0, 60.0
    if not share_at(hi) <= share <= share_at(lo):
        raise ValueError(
            f"no {kind} law over {models} models gives the least popular {fraction:.4g} of "
            f"them a share of {share:.4g} (reachable: {share_at(hi):.3g} to {share_at(lo):.3g})"
        )
    for _ in range(100):
        middle = 0.5 * (lo + hi)
        if share_at(middle) > share:
            lo = middle
        else:
            hi = middle
    return 0.5 * (lo + hi)


def law_parameter(spec: PopularitySpec, models: int) -> float:
    """The exponent or sigma in use: the spec's, or solved from ``tail_fraction`` and
    ``tail_share``."""
    if spec.tail_fraction is not None and spec.tail_share is not None:
        return solve_tail(spec.kind, models, spec.tail_fraction, spec.tail_share)
    return spec.exponent if spec.kind == "power_law" else spec.sigma


def model_rates(spec: PopularitySpec, models: int, mean_rate: float,
                path: str = "workload.popularity") -> np.ndarray:
    """Per-model rates (req/s, float64, most popular first) with mean ``mean_rate``.

    Raises :class:`ScenarioError` when ``min_rate`` / ``max_rate`` make that mean unreachable.
    """
    if models < 1:
        raise ValueError(f"models must be >= 1, got {models}")
    try:
        base = _shape(spec.kind, law_parameter(spec, models), models)
    except ValueError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    lo = spec.min_rate if spec.min_rate is not None else 0.0
    hi = spec.max_rate if spec.max_rate is not None else math.inf
    if not lo <= mean_rate <= hi:
        raise ScenarioError(
            f"{path}: mean rate {mean_rate:g} req/s is outside [min_rate, max_rate] = "
            f"[{lo:g}, {hi:g}]"
        )
    if lo == 0.0 and hi == math.inf:
        return base * mean_rate

    def mean_at(scale: float) -> float:
        return float(np.clip(base * scale, lo, hi).mean())

    # mean_at increases with scale from >= lo (scale 0) to <= hi: bisect in log space.
    small, large = 1e-300, 1.0
    while mean_at(large) < mean_rate:
        large *= 2.0
        if large > 1e300:
            break
    for _ in range(400):
        middle = math.sqrt(small * large)
        if mean_at(middle) < mean_rate:
            small = middle
        else:
            large = middle
    return np.clip(base * large, lo, hi)


def tail_share(rates: np.ndarray, fraction: float) -> float:
    """Share of all requests received by the least popular ``fraction`` of the models."""
    ordered = np.sort(np.asarray(rates, dtype=np.float64))
    count = int(round(fraction * ordered.size))
    return float(ordered[:count].sum() / ordered.sum())


def lognormal_sigma_for(fraction: float, share: float) -> float:
    """``sigma`` of lognormal rates whose least popular ``fraction`` of models receives
    ``share`` of the requests (in the limit of many models)."""
    if not (0 < fraction < 1 and 0 < share < 1):
        raise ValueError("fraction and share must be in (0, 1)")
    return _NORMAL.inv_cdf(fraction) - _NORMAL.inv_cdf(share)


def expected_active_models(rates: np.ndarray | float, window: float, models: int = 1) -> float:
    """``E[m] = sum_i (1 - exp(-rate_i * window))``: models with at least one Poisson arrival
    in a window of ``window`` seconds. A scalar rate stands for ``models`` equal rates."""
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim == 0:
        rates = np.full(models, float(rates))
    return float((-np.expm1(-rates * window)).sum())


def observed_active_models(
    times: np.ndarray, model: np.ndarray, models: int, window: float,
    start: float | None = None, end: float | None = None, samples: int = 2000,
) -> float:
    """Mean number of models with at least one arrival in ``[s, s + window)``, over
    ``samples`` window starts ``s`` evenly spread in ``[start, end - window]`` (defaults: the
    first and last arrival)."""
    times = np.asarray(times, dtype=np.float64)
    model = np.asarray(model)
    if times.size == 0:
        return 0.0
    start = float(times.min()) if start is None else start
    end = float(times.max()) if end is None else end
    if end - window <= start:
        raise ValueError(f"the span [{start:g}, {end:g}] is shorter than the window {window:g}")
    starts = np.linspace(start, end - window, samples)
    active = np.zeros(samples)
    order = np.lexsort((times, model))
    sorted_model, sorted_times = model[order], times[order]
    bounds = np.searchsorted(sorted_model, np.arange(models + 1))
    for m in range(models):
        own = sorted_times[bounds[m]:bounds[m + 1]]
        if own.size == 0:
            continue
        nxt = np.searchsorted(own, starts, side="left")
        has = nxt < own.size
        active[has] += own[nxt[has]] < starts[has] + window
    return float(active.mean())
