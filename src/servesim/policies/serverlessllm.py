"""``serverlessllm`` and ``serverlessllm+``: request-level auto-scaling (ServerlessLLM, OSDI '24).

A model is loaded onto a GPU when a request needs it and no loaded copy can take it; it stays
until its requests finish (plus an optional keep-alive). Simulated as in Aegaeon's evaluation
(SOSP '25, §7.1; ``specs/autoscaling.md``): no prefill/decode split (every instance is used as
``both`` whatever its role), weights load at the checkpoint loader's 16 GB/s, no prefetch.

``serverlessllm``: every GPU has a FIFO queue that may mix models.

- A new request counts, over GPUs whose last queued (or resident) model is its model, the free
  slots ``max(0, slots - trailing same-model requests)``. If there is none, it goes behind
  everything on the least-recently-used GPU (a never-used GPU first; "used" = last given a
  request) — the head-of-line blocking that limits ServerlessLLM. Otherwise
  it joins the matching GPU with the fewest trailing requests.
- A GPU runs the maximal run of same-model requests at the front of its queue with continuous
  batching (:class:`~servesim.policies.batching.Batcher`: prefill first, recomputation when KV
  runs out); when the front request needs another model it switches.
- A request not started ``slo.start_timeout`` (15 s) after arrival fails.

``serverlessllm+`` adds oracle shortest-job-first: a GPU's queue is a list of batches of up to
``slots`` same-model requests; a new request joins any same-model batch with room (first-fit)
or starts one on the GPU with the fewest batches; when a GPU picks its next batch it takes the
one with the least estimated remaining time, computed with the *true* output lengths (switch +
prefills + the closed-form decode of the longest remaining output). With ``preempt: true`` a
new batch estimated shorter than the running one's remainder preempts it (its KV is dropped and
recomputed later).

Admission order inside the running batch: the batcher's queue is built by
:func:`~servesim.policies.batching.make_queue` (``policy.order``, FCFS by default).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import IDLE, Job, Switch
from servesim.engine.requests import Status
from servesim.latency import SwitchModel
from servesim.policies.base import Policy, register
from servesim.policies.batching import Batcher, BatchingParams, OrderParams, make_queue

#: Status codes as plain ints for element-wise tests: comparing a NumPy scalar with an
#: IntEnum member costs microseconds (NumPy probes the member's attributes), with an int
#: a tenth of one; the outcome is the same.
_WAITING, _RUNNING = int(Status.WAITING), int(Status.RUNNING)
_FAILED, _FINISHED = int(Status.FAILED), int(Status.FINISHED)

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World
    from servesim.hardware import GPU


@dataclass(frozen=True)
class ServerlessLLMParams(BatchingParams, OrderParams):
    """Parameters of ``serverlessllm``."""

    slots: int = fld(
        4, "same-model requests a GPU takes before the next one spills to the LRU GPU", ge=1
    )
    loader_bandwidth: float | None = fld(
        16e9,
        "bytes/s of ServerlessLLM's checkpoint loader (Aegaeon's evaluation: 16 GB/s); a switch "
        "costs loader_fixed_seconds + weights / loader_bandwidth; null: the scenario's "
        "switching model (stage, tier, efficiency)",
        gt=0,
    )
    loader_fixed_seconds: float = fld(
        0.0, "fixed part of a load with the loader, seconds (engine start-up)", ge=0
    )
    keep_alive: float | None = fld(
        None,
        "seconds a model stays loaded on an idle GPU; after that its next request reloads it "
        "(null: it stays until another model replaces it)",
        ge=0,
    )


@dataclass(frozen=True)
class ServerlessLLMPlusParams(ServerlessLLMParams):
    """Parameters of ``serverlessllm+`` (``slots`` is the batch size, 4)."""

    preempt: bool = fld(
        False,
        "a new batch estimated shorter than the rest of the running batch preempts it "
        "(recomputation); false: SJF among waiting batches only",
    )


class _Gpu:
    """Per instance: the running model's batcher, the waiting work, LRU and keep-alive."""

    __slots__ = ("inst", "batcher", "pending", "batches", "active", "target", "preempt",
                 "last_used", "idle_since")

    def __init__(self, inst: Instance, batcher: Batcher) -> None:
        self.inst = inst
        self.batcher = batcher
        self.pending: deque[int] = deque()  # serverlessllm: FIFO behind the running run
        self.batches: list[_Batch] = []  # serverlessllm+: waiting batches
        self.active: _Batch | None = None  # serverlessllm+: the batch in the batcher
        self.target: _Batch | None = None  # serverlessllm+: the batch a switch is for
        self.preempt = False  # serverlessllm+: preempt the active batch at the next job
        self.last_used = -math.inf
        self.idle_since = 0.0


class _Batch:
    __slots__ = ("model", "ids")

    def __init__(self, model: int, ids: list[int]) -> None:
        self.model = model
        self.ids = ids


