"""VTC, the Virtual Token Counter (Sheng et al., OSDI '24), and its variants.

Policies (all on the shared engine of :mod:`servesim.policies.fairness`):

- ``vtc``: Algorithm 2 of the paper. A counter per tenant charged ``w_p`` per input token at
  admission and ``w_q`` per output token as it is generated (the first output token, produced by
  the prefill, is not charged); the backlogged tenant with the smallest counter is served
  first; the lift (``waiting-min`` as in the reference implementation, or ``paper``) stops a
  returning tenant from claiming service it missed while idle. Per-tenant weights (scenario
  ``tenants.<name>.weight``) divide every charge: weighted VTC (§4.3).
- ``lcf``: least counter first, VTC without the lift (the paper's baseline showing why it
  matters).
- ``vtc-oracle``: VTC with length prediction (§4.4): at admission charge
  ``w_p*input + w_q*predicted_output`` with the prediction uniform in ``out*(1±r)``
  (``predict_range`` r; 0 is the exact oracle), charge only tokens beyond the prediction while
  decoding, refund an over-prediction at the finish.
- ``vtc-predict``: the same with a per-tenant moving average of finished output lengths
  (weight 1/5 on the newest, as the artifact's ``vtc_len_predict``; 0 before the first finish).

Cost functions: ``linear`` (``w_p*n_p + w_q*n_q``) or ``profile``, the paper's fit of the
step time of Llama-2-7B on an A10G, ``h(x, y) = a*x + b*y + c*x*y + d*y^2 + e`` (ms), charged
as ``h(n_p, 0)`` at admission and ``h(n_p, k) - h(n_p, k-1)`` for the k-th charged token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import Job
from servesim.errors import ScenarioError
from servesim.policies.base import register
from servesim.policies.batching import register_order
from servesim.policies.counters import CounterQueue
from servesim.policies.fairness import EngineProfileParams, FairPolicy

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World

#: The paper's profiled cost of Llama-2-7B on an A10G, ms: x, y, x*y, y^2, constant.
PAPER_PROFILE = (0.21001891, 0.10075395, 0.0039868, 0.00324733, 1.14601454)


@dataclass(frozen=True)
class CounterParams:
    """Counter charges shared by the VTC family."""

    w_p: float = fld(1.0, "linear cost: charge per input (prompt) token", ge=0, le=1e6)
    w_q: float = fld(2.0, "linear cost: charge per output token", gt=0, le=1e6)
    cost: Literal["linear", "profile"] = fld(
        "linear",
        "linear: w_p*input + w_q*output; profile: h(x, y) = a*x + b*y + c*x*y + d*y^2 + e with "
        "profile_coefficients (ms of GPU time)",
    )
    profile_coefficients: list[float] = fld(
        factory=lambda: PAPER_PROFILE,
        doc="profile cost: a, b, c, d, e of h(x, y) (default: the paper's fit for Llama-2-7B "
            "on an A10G)",
    )
    weighted: bool = fld(
        True, "divide charges by the tenant's weight (scenario tenants.<name>.weight)"
    )

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if len(self.profile_coefficients) != 5:
            raise ScenarioError(
                f"{prefix}profile_coefficients: expected 5 numbers (a, b, c, d, e), got "
                f"{len(self.profile_coefficients)}"
            )
        parent = getattr(super(), "validate", None)
        if parent is not None:
            parent(path)


@dataclass(frozen=True)
class VTCOrderParams(CounterParams):
    """Parameters of the ``vtc`` order."""

    lift: Literal["waiting-min", "paper"] = fld(
        "waiting-min",
        "counter lift of a tenant that becomes backlogged: waiting-min (to the smallest counter "
        "of the other waiting tenants, the reference code) or paper (also to the last tenant "
        "that left the queue when nobody else waits)",
    )


@dataclass(frozen=True)
class VTCOracleOrderParams(VTCOrderParams):
    """Parameters of the ``vtc-oracle`` order."""

    predict_range: float = fld(
        0.0, "predicted output uniform in out*(1-r) .. out*(1+r); 0: exact", ge=0, le=1
    )
    seed: int = fld(0, "seed of the prediction noise", ge=0)


@dataclass(frozen=True)
class VTCPredictOrderParams(VTCOrderParams):
    """Parameters of the ``vtc-predict`` order."""

    ema_weight: float = fld(
        0.2, "weight of the newest finished request in the per-tenant moving average", gt=0,
        le=1,
    )


class CostFunction:
    """``cost(input, output)`` of a request, linear or profiled (module docstring)."""

    def __init__(self, params: CounterParams) -> None:
        self.linear = params.cost == "linear"
        self.w_p = float(params.w_p)
        self.w_q = float(params.w_q)
        self.coef = tuple(float(c) for c in params.profile_coefficients)

    def __call__(self, x: Any, y: Any) -> Any:
        if self.linear:
            return self.w_p * x + self.w_q * y
        a, b, c, d, e = self.coef
        return a * x + b * y + c * x * y + d * y * y + e


class VTCQueue(CounterQueue):
    """The VTC counter queue; ``predictor`` is none, oracle or ema."""

    def __init__(self, world: World, params: CounterParams, lift: str,
                 predictor: str = "none") -> None:
        weights = world.tenant_weights if params.weighted else None
        super().__init__(world, lift, weights)
        self.cost = CostFunction(params)
        self.predictor = predictor
        n = world.requests.n
        if predictor == "oracle":
            assert isinstance(params, VTCOracleOrderParams)
            noise = np.random.default_rng(params.seed).uniform(-1.0, 1.0, n)
            self._predicted = world.requests.output_len * (1.0 + params.predict_range * noise)
        elif predictor == "ema":
            assert isinstance(params, VTCPredictOrderParams)
            self._ema = np.zeros(self.n_tenants)
            self._ema_weight = float(params.ema_weight)
            self._predicted = np.zeros(n)

    def actual_cost_of(self, ids: np.ndarray) -> np.ndarray:
        req = self.world.requests
        charged_tokens = np.maximum(req.generated[ids] - 1, 0)
        return np.asarray(self.cost(req.input_len[ids].astype(np.float64), charged_tokens),
                          dtype=np.float64)

    def predicted_output(self, rid: int, tenant: int) -> float:
        """Output tokens charged at admission (0 without prediction)."""
        if self.predictor == "oracle":
            return float(self._predicted[rid])
        if self.predictor == "ema":
            self._predicted[rid] = self._ema[tenant]
            return float(self._ema[tenant])
        return 0.0

    def on_admitted(self, rid: int, tenant: int, now: float) -> None:
        n_p = float(self.world.requests.input_len[rid])
        estimate = float(self.cost(n_p, self.predicted_output(rid, tenant)))
        self.counter.charge_estimate(rid, tenant, estimate, float(self.cost(n_p, 0.0)))

    def on_job(self, inst: Instance, job: Job, ids: np.ndarray, tenants: np.ndarray,
               finished: np.ndarray, cost: np.ndarray, started: float, now: float) -> None:
        self.counter.settle(ids, tenants, cost, finished)
        if self.predictor == "ema" and finished.any():
            generated = self.world.requests.generated
            w = self._ema_weight
            for rid, tenant in zip(ids[finished].tolist(), tenants[finished].tolist(),
                                   strict=True):
                old = self._ema[tenant]
                out = float(generated[rid])
                self._ema[tenant] = out if old == 0 else (1.0 - w) * old + w * out


register_order("vtc", VTCOrderParams)(lambda p, world: VTCQueue(world, p, p.lift))
register_order("lcf", CounterParams)(lambda p, world: VTCQueue(world, p, "none"))
register_order("vtc-oracle", VTCOracleOrderParams)(
    lambda p, world: VTCQueue(world, p, p.lift, "oracle"))
register_order("vtc-predict", VTCPredictOrderParams)(
    lambda p, world: VTCQueue(world, p, p.lift, "ema"))


@dataclass(frozen=True)
class VTCParams(EngineProfileParams, VTCOrderParams):
    """Parameters of ``vtc``."""


@dataclass(frozen=True)
class LCFParams(EngineProfileParams, CounterParams):
    """Parameters of ``lcf``."""


@dataclass(frozen=True)
class VTCOracleParams(EngineProfileParams, VTCOracleOrderParams):
    """Parameters of ``vtc-oracle``."""


@dataclass(frozen=True)
class VTCPredictParams(EngineProfileParams, VTCPredictOrderParams):
    """Parameters of ``vtc-predict``."""


@register
class VTC(FairPolicy):
    """Virtual Token Counter: serve the backlogged tenant with the least weighted service."""

    name = "vtc"
    order = "vtc"
    Params = VTCParams


@register
class LCF(FairPolicy):
    """Least counter first: VTC without the counter lift (a baseline)."""

    name = "lcf"
    order = "lcf"
    Params = LCFParams


@register
class VTCOracle(FairPolicy):
    """VTC charging a predicted output length at admission (exact or within +-predict_range)."""

    name = "vtc-oracle"
    order = "vtc-oracle"
    Params = VTCOracleParams


@register
class VTCPredict(FairPolicy):
    """VTC charging a per-tenant moving average of output lengths at admission."""

    name = "vtc-predict"
    order = "vtc-predict"
    Params = VTCPredictParams
