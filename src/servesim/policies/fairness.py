"""The engine every fairness ordering shares: the ``vtc-paper`` batching profile.

The VTC paper (Sheng et al., "Fairness in Serving Large Language Models", OSDI '24, §5 and its
S-LoRA/LightLLM router) serves every ordering with the same continuous-batching loop, so that
orderings differ only in admission order and counters (``specs/fairness.md``):

- an empty running batch: admit a new batch (in queue order) and prefill it;
- otherwise decode one step; every ``admission_period`` (10) decode steps try to admit a
  mini-batch, prefill it and merge it into the running batch; when nothing can be admitted,
  keep decoding and retry at every following step;
- conservative admission: a request is admitted only if the worst-case future KV footprint of
  the running batch plus the admitted requests (each growing to ``input + max_output``;
  requests sorted by remaining length, the peak of ``left_i * i + sum(held_1..i)``) fits the
  pool of ``M`` tokens; nothing is ever preempted. (The reference router compares with ``< M``
  and counts one token less per running request, because LightLLM writes a token's KV one step
  later than servesim's engine accounts it; servesim's form is exact for its engine, so the
  pool is never exceeded.)
- a prefill budget of ``max(M/6, max_request_len)`` tokens per admission (3,072 for the paper);
- no skipping: admission stops at the first request of the chosen tenant that does not fit.

:class:`EngineProfileParams` makes these settings parameters (``engine: vtc-paper``, the
default of the fairness policies) and also offers ``engine: vllm`` (the vLLM-like
:class:`~servesim.policies.batching.Batcher` of ``fcfs``). :class:`FairPolicy` is the policy
skeleton of ``vtc``, ``lcf``, ``vtc-oracle``, ``vtc-predict``, ``equinox`` and ``rpm``: models
pinned to instances as in ``fcfs``, one queue per model shared by its instances (built with
:func:`~servesim.policies.batching.make_queue`, so counters are global over the instances).

Fast-forwarding: a decode segment runs to the next admission point (``admission_period``
steps after the last admission) while requests wait, one step at a time while admission keeps
failing, and until the first finish when nobody waits; an arrival then cuts it at the next step
boundary (one extra event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import IDLE, Decode, Job, Prefill
from servesim.engine.requests import Status
from servesim.errors import ScenarioError, ServesimError
from servesim.policies.base import Policy
from servesim.policies.batching import (
    MAX_STEPS,
    AdmissionQueue,
    Batcher,
    BatchingParams,
    make_queue,
)

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World

_EMPTY = np.zeros(0, dtype=np.int64)
#: Status codes as plain ints: comparing NumPy values with an IntEnum member costs
#: microseconds (NumPy probes the member's attributes); the outcome is the same.
_RUNNING = int(Status.RUNNING)

#: Settings of the named engine profiles: admission period (decode steps), admission rule,
#: preemption.
PROFILES: dict[str, dict[str, Any]] = {
    "vtc-paper": {"admission_period": 10, "admission": "conservative", "preemption": False},
}


@dataclass(frozen=True)
class EngineProfileParams(BatchingParams):
    """Batching engine shared by the fairness orderings (see module docstring)."""

    engine: Literal["vtc-paper", "vllm"] = fld(
        "vtc-paper",
        "batching engine: vtc-paper (the VTC paper's router: periodic admission, conservative "
        "worst-case KV admission, prefill budget, no preemption) or vllm (fcfs's vLLM-like "
        "batcher: admission at every step, optimistic admission, preemption)",
    )
    admission_period: int | None = fld(
        None, "vtc-paper: decode steps between admission attempts; null: 10", ge=1
    )
    admission: Literal["conservative", "optimistic"] | None = fld(
        None,
        "vtc-paper: conservative admits only when the worst-case future KV footprint (every "
        "request grown to input + output) fits; optimistic when the current footprint fits "
        "(needs preemption); null: conservative",
    )
    prefill_budget: int | None = fld(
        None,
        "vtc-paper: most tokens prefilled per admission; null: max(M/6, max_request_len) with "
        "M the KV pool in tokens",
        ge=1,
    )
    max_request_len: int = fld(
        3072,
        "vtc-paper: the router's longest request (input + output) in tokens, the floor of the "
        "default prefill budget (S-LoRA: 2,048 + 1,024)",
        ge=1,
    )
    preemption: bool | None = fld(
        None,
        "vtc-paper: preempt (recompute) the newest request when KV runs out; null: false",
    )

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if self.engine == "vllm":
            for name in ("admission_period", "admission", "prefill_budget", "preemption"):
                if getattr(self, name) is not None:
                    raise ScenarioError(
                        f"{prefix}{name}: only used with engine vtc-paper (engine is vllm)"
                    )
        elif self.resolved("admission") == "optimistic" and not self.resolved("preemption"):
            raise ScenarioError(
                f"{prefix}preemption: optimistic admission needs preemption: true (KV may run "
                "out)"
            )
        parent = getattr(super(), "validate", None)
        if parent is not None:
            parent(path)

    def resolved(self, name: str) -> Any:
        """A ``vtc-paper`` setting: the field if set, else the profile's default."""
        value = getattr(self, name)
        return PROFILES["vtc-paper"][name] if value is None else value