class _Serverless(Policy):
    """What both variants share: loader, start timeout, keep-alive, batcher feeding."""

    def attach(self, world: World) -> None:
        super().attach(world)
        p: ServerlessLLMParams = self.params
        if p.loader_bandwidth is not None:
            bandwidth, fixed = p.loader_bandwidth, p.loader_fixed_seconds
            floor = world.latency.switch_model(world.instances[0].gpu).floor_seconds

            def loader(_gpu: GPU) -> SwitchModel:
                return SwitchModel(fixed, bandwidth, 1.0, floor)

            world.latency.set_switch_model(loader)
        lat = world.latency
        self.gpus: list[_Gpu] = []
        for inst in world.instances:
            for m in range(len(lat.models)):
                lat.kv_capacity(inst, m)  # raises a ServesimError when a model does not fit
            g = _Gpu(inst, Batcher(world, inst, make_queue(p.order, p.order_params, world), p))
            inst.policy_state = g
            self.gpus.append(g)
        n = world.requests.n
        self.in_batcher = np.zeros(n, dtype=bool)
        self.unstarted: deque[int] = deque()  # dispatched, in arrival order (for the timeout)

    def _expire(self, now: float) -> None:
        """Fail requests waiting outside a batcher past the start timeout."""
        world = self.world
        req = world.requests
        limit = world.start_timeout
        q = self.unstarted
        while q and now - req.arrival[q[0]] > limit:
            rid = q.popleft()
            if (req.status[rid] == _WAITING and req.generated[rid] == 0
                    and not self.in_batcher[rid]):
                world.fail(rid, float(req.arrival[rid] + limit))

    def _loaded(self, g: _Gpu, now: float) -> bool:
        """Is the GPU's model still loaded (keep-alive)?"""
        if g.inst.model < 0:
            return False
        keep = self.params.keep_alive
        if keep is None or g.batcher.load or g.inst.state != "idle":
            return True
        return now - g.idle_since <= keep

    def _feed(self, g: _Gpu, rid: int) -> None:
        g.batcher.waiting.push(rid)
        self.in_batcher[rid] = True

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        g: _Gpu = inst.policy_state
        if type(job) is Switch:
            # the requests about to run waited for this load
            waiting = self._next_ids(g)
            if waiting:
                self.world.requests.switch_wait[np.asarray(waiting)] += inst.last_switch_seconds
            return
        g.batcher.on_done(job)

    def _next_ids(self, g: _Gpu) -> list[int]:
        raise NotImplementedError

    def _idle(self, g: _Gpu, now: float) -> Job:
        g.idle_since = now
        return IDLE


@register
class ServerlessLLM(_Serverless):
    """Per-GPU FIFO queues, LRU placement, switch when the front needs another model."""

    name = "serverlessllm"
    Params = ServerlessLLMParams

    def _tail(self, g: _Gpu, now: float) -> tuple[int, int]:
        """``(last queued or resident model, trailing same-model requests capped at slots)``."""
        req = self.world.requests
        limit = self.params.slots
        status = req.status
        if g.pending:
            tail = -1
            count = 0
            whole = True
            for rid in reversed(g.pending):
                if status[rid] != _WAITING:
                    continue  # failed at the start timeout, dropped later
                m = int(req.model[rid])
                if tail < 0:
                    tail = m
                if m != tail:
                    whole = False
                    break
                count += 1
                if count >= limit:
                    return tail, limit
            if tail >= 0:
                if whole and g.inst.model == tail:
                    count += g.batcher.load
                return tail, min(count, limit)
        if g.batcher.load:
            return g.inst.model, min(g.batcher.load, limit)
        if self._loaded(g, now):
            return g.inst.model, 0
        return -1, 0

    def on_arrival(self, rid: int, now: float) -> None:
        self._expire(now)
        req = self.world.requests
        m = int(req.model[rid])
        slots = self.params.slots
        best: _Gpu | None = None
        best_trailing = slots
        for g in self.gpus:
            tail, trailing = self._tail(g, now)
            if tail == m and trailing < best_trailing:
                best, best_trailing = g, trailing
        if best is None:  # no free slot: behind everything on the least-recently-used GPU
            best = min(self.gpus, key=lambda g: (g.last_used, g.inst.index))
        g = best
        g.last_used = now
        self.unstarted.append(rid)
        if not g.pending and g.inst.model == m and (g.batcher.load or g.inst.state == "idle"):
            if self._loaded(g, now):
                self._feed(g, rid)
                g.batcher.notify()
                return
        g.pending.append(rid)
        g.inst.wake()

    def next_job(self, inst: Instance, now: float) -> Job:
        self._expire(now)
        g: _Gpu = inst.policy_state
        req = self.world.requests
        status = req.status
        pending = g.pending
        while True:
            while pending and status[pending[0]] != _WAITING:
                pending.popleft()  # failed at the start timeout
            if not g.batcher.load:
                if not pending:
                    return self._idle(g, now)
                front = int(req.model[pending[0]])
                if inst.model != front or not self._loaded(g, now):
                    return Switch(front)
            model = inst.model
            while pending and (status[pending[0]] != _WAITING
                               or req.model[pending[0]] == model):
                rid = pending.popleft()
                if status[rid] == _WAITING:
                    self._feed(g, rid)
            job = g.batcher.next_job(now)
            if job is not IDLE:
                return job
            if g.batcher.load or not pending:
                return self._idle(g, now)

    def _next_ids(self, g: _Gpu) -> list[int]:
        req = self.world.requests
        out = []
        for rid in g.pending:
            if req.model[rid] != g.inst.model:
                break
            out.append(rid)
        return out


