"""``equinox``: holistic fairness (arXiv 2508.16646, 2025) — a documented reconstruction.

Equinox argues that token counts are a poor proxy of fairness: prefill tokens are compute-bound
(they set throughput), decode tokens memory-bound (they set latency), and users feel latency.
It keeps two counters per tenant and serves the backlogged tenant with the lowest *holistic
fairness* score, with a VTC-style lift. The paper's exact formulas are not public in a form we
can quote; every choice below is a parameter (``specs/fairness.md``, docs/policies/equinox.md):

- User Fairness Counter: ``UFC += w_p*n_p + w_q*n_q + delta * latency / latency_ref``
  (``ufc_form: additive``; latency = arrival to last token) or
  ``UFC += (w_p*n_p + w_q*n_q) / (latency + delta)`` (``normalized``, settled at the finish);
- Resource Fairness Counter: ``RFC += sum over jobs of util * share * duration`` with
  ``util = min(1, batch_tokens / saturation_tokens)`` and ``share`` the request's part of the
  job's tokens (a prefill: its context; a decode step: 1 of the batch);
- ``HF = alpha * UFC / mean(UFC) + beta * RFC / mean(RFC)`` over the backlogged tenants;
- both counters charge *predictions* at admission and are reconciled with the actual amounts
  (charges beyond the prediction as they accrue, refunds at the finish), as VTC's length
  prediction; latency, utilization and step times of a prediction come from the latency model
  applied to the predicted output length;
- predictors: a simulated Mixture of Prediction Experts (``mope``: a router picks one of three
  length classes, < 53, 53-210, > 210 tokens, wrong with probability ``mope_confusion``; the
  expert of the picked class predicts ``L*(1+eps)``, ``eps ~ N(0, mope_error)``, clipped into its
  class), calibrated to a mean absolute error of ~33 tokens on ShareGPT-like (vLLM-convention)
  outputs; the single proxy model of the paper's ablation (``single``: ``L*(1+eps)``,
  ``eps ~ N(0, single_error)``, ~80 tokens); ``oracle`` (exact).

Not reproduced: Equinox's adaptive batching and stall-free (chunked-prefill) scheduling — the
ordering runs on the same engine as every other ordering, so throughput differences between
orderings come from admission order only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import Job, Prefill
from servesim.errors import ScenarioError
from servesim.latency import StepModel
from servesim.policies.base import register
from servesim.policies.batching import register_order
from servesim.policies.counters import CounterQueue
from servesim.policies.fairness import EngineProfileParams, FairPolicy

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World


@dataclass(frozen=True)
class EquinoxOrderParams:
    """Parameters of the ``equinox`` order (module docstring)."""

    alpha: float = fld(0.7, "weight of the user fairness counter in HF", ge=0)
    beta: float = fld(0.3, "weight of the resource fairness counter in HF", ge=0)
    delta: float = fld(0.1, "latency term of the UFC (see ufc_form)", ge=0)
    w_p: float = fld(1.0, "UFC charge per input token", ge=0, le=1e6)
    w_q: float = fld(2.0, "UFC charge per output token", gt=0, le=1e6)
    ufc_form: Literal["additive", "normalized"] = fld(
        "additive",
        "additive: w_p*n_p + w_q*n_q + delta*latency/latency_ref; normalized: "
        "(w_p*n_p + w_q*n_q)/(latency + delta)",
    )
    latency_ref: float = fld(1.0, "seconds: latency unit of the additive UFC", gt=0)
    saturation_tokens: int | None = fld(
        None,
        "tokens per step at which the GPU counts as fully utilized; null: a_p/b_p of the "
        "instance's prefill model (where per-token compute equals the fixed step cost)",
        ge=1,
    )
    predictor: Literal["mope", "single", "oracle"] = fld(
        "mope",
        "output-length predictor: mope (simulated mixture of 3 experts), single (one proxy "
        "model, the paper's ablation) or oracle (exact)",
    )
    class_bounds: list[float] = fld(
        factory=lambda: (53.0, 210.0),
        doc="mope: output-length class boundaries in tokens (the 33rd/66th percentiles)",
    )
    mope_confusion: float = fld(
        0.05, "mope: probability that the router picks a wrong class", ge=0, le=1
    )
    mope_error: float = fld(
        0.162, "mope: relative error (std of eps) of an expert (~33 tokens MAE)", ge=0
    )
    single_error: float = fld(
        0.51, "single: relative error (std of eps) of the proxy model (~80 tokens MAE)", ge=0
    )
    lift: Literal["waiting-min", "none"] = fld(
        "waiting-min", "lift of both counters of a tenant that becomes backlogged (as vtc)"
    )
    weighted: bool = fld(True, "divide charges by the tenant's weight")
    seed: int = fld(0, "seed of the simulated predictor's noise", ge=0)

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if self.alpha + self.beta <= 0:
            raise ScenarioError(f"{prefix}alpha: alpha + beta must be > 0")
        bounds = list(self.class_bounds)
        if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
            raise ScenarioError(
                f"{prefix}class_bounds: expected two increasing positive numbers, got {bounds}"
            )
        parent = getattr(super(), "validate", None)
        if parent is not None:
            parent(path)


def predict_lengths(output_len: np.ndarray, params: EquinoxOrderParams,
                    rng: np.random.Generator) -> np.ndarray:
    """Predicted output lengths (float, >= 1) of the configured predictor (module docstring)."""
    lengths = np.asarray(output_len, dtype=np.float64)
    n = lengths.shape[0]
    eps = rng.standard_normal(n)
    wrong = rng.random(n) < params.mope_confusion
    offset = 1 + np.asarray(rng.random(n) < 0.5, dtype=np.int64)
    if params.predictor == "oracle":
        return lengths.copy()
    if params.predictor == "single":
        return np.maximum(1.0, lengths * (1.0 + params.single_error * eps))
    lo_b, hi_b = float(params.class_bounds[0]), float(params.class_bounds[1])
    true_class = np.where(lengths < lo_b, 0, np.where(lengths <= hi_b, 1, 2))
    routed = np.where(wrong, (true_class + offset) % 3, true_class)
    low = np.array([1.0, lo_b, np.nextafter(hi_b, np.inf)])[routed]
    high = np.array([np.nextafter(lo_b, 0.0), hi_b, np.inf])[routed]
    guess = np.maximum(1.0, lengths * (1.0 + params.mope_error * eps))
    return np.where(wrong, np.clip(guess, low, high), guess)


class EquinoxQueue(CounterQueue):
    """UFC + RFC counters, lowest holistic fairness score first."""

    def __init__(self, world: World, params: EquinoxOrderParams) -> None:
        super().__init__(world, params.lift,
                         world.tenant_weights if params.weighted else None)
        self.p = params
        self.ufc = self.counter
        self.rfc = self.new_counter()
        req = world.requests
        self.predicted = predict_lengths(req.output_len, params,
                                         np.random.default_rng(params.seed))
        self._rfc_accrued = np.zeros(req.n)
        self._inflight: dict[int, int] = {}
        self._models: dict[int, tuple[StepModel, int]] = {}
        self._mean_ufc = 0.0
        self._mean_rfc = 0.0

    # -- scores -------------------------------------------------------------------------------

    def prepare_scores(self) -> None:
        backlog = self.backlog
        self._mean_ufc = float(self.ufc.value[backlog].mean())
        self._mean_rfc = float(self.rfc.value[backlog].mean())

    def score(self, tenant: int) -> float:
        hf = 0.0
        if self._mean_ufc > 0:
            hf += self.p.alpha * float(self.ufc.value[tenant]) / self._mean_ufc
        if self._mean_rfc > 0:
            hf += self.p.beta * float(self.rfc.value[tenant]) / self._mean_rfc
        return hf

    # -- costs --------------------------------------------------------------------------------

    def actual_cost_of(self, ids: np.ndarray) -> np.ndarray:
        req = self.world.requests
        return (self.p.w_p * req.input_len[ids]
                + self.p.w_q * np.maximum(req.generated[ids] - 1, 0)).astype(np.float64)

    def _model(self, model: int) -> tuple[StepModel, int]:
        info = self._models.get(model)
        if info is None:
            insts = [i for i in self.world.instances
                     if i.model == model and i.step_model is not None]
            sm = insts[0].step_model
            assert sm is not None
            info = (sm, len(insts))
            self._models[model] = info
        return info

    def _saturation(self, sm: StepModel) -> float:
        if self.p.saturation_tokens is not None:
            return float(self.p.saturation_tokens)
        return max(1.0, sm.a_p / sm.b_p) if sm.b_p > 0 else 1.0

    def on_admitted(self, rid: int, tenant: int, now: float) -> None:
        req = self.world.requests
        p = self.p
        model = int(req.model[rid])
        sm, n_inst = self._model(model)
        inflight = self._inflight.get(model, 0) + 1
        self._inflight[model] = inflight
        n_p = float(req.input_len[rid])
        out_hat = float(self.predicted[rid])
        batch = max(1.0, inflight / n_inst)
        t_prefill = sm.a_p + sm.b_p * n_p + sm.c_p * n_p * n_p
        t_step = sm.a_d + sm.c_d * batch + sm.b_d * batch * (n_p + out_hat / 2.0)
        latency = (now - float(req.arrival[rid])) + t_prefill + out_hat * t_step
        sat = self._saturation(sm)
        rfc_hat = (min(1.0, n_p / sat) * t_prefill
                   + out_hat * min(1.0, batch / sat) * t_step / batch)
        tokens_hat = p.w_p * n_p + p.w_q * out_hat
        if p.ufc_form == "additive":
            ufc_hat = tokens_hat + p.delta * latency / p.latency_ref
            accrued = p.w_p * n_p
        else:
            ufc_hat = tokens_hat / (latency + p.delta)
            accrued = 0.0
        self.ufc.charge_estimate(rid, tenant, ufc_hat, accrued)
        self.rfc.charge_estimate(rid, tenant, rfc_hat, 0.0)

    def on_job(self, inst: Instance, job: Job, ids: np.ndarray, tenants: np.ndarray,
               finished: np.ndarray, cost: np.ndarray, started: float, now: float) -> None:
        req = self.world.requests
        p = self.p
        sm = inst.step_model
        duration = now - started
        if sm is not None and duration > 0:
            sat = self._saturation(sm)
            if isinstance(job, Prefill):
                context = (req.input_len[ids] + req.generated[ids] - 1).astype(np.float64)
                total = float(context.sum())
                if total > 0:
                    self._rfc_accrued[ids] += (min(1.0, total / sat) * duration
                                               * context / total)
            else:
                batch = float(ids.shape[0])
                self._rfc_accrued[ids] += min(1.0, batch / sat) * duration / batch
        self.rfc.settle(ids, tenants, self._rfc_accrued[ids], finished)
        tokens = cost
        latency = np.where(finished, now - req.arrival[ids], 0.0)
        if p.ufc_form == "additive":
            accrued = tokens + np.where(finished, p.delta * latency / p.latency_ref, 0.0)
            self.ufc.settle(ids, tenants, accrued, finished)
        else:
            accrued = np.where(finished, tokens / (latency + p.delta), 0.0)
            self.ufc.settle(ids, tenants, accrued, finished, progressive=False)
        if finished.any():
            for model in req.model[ids[finished]].tolist():
                self._inflight[model] -= 1


register_order("equinox", EquinoxOrderParams)(lambda p, world: EquinoxQueue(world, p))


@dataclass(frozen=True)
class EquinoxParams(EngineProfileParams, EquinoxOrderParams):
    """Parameters of ``equinox``."""


@register
class Equinox(FairPolicy):
    """Holistic fairness (reconstruction): lowest alpha*UFC + beta*RFC score first."""

    name = "equinox"
    order = "equinox"
    Params = EquinoxParams
