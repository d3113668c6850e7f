"""``fcfs``: dedicated placement with vLLM-like continuous batching, first come first served.

Every deployed model is pinned to its own instance(s) for the whole run (no switching): with
``N`` instances and ``M`` models, instance ``i`` serves model ``floor(i * M / N)``. A request
goes to the least-loaded instance of its model (waiting + running; ties: lowest index), whose
:class:`~servesim.policies.batching.Batcher` admits in arrival order. It is the baseline every
multi-model study needs ("how many GPUs without pooling?", ``specs/autoscaling.md``).

With ``engine: vtc-paper`` it is instead the FCFS baseline of the fairness study: the VTC
paper's batching engine (:mod:`servesim.policies.fairness`), one FIFO queue per model shared by
its instances (``routing`` is then unused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from servesim.config import fld
from servesim.errors import ServesimError
from servesim.policies.base import Policy, register
from servesim.policies.batching import Batcher, FCFSQueue
from servesim.policies.fairness import EngineProfileParams, FairPolicy

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.jobs import Job
    from servesim.engine.world import World


@dataclass(frozen=True)
class FCFSParams(EngineProfileParams):
    """Parameters of ``fcfs``."""

    engine: Literal["vtc-paper", "vllm"] = fld(
        "vllm",
        "batching engine: vllm (vLLM-like: admission at every step, preemption) or vtc-paper "
        "(the VTC paper's router shared by the fairness policies: docs/fairness.md)",
    )

    routing: Literal["least-loaded", "round-robin"] = fld(
        "least-loaded",
        "how a request picks among its model's instances: least-loaded (fewest waiting + "
        "running) or round-robin",
    )


@register
class FCFS(Policy):
    """Dedicated placement + continuous batching in arrival order."""

    name = "fcfs"
    Params = FCFSParams

    def attach(self, world: World) -> None:
        super().attach(world)
        self._fair: FairPolicy | None = None
        if self.params.engine != "vllm":
            self._fair = FairPolicy(self.params, order="fcfs")
            self._fair.attach(world)
            return
        n_models = len(world.latency.models)
        n_inst = len(world.instances)
        if n_inst < n_models:
            raise ServesimError(
                f"cluster: policy fcfs pins every model to its own instance: {n_models} models "
                f"need at least {n_models} instances, the cluster has {n_inst} (add instances "
                "or use an auto-scaling policy)"
            )
        self.by_model: list[list[Instance]] = [[] for _ in range(n_models)]
        self.batchers: list[Batcher] = []
        for inst in world.instances:
            model = inst.index * n_models // n_inst
            inst.model = model
            _ = inst.kv_capacity_blocks  # raises a ServesimError when the model does not fit
            self.by_model[model].append(inst)
            batcher = Batcher(world, inst, FCFSQueue(), self.params)
            inst.policy_state = batcher
            self.batchers.append(batcher)
        self._rr = [0] * n_models

    def on_arrival(self, rid: int, now: float) -> None:
        if self._fair is not None:
            self._fair.on_arrival(rid, now)
            return
        model = int(self.world.requests.model[rid])
        candidates = self.by_model[model]
        if len(candidates) == 1:
            inst = candidates[0]
        elif self.params.routing == "round-robin":
            inst = candidates[self._rr[model] % len(candidates)]
            self._rr[model] += 1
        else:
            inst = min(candidates, key=lambda i: (i.policy_state.load, i.index))
        batcher: Batcher = inst.policy_state
        batcher.waiting.push(rid)
        batcher.notify()

    def next_job(self, inst: Instance, now: float) -> Job:
        if self._fair is not None:
            return self._fair.next_job(inst, now)
        batcher: Batcher = inst.policy_state
        return batcher.next_job(now)

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        if self._fair is not None:
            self._fair.on_done(inst, job, now)
            return
        batcher: Batcher = inst.policy_state
        batcher.on_done(job)