@register
class ServerlessLLMPlus(_Serverless):
    """ServerlessLLM with oracle shortest-job-first over batches of up to ``slots``."""

    name = "serverlessllm+"
    Params = ServerlessLLMPlusParams

    def attach(self, world: World) -> None:
        super().attach(world)
        lat = world.latency
        n_models = len(lat.models)
        self._steps = {(i.index, m): lat.step_model(i, m)
                       for i in world.instances for m in range(n_models)}

    def _estimate(self, g: _Gpu, b: _Batch, now: float) -> float:
        """Seconds of compute ``b`` still needs on ``g`` (true output lengths: an oracle).

        The switch a batch of another model needs is not counted (the order is by the jobs'
        remaining time, as specified; counting it would favour the resident model)."""
        world = self.world
        req = world.requests
        inst = g.inst
        ids = np.asarray(b.ids, dtype=np.int64)
        ids = ids[req.status[ids] != _FAILED]
        if not ids.size:
            return 0.0
        sm = self._steps[(inst.index, b.model)]
        t = 0.0
        held = (req.input_len[ids] + req.generated[ids]).astype(np.float64)
        fresh = req.status[ids] != _RUNNING
        if fresh.any():
            t += sm.prefill_time(float(held[fresh].sum()), float((held[fresh] ** 2).sum()))
        remaining = int((req.output_len[ids] - req.generated[ids]).max())
        return t + sm.decode_time(remaining, float(held.sum()), int(ids.size))

    def on_arrival(self, rid: int, now: float) -> None:
        self._expire(now)
        req = self.world.requests
        m = int(req.model[rid])
        slots = self.params.slots
        self.unstarted.append(rid)
        status = req.status
        for g in self.gpus:
            for b in ([g.active] if g.active is not None else []) + g.batches:
                if b.model != m:
                    continue
                b.ids = [r for r in b.ids if status[r] not in (_FAILED, _FINISHED)]
                if len(b.ids) < slots:
                    b.ids.append(rid)
                    if b is g.active:
                        self._feed(g, rid)
                        g.batcher.notify()
                    else:
                        g.inst.wake()
                    return
        g = min(self.gpus, key=lambda x: (len(x.batches) + (x.active is not None),
                                          x.inst.index))
        b = _Batch(m, [rid])
        g.batches.append(b)
        if (self.params.preempt and g.active is not None and g.active.model != m
                and self._estimate(g, b, now) < self._estimate(g, g.active, now)):
            g.preempt = True  # at the next job boundary: the running job holds the batch
            g.inst.poke()
        g.inst.wake()

    def _preempt(self, g: _Gpu) -> None:
        """Put the running batch back among the waiting ones; its KV is recomputed later."""
        world = self.world
        batcher = g.batcher
        for rid in batcher.running.tolist():
            world.evict(g.inst, rid)
        batcher.running = batcher.running[:0]
        while len(batcher.waiting):
            self.in_batcher[batcher.waiting.pop()] = False
        assert g.active is not None
        for rid in g.active.ids:
            self.in_batcher[rid] = False
        g.batches.append(g.active)
        g.active = None

    def next_job(self, inst: Instance, now: float) -> Job:
        self._expire(now)
        g: _Gpu = inst.policy_state
        req = self.world.requests
        status = req.status
        if g.preempt:
            g.preempt = False
            if g.active is not None:
                self._preempt(g)
        while True:
            if g.active is not None:
                job = g.batcher.next_job(now)
                if job is not IDLE:
                    return job
                if g.batcher.load:
                    return self._idle(g, now)
            g.active = None
            for b in g.batches:
                b.ids = [r for r in b.ids if status[r] == _WAITING]
            g.batches = [b for b in g.batches if b.ids]
            if not g.batches:
                g.target = None
                return self._idle(g, now)
            target = g.target
            g.target = None
            if target is not None and target in g.batches and inst.model == target.model:
                b = target  # the switch just done was for it
            else:
                b = min(g.batches, key=lambda x: (self._estimate(g, x, now),
                                                  g.batches.index(x)))
            if inst.model != b.model or not self._loaded(g, now):
                g.target = b
                return Switch(b.model)
            g.batches.remove(b)
            g.active = b
            for rid in b.ids:
                self._feed(g, rid)

    def _next_ids(self, g: _Gpu) -> list[int]:
        return [r for b in g.batches if b.model == g.inst.model for r in b.ids][:1]


__all__ = ["ServerlessLLM", "ServerlessLLMParams", "ServerlessLLMPlus",
           "ServerlessLLMPlusParams"]