class PeriodicBatcher:
    """The ``vtc-paper`` continuous-batching state of one instance (module docstring)."""

    def __init__(self, world: World, inst: Instance, queue: AdmissionQueue,
                 params: EngineProfileParams) -> None:
        self.world = world
        self.inst = inst
        self.waiting = queue
        self.params = params
        self.running: np.ndarray = _EMPTY
        self.period = int(params.resolved("admission_period"))
        self.conservative = params.resolved("admission") == "conservative"
        self.preemption = bool(params.resolved("preemption"))
        #: decode steps since the last admission (LightLLM's ``has_wait_tokens``)
        self.steps_since_admission = 0
        self.decode_steps = 0
        # a failed admission of head request ``rid`` against batch version ``v`` cannot
        # succeed before decode step ``fit_at``: (rid, v, fit_at); the batch version changes
        # whenever the running batch does
        self._blocked: tuple[int, int, int] | None = None
        self._version = 0
        self._open_ended = False
        self._probe = -1
        self._probe_generated = 0
        self._started = 0.0
        self._admitted = getattr(queue, "admitted", None)
        self._job_done = getattr(queue, "job_done", None)

    @property
    def load(self) -> int:
        """Requests waiting (in the shared queue) or running here."""
        return len(self.waiting) + int(self.running.shape[0])

    def capacity_tokens(self) -> int:
        """The KV pool ``M`` in tokens."""
        return int(self.inst.kv_capacity_blocks) * int(self.world.block_size)

    def prefill_budget(self) -> int:
        """Most tokens prefilled per admission."""
        if self.params.prefill_budget is not None:
            return int(self.params.prefill_budget)
        return max(self.capacity_tokens() // 6, int(self.params.max_request_len))

    # -- admission ----------------------------------------------------------------------------

    def admit(self, now: float) -> list[int]:
        """Pop the requests to prefill now, in queue order (module docstring)."""
        world = self.world
        req = world.requests
        queue = self.waiting
        blocked = self._blocked
        if blocked is not None and len(queue):
            rid = queue.peek()
            if (rid == blocked[0] and blocked[1] == self._version
                    and self.decode_steps < blocked[2] and not world.expired(rid, now)):
                return []  # the same head still cannot fit (its footprint was computed ahead)
        capacity = self.capacity_tokens()
        budget = self.prefill_budget()
        # a request holding L tokens holds at most L + pad tokens' worth of blocks
        pad = int(world.lookahead) + int(world.block_size) - 1
        run = self.running
        # the engine keeps a request's KV during the step that emits its last token, so a
        # request with r tokens to go still grows by r slots' worth in the worst case
        held = (req.input_len[run] + req.generated[run] + pad).tolist()
        left = (req.output_len[run] - req.generated[run]).tolist()
        free_blocks = self.inst.kv_blocks_free
        max_seqs = self.params.max_num_seqs
        ids: list[int] = []
        tokens = 0
        while len(queue):
            rid = queue.peek()
            if world.expired(rid, now):
                queue.pop()
                continue
            context = int(req.input_len[rid] + req.generated[rid])
            remaining = int(req.output_len[rid] - req.generated[rid])
            if (int(req.input_len[rid] + req.output_len[rid]) + pad > capacity
                    or context > budget):
                queue.pop()
                world.fail(rid, now, reason=2)  # too long: it could never be admitted
                continue
            if len(held) >= max_seqs or tokens + context > budget:
                if not ids:
                    self._blocked = (rid, self._version, MAX_STEPS)
                break
            if self.conservative:
                cand_held = context + 1 + pad
                cand_left = remaining - 1
                if _peak_tokens(held + [cand_held], left + [cand_left]) > capacity:
                    if not ids:
                        wait = _steps_until_fit(held, left, cand_held, cand_left, capacity)
                        self._blocked = (rid, self._version, self.decode_steps + wait)
                    break
            else:
                need = int(world.blocks_for(context + 1))
                if need > free_blocks:
                    break
                free_blocks -= need
                cand_held, cand_left = context + 1 + pad, remaining - 1
            queue.pop()
            if self._admitted is not None:
                self._admitted(rid, now)
            ids.append(rid)
            tokens += context
            held.append(cand_held)
            left.append(cand_left)
        if ids:
            self._blocked = None
        return ids

    # -- the loop -----------------------------------------------------------------------------

    def next_job(self, now: float) -> Job:
        """Prefill a new batch or mini-batch, else decode to the next admission point."""
        self._started = now
        if not self.running.shape[0]:
            ids = self.admit(now)
            if ids:
                self.steps_since_admission = 0
                return Prefill(np.array(ids, dtype=np.int64))
            self._open_ended = False
            return IDLE
        if len(self.waiting) and self.steps_since_admission >= self.period:
            ids = self.admit(now)
            if ids:
                self.steps_since_admission = 0
                return Prefill(np.array(ids, dtype=np.int64))
        if len(self.waiting):
            # admission failed (retry after the next step) or the next point is ahead
            steps = max(1, self.period - self.steps_since_admission)
        else:
            steps = MAX_STEPS
        world = self.world
        while True:
            fit = world.kv_max_steps(self.inst, self.running, steps)
            if fit > 0:
                break
            if not self.preemption or self.running.shape[0] == 0:  # pragma: no cover
                raise ServesimError(
                    f"{self.inst.name}: KV pool exhausted without preemption (use conservative "
                    "admission or preemption: true)"
                )
            victim = int(self.running[-1])
            self.running = self.running[:-1]
            self._version += 1
            world.evict(self.inst, victim)
            self.waiting.push_front(victim)
            if not self.running.shape[0]:
                return self.next_job(now)
        self._open_ended = steps == MAX_STEPS
        self._probe = int(self.running[0])
        self._probe_generated = int(world.requests.generated[self._probe])
        return Decode(self.running, fit)

    def notify(self) -> None:
        """A request was queued: wake the instance, or cut a decode segment that was planned
        while nobody waited (the next admission point may be due)."""
        inst = self.inst
        if inst.state == "idle":
            inst.wake()
        elif inst.state == "decode" and self._open_ended:
            self._open_ended = False
            inst.poke()

    def on_done(self, job: Job) -> None:
        """Count decode steps; move prefilled requests in, finished requests out."""
        world = self.world
        status = world.requests.status
        if isinstance(job, Prefill):
            ids = job.ids[status[job.ids] == _RUNNING]
            if ids.shape[0]:
                self.running = np.concatenate((self.running, ids))
                self._version += 1
        elif isinstance(job, Decode):
            steps = int(world.requests.generated[self._probe]) - self._probe_generated
            self.steps_since_admission += steps
            self.decode_steps += steps
            run = self.running
            if world.last_finished and run.shape[0]:
                keep = status[run] == _RUNNING
                if not keep.all():
                    self.running = run[keep]
                    self._version += 1
        if self._job_done is not None:
            self._job_done(self.inst, job, self._started, world.env.now)


def _peak_tokens(held: list[int], left: list[int]) -> int:
    """Worst-case future KV peak (tokens) of requests holding ``held`` tokens with ``left``
    more to grow: sorted by ``left`` descending, ``max_i left_i * i + sum(held_1..i)``."""
    h = np.asarray(held, dtype=np.int64)
    lf = np.asarray(left, dtype=np.int64)
    order = np.argsort(-lf, kind="stable")
    lf = lf[order]
    cum = np.cumsum(h[order])
    return int((lf * np.arange(1, lf.shape[0] + 1) + cum).max())


def _steps_until_fit(held: list[int], left: list[int], cand_held: int, cand_left: int,
                     capacity: int) -> int:
    """Decode steps after which a candidate ``(cand_held, cand_left)`` first fits next to the
    running batch ``(held, left)`` (which grows one slot and shrinks one step per step), before
    the batch's first finish; ``MAX_STEPS`` when it does not fit before then (the batch then
    changes and admission is computed afresh)."""
    if not held:
        return MAX_STEPS
    h = np.asarray(held, dtype=np.int64)
    lf = np.asarray(left, dtype=np.int64)
    horizon = int(lf.min()) - 1
    if horizon < 1:
        return MAX_STEPS
    k = np.arange(1, horizon + 1, dtype=np.int64)[:, None]
    rows_h = np.concatenate((h[None, :] + k, np.full((horizon, 1), cand_held)), axis=1)
    rows_l = np.concatenate((lf[None, :] - k, np.full((horizon, 1), cand_left)), axis=1)
    order = np.argsort(-rows_l, axis=1, kind="stable")
    rows_l = np.take_along_axis(rows_l, order, axis=1)
    cum = np.cumsum(np.take_along_axis(rows_h, order, axis=1), axis=1)
    need = (rows_l * np.arange(1, rows_l.shape[1] + 1) + cum).max(axis=1)
    fits = np.flatnonzero(need <= capacity)
    return int(fits[0]) + 1 if fits.size else MAX_STEPS


class FairPolicy(Policy):
    """Dedicated placement + one ordered queue per model + the shared batching engine.

    Subclasses set ``name``, ``Params`` (which holds the engine fields and the ordering's
    fields) and ``order`` (a name registered with
    :func:`~servesim.policies.batching.register_order`); :meth:`accept` may refuse a request at
    arrival (``rpm``).
    """

    order: ClassVar[str] = "fcfs"
    Params: ClassVar[type] = EngineProfileParams

    def __init__(self, params: Any = None, order: str | None = None) -> None:
        super().__init__(params)
        self.order_name = order or self.order

    def attach(self, world: World) -> None:
        super().attach(world)
        n_models = len(world.latency.models)
        n_inst = len(world.instances)
        if n_inst < n_models:
            raise ServesimError(
                f"policy {self.name or self.order_name} pins every model to its own instance: "
                f"{n_models} models need at least {n_models} instances, the cluster has {n_inst}"
            )
        #: the admission queue of each deployed model, shared by its instances
        self.queues: list[AdmissionQueue] = [
            make_queue(self.order_name, self.params, world) for _ in range(n_models)
        ]
        self.by_model: list[list[Instance]] = [[] for _ in range(n_models)]
        self.batchers: list[PeriodicBatcher | Batcher] = []
        params = self.params
        for inst in world.instances:
            model = inst.index * n_models // n_inst
            inst.model = model
            _ = inst.kv_capacity_blocks  # raises a ServesimError when the model does not fit
            self.by_model[model].append(inst)
            queue = self.queues[model]
            batcher: PeriodicBatcher | Batcher
            if getattr(params, "engine", "vtc-paper") == "vllm":
                batcher = Batcher(world, inst, queue, params)
            else:
                batcher = PeriodicBatcher(world, inst, queue, params)
            inst.policy_state = batcher
            self.batchers.append(batcher)

    def accept(self, rid: int, now: float) -> bool:
        """Admit ``rid`` into the queue (True) or reject it at arrival (False)."""
        return True

    def on_arrival(self, rid: int, now: float) -> None:
        if not self.accept(rid, now):
            self.world.reject(rid, now)
            return
        model = int(self.world.requests.model[rid])
        self.queues[model].push(rid)
        instances = self.by_model[model]
        for inst in instances:
            if inst.state == "idle":
                inst.wake()
                return
        for inst in instances:
            inst.policy_state.notify()

    def next_job(self, inst: Instance, now: float) -> Job:
        batcher: PeriodicBatcher | Batcher = inst.policy_state
        return batcher.next_job(now)

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        batcher: PeriodicBatcher | Batcher = inst.policy_state
        batcher.on_done(job)
