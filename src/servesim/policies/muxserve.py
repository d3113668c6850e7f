"""``muxserve``: static placement of at most two models per GPU (MuxServe, ICML '24).

Models are placed once, before the run, and never switched (``specs/autoscaling.md``):

- with no more models than instances, every model gets its own instance(s) (instance ``i``
  serves model ``floor(i * M / N)``, as ``fcfs``);
- with ``N < M <= 2N`` models, ``2N - M`` models keep an instance to themselves and the other
  ``2(M - N)`` are paired, heaviest with lightest by expected compute demand (requests in the
  run x parameters: MuxServe's placement knows the workload's rates);
- with more than ``max_models_per_gpu * N`` models the scenario is refused (MuxServe cannot
  serve more than 2 models per GPU: at most 32 on 16 GPUs). Two models must fit one GPU's
  memory together with some KV (two 14B FP16 models per 80 GB).

Colocated models share the GPU: one unified KV pool (``Instance.colocate``: blocks of both
models counted in a common unit of bytes, as MuxServe's head-wise unified KV cache) and the
compute, as MPS-style fractions ``f_m`` proportional to the demand of each model. Compute
sharing is simulated by time slicing: each model has its own continuous batcher; when both have
work the instance runs the job of the model with the least ``busy seconds / f_m`` (start-time
fair queueing, a model that was idle catches up to the other's virtual time) and interleaves
decodes step by step; a lone active model runs at full speed. This is the difference from
MuxServe, which runs the two models' kernels concurrently with SM partitions.

Admission order of each batcher: :func:`~servesim.policies.batching.make_queue`
(``policy.order``, FCFS by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import IDLE, Decode, Job
from servesim.errors import ServesimError
from servesim.policies.base import Policy, register
from servesim.policies.batching import Batcher, BatchingParams, OrderParams, make_queue

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World


@dataclass(frozen=True)
class MuxServeParams(BatchingParams, OrderParams):
    """Parameters of ``muxserve``."""

    max_models_per_gpu: int = fld(
        2, "most models placed on one instance (MuxServe's memory bound: 2)", ge=1, le=2
    )
    share: Literal["demand", "equal"] = fld(
        "demand",
        "compute fractions of colocated models: demand (proportional to requests x "
        "parameters) or equal",
    )


class _Slot:
    """One model on one instance: its batcher, compute fraction and virtual time."""

    __slots__ = ("model", "batcher", "share", "vtime", "active")

    def __init__(self, model: int, batcher: Batcher, share: float) -> None:
        self.model = model
        self.batcher = batcher
        self.share = share
        self.vtime = 0.0
        self.active = False


class _Gpu:
    __slots__ = ("inst", "slots", "running", "started")

    def __init__(self, inst: Instance, slots: list[_Slot]) -> None:
        self.inst = inst
        self.slots = slots
        self.running: _Slot | None = None
        self.started = 0.0


def placement(n_models: int, n_instances: int, demand: np.ndarray) -> list[tuple[int, ...]]:
    """Models of each instance (see module docstring): replicas when ``M <= N``, else
    ``2N - M`` singles (the heaviest) and heaviest-with-lightest pairs."""
    if n_models <= n_instances:
        return [(i * n_models // n_instances,) for i in range(n_instances)]
    order = sorted(range(n_models), key=lambda m: (-float(demand[m]), m))
    singles = 2 * n_instances - n_models
    rest = order[singles:]
    out: list[tuple[int, ...]] = [(m,) for m in order[:singles]]
    out += [(rest[k], rest[-1 - k]) for k in range(len(rest) // 2)]
    return out


@register
class MuxServe(Policy):
    """Static multiplexing of at most two models per GPU, no switching."""

    name = "muxserve"
    Params = MuxServeParams

    def attach(self, world: World) -> None:
        super().attach(world)
        p: MuxServeParams = self.params
        lat = world.latency
        n_models = len(lat.models)
        insts = world.instances
        limit = p.max_models_per_gpu * len(insts)
        if n_models > limit:
            raise ServesimError(
                f"policy muxserve places at most {p.max_models_per_gpu} models per GPU: "
                f"{n_models} models need at least "
                f"{-(-n_models // p.max_models_per_gpu)} instances, the cluster has {len(insts)}"
            )
        req = world.requests
        counts = np.bincount(req.model, minlength=n_models).astype(np.float64)
        demand = (counts + 1.0) * np.array([m.params for m in lat.models])
        self.by_model: list[list[_Gpu]] = [[] for _ in range(n_models)]
        self.gpus: list[_Gpu] = []
        for inst, models in zip(insts, placement(n_models, len(insts), demand), strict=True):
            inst.colocate(models)  # raises a ServesimError when they do not fit together
            total = float(sum(demand[m] for m in models))
            slots = []
            for m in models:
                share = (1.0 / len(models) if p.share == "equal"
                         else float(demand[m]) / total)
                queue = make_queue(p.order, p.order_params, world)
                batcher = Batcher(world, inst, queue, p, model=m if len(models) > 1 else -1)
                slots.append(_Slot(m, batcher, share))
            g = _Gpu(inst, slots)
            inst.policy_state = g
            self.gpus.append(g)
            for s in slots:
                self.by_model[s.model].append(g)

    def on_arrival(self, rid: int, now: float) -> None:
        m = int(self.world.requests.model[rid])
        gpus = self.by_model[m]
        g = gpus[0] if len(gpus) == 1 else min(
            gpus, key=lambda x: (self._slot(x, m).batcher.load, x.inst.index))
        slot = self._slot(g, m)
        slot.batcher.waiting.push(rid)
        slot.batcher.notify()

    @staticmethod
    def _slot(g: _Gpu, model: int) -> _Slot:
        for s in g.slots:
            if s.model == model:
                return s
        raise KeyError(model)  # pragma: no cover - by_model guarantees it

    def next_job(self, inst: Instance, now: float) -> Job:
        g: _Gpu = inst.policy_state
        g.started = now
        if len(g.slots) == 1:
            g.running = g.slots[0]
            return g.slots[0].batcher.next_job(now)
        active = [s for s in g.slots if s.batcher.load]
        for s in g.slots:
            if s.batcher.load and not s.active:
                # start-time fair queueing: no credit for the time it had nothing to do
                others = [o.vtime for o in g.slots if o is not s and o.active]
                if others:
                    s.vtime = max(s.vtime, min(others))
            s.active = bool(s.batcher.load)
        for s in sorted(active, key=lambda x: (x.vtime, g.slots.index(x))):
            job = s.batcher.next_job(now)
            if job is IDLE:
                continue
            g.running = s
            if type(job) is Decode and len(active) > 1:
                job = Decode(job.ids, 1)  # interleave the two models step by step
            return job
        g.running = None
        return IDLE

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        g: _Gpu = inst.policy_state
        s = g.running
        if s is None:
            return
        s.batcher.on_done(job)
        s.vtime += (now - g.started) / s.share


__all__ = ["MuxServe", "MuxServeParams", "placement"]
