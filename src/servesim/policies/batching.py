"""Continuous batching on one instance (vLLM-like), parameterised by an admission queue.

Semantics (vLLM's scheduler without chunked prefill):

- prefill first: whenever waiting requests can be admitted, the next job prefills them as one
  batch, in the queue's order, under KV capacity (minus a watermark), ``max_num_seqs`` and a
  ``max_batched_tokens`` budget (a lone request longer than the budget is still admitted);
- no skipping: admission stops at the first request that does not fit;
- otherwise decode the running batch for as many steps as KV allows;
- when not even one step fits, preempt the most recently admitted request by recomputation
  (its KV is freed; it goes back to the front of the queue and is prefilled again later);
- a request that never started within the start timeout fails when it reaches the head;
  a request that could not fit the instance even alone fails as ``too_long``.

The admission *order* is the queue's business (:class:`FCFSQueue` here; fairness policies
provide their own), so every ordering shares this engine.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from servesim.config import fld
from servesim.engine.jobs import IDLE, Decode, Job, Prefill
from servesim.engine.requests import Status

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World

_EMPTY = np.zeros(0, dtype=np.int64)
#: Upper bound on steps of one decode job (the engine also stops at the first finish).
MAX_STEPS = 1 << 30


@dataclass(frozen=True)
class BatchingParams:
    """Continuous-batching settings shared by the policies built on :class:`Batcher`."""

    max_num_seqs: int = fld(256, "most requests in the running batch", ge=1)
    max_batched_tokens: int = fld(
        4096,
        "most tokens prefilled in one batch (vLLM's max_num_batched_tokens; the profiles were "
        "measured up to 4,096); a lone longer request is still admitted",
        ge=1,
    )
    watermark: float = fld(
        0.01, "fraction of KV blocks kept free at admission (vLLM's watermark)", ge=0, lt=1
    )


class AdmissionQueue(Protocol):
    """The order in which waiting requests are admitted."""

    def push(self, rid: int) -> None: ...
    def push_front(self, rid: int) -> None: ...
    def peek(self) -> int: ...
    def pop(self) -> int: ...
    def __len__(self) -> int: ...


class FCFSQueue:
    """First come, first served (preempted requests go back to the front)."""

    def __init__(self) -> None:
        self._q: deque[int] = deque()

    def push(self, rid: int) -> None:
        self._q.append(rid)

    def push_front(self, rid: int) -> None:
        self._q.appendleft(rid)

    def peek(self) -> int:
        return self._q[0]

    def pop(self) -> int:
        return self._q.popleft()

    def __len__(self) -> int:
        return len(self._q)


class Batcher:
    """The continuous-batching state of one instance: a waiting queue and a running batch."""

    def __init__(self, world: World, inst: Instance, queue: AdmissionQueue,
                 params: BatchingParams) -> None:
        self.world = world
        self.inst = inst
        self.waiting = queue
        self.params = params
        self.running: np.ndarray = _EMPTY

    @property
    def load(self) -> int:
        """Requests waiting or running here."""
        return len(self.waiting) + int(self.running.shape[0])

    def _watermark_blocks(self) -> int:
        return int(self.params.watermark * self.inst.kv_capacity_blocks)

    def head_fits(self) -> bool:
        """Would the head of the queue be admitted now? (Used to decide a poke.)"""
        if not len(self.waiting) or self.running.shape[0] >= self.params.max_num_seqs:
            return False
        req = self.world.requests
        rid = self.waiting.peek()
        need = int(self.world.blocks_for(int(req.input_len[rid] + req.generated[rid]) + 1))
        return need <= self.inst.kv_blocks_free - self._watermark_blocks()

    def notify(self) -> None:
        """A request was queued: wake the instance, or cut its decode if the head fits."""
        inst = self.inst
        if inst.state == "idle":
            inst.wake()
        elif inst.state == "decode" and self.head_fits():
            inst.poke()

    def admit(self, now: float) -> list[int]:
        """Pop the requests to prefill now, in queue order (see module docstring)."""
        world = self.world
        req = world.requests
        queue = self.waiting
        inst = self.inst
        capacity = inst.kv_capacity_blocks
        free = inst.kv_blocks_free - self._watermark_blocks()
        seqs = int(self.running.shape[0])
        budget = self.params.max_batched_tokens
        max_seqs = self.params.max_num_seqs
        ids: list[int] = []
        tokens = 0
        while len(queue):
            rid = queue.peek()
            if world.expired(rid, now):
                queue.pop()
                continue
            held = int(req.input_len[rid] + req.generated[rid])
            if world.blocks_for(int(req.input_len[rid] + req.output_len[rid]) - 1) > capacity:
                queue.pop()
                world.fail(rid, now, reason=2)
                continue
            need = int(world.blocks_for(held + 1))
            if seqs >= max_seqs or need > free or (ids and tokens + held > budget):
                break
            queue.pop()
            ids.append(rid)
            tokens += held
            free -= need
            seqs += 1
        return ids

    def next_job(self, now: float) -> Job:
        """Prefill admitted requests, else decode the running batch, else idle."""
        ids = self.admit(now)
        if ids:
            return Prefill(np.array(ids, dtype=np.int64))
        world = self.world
        while self.running.shape[0]:
            steps = world.kv_max_steps(self.inst, self.running, MAX_STEPS)
            if steps > 0:
                return Decode(self.running, steps)
            victim = int(self.running[-1])
            self.running = self.running[:-1]
            world.evict(self.inst, victim)
            self.waiting.push_front(victim)
        ids = self.admit(now)
        if ids:
            return Prefill(np.array(ids, dtype=np.int64))
        return IDLE

    def on_done(self, job: Job) -> None:
        """Move prefilled requests into the running batch; drop finished ones."""
        status = self.world.requests.status
        if isinstance(job, Prefill):
            ids = job.ids[status[job.ids] == Status.RUNNING]
            if ids.shape[0]:
                self.running = np.concatenate((self.running, ids))
        elif isinstance(job, Decode) and self.world.last_finished:
            run = self.running
            if run.shape[0]:
                keep = status[run] == Status.RUNNING
                if not keep.all():
                    self.running = run[keep]
