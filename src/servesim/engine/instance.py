"""An instance: one GPU or tensor-parallel group, executing the jobs its policy hands it.

The instance's SimPy process repeatedly asks the policy for the next job, prices it with the
latency model and waits for it to end. A ``Decode`` job is fast-forwarded: it is one event
however many steps it runs (see ARCHITECTURE.md, "Time: fast-forward decoding"); a poke from
the policy cuts it at the next step boundary.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from servesim import kernels
from servesim.engine.jobs import Decode, Idle, MoveKV, Prefill, Switch
from servesim.engine.requests import Status
from servesim.hardware import GPU
from servesim.latency import StepModel

if TYPE_CHECKING:
    from servesim.engine.world import World

#: Busy-time categories of an instance (seconds), in the ``instances`` table.
PHASES = ("prefill", "decode", "switch", "kv_transfer")


class EngineError(RuntimeError):
    """A policy handed the engine an impossible job (a bug in the policy, not user input)."""


class Instance:
    """One serving instance.

    Attributes:
        index: position in the cluster (stable tie-breaker).
        name: ``<gpu>-<index>``.
        gpu: GPU type; ``tp``: tensor-parallel degree; ``role``: prefill, decode or both.
        model: resident deployed-model index (-1: none).
        state: ``idle``, ``prefill``, ``decode``, ``switch`` or ``kv_transfer``.
        kv_blocks_used: KV blocks held by requests on this instance.
        busy: seconds spent per phase (:data:`PHASES`); ``switches``: model switches done.
        policy_state: free slot for the policy's per-instance state.
    """

    def __init__(self, world: World, index: int, gpu: GPU, tp: int, role: str, model: int,
                 group: int = 0) -> None:
        self.world = world
        self.index = index
        self.gpu = gpu
        self.tp = tp
        self.role = role
        self.group = group
        self.name = f"{gpu.name.lower()}-{index}"
        self.model = model
        self.state = "idle"
        self.kv_blocks_used = 0
        self.kv_blocks_peak = 0
        self.busy = dict.fromkeys(PHASES, 0.0)
        self.switches = 0
        self.switch_seconds = 0.0
        self.policy_state: Any = None
        self._wake: simpy.Event | None = None
        # current decode segment
        self._seg_event: simpy.Event | None = None
        self._seg_id = 0
        self._seg_t0 = 0.0
        self._seg_steps = 0
        self._seg_end = 0.0
        self._seg_model: StepModel | None = None
        self._seg_context = 0.0
        self._seg_batch = 0
        self.process = world.env.process(self._run())

    # -- properties the policies read ---------------------------------------------------------

    @property
    def kv_capacity_blocks(self) -> int:
        """KV capacity in blocks with the resident model (0 when none)."""
        if self.model < 0:
            return 0
        return self.world.latency.kv_capacity(self, self.model)

    @property
    def kv_blocks_free(self) -> int:
        return self.kv_capacity_blocks - self.kv_blocks_used

    @property
    def step_model(self) -> StepModel:
        """Step times of the resident model on this instance."""
        return self.world.latency.step_model(self, self.model)

    # -- control from the policy (through the world) ------------------------------------------

    def wake(self) -> None:
        """Wake the instance if it is idle (it will ask its policy for a job)."""
        ev = self._wake
        if ev is not None and not ev.triggered:
            ev.succeed()

    def poke(self) -> None:
        """Cut the running decode segment at its next step boundary (no-op otherwise)."""
        if self.state == "idle":
            self.wake()
            return
        if self.state != "decode" or self._seg_model is None:
            return
        now = self.world.env.now
        sm = self._seg_model
        elapsed = now - self._seg_t0
        k = sm.decode_steps_within(elapsed, self._seg_context, self._seg_batch)
        if sm.decode_time(k, self._seg_context, self._seg_batch) < elapsed or k == 0:
            k += 1  # a step is in progress: stop when it ends
        if k >= self._seg_steps:
            return
        self._seg_steps = k
        self._seg_end = self._seg_t0 + sm.decode_time(k, self._seg_context, self._seg_batch)
        self._schedule_segment_end(self._seg_end - now)

    def _schedule_segment_end(self, delay: float) -> None:
        seg_id = self._seg_id
        timer = self.world.env.timeout(max(0.0, delay))
        timer.callbacks.append(partial(self._end_segment, seg_id, self._seg_end))

    def _end_segment(self, seg_id: int, end: float, _ev: simpy.Event | None = None) -> None:
        ev = self._seg_event
        if seg_id == self._seg_id and end == self._seg_end and ev is not None and not ev.triggered:
            ev.succeed()

    # -- the process --------------------------------------------------------------------------

    def _run(self) -> Generator[simpy.Event, Any, None]:
        world = self.world
        env = world.env
        policy = world.policy
        while True:
            job = policy.next_job(self, env.now)
            kind = type(job)
            if kind is Decode:
                yield from self._decode(job)  # type: ignore[arg-type]
            elif kind is Prefill:
                yield from self._prefill(job)  # type: ignore[arg-type]
            elif kind is Idle:
                self.state = "idle"
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            elif kind is Switch:
                yield from self._switch(job)  # type: ignore[arg-type]
            elif kind is MoveKV:
                yield from self._move_kv(job)  # type: ignore[arg-type]
            else:
                raise EngineError(f"policy {policy.name!r} returned {job!r}, not a job")
            policy.on_done(self, job, env.now)

    def _prefill(self, job: Prefill) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        env = world.env
        ids = job.ids
        if ids.shape[0] == 0:
            raise EngineError(f"{self.name}: empty prefill")
        if self.model < 0 or np.any(req.model[ids] != self.model):
            raise EngineError(f"{self.name}: prefill of requests whose model is not resident")
        held = req.input_len[ids] + req.generated[ids]
        new_blocks = world.blocks_for(held + 1) - req.kv_blocks[ids]
        self.kv_blocks_used += int(new_blocks.sum())
        if self.kv_blocks_used > self.kv_blocks_peak:
            self.kv_blocks_peak = self.kv_blocks_used
        if self.kv_blocks_used > self.kv_capacity_blocks:
            raise EngineError(
                f"{self.name}: prefill needs {self.kv_blocks_used} KV blocks, "
                f"capacity {self.kv_capacity_blocks}"
            )
        req.kv_blocks[ids] += new_blocks
        now = env.now
        fresh = ids[np.isnan(req.first_scheduled[ids])]
        req.first_scheduled[fresh] = now
        req.status[ids] = Status.RUNNING
        req.instance[ids] = self.index
        heldf = held.astype(np.float64)
        duration = self.step_model.prefill_time(float(heldf.sum()), float((heldf * heldf).sum()))
        self.state = "prefill"
        yield env.timeout(duration)
        self.busy["prefill"] += duration
        world.emit_first_tokens(ids, env.now)
        world.settle(self, ids)

    def _decode(self, job: Decode) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        env = world.env
        ids = job.ids
        batch = int(ids.shape[0])
        if batch == 0:
            raise EngineError(f"{self.name}: empty decode batch")
        remaining = req.output_len[ids] - req.generated[ids]
        steps = min(int(job.max_steps), int(remaining.min()))
        if steps <= 0:
            raise EngineError(f"{self.name}: decode job with max_steps={job.max_steps}")
        sm = self.step_model
        context = float((req.input_len[ids] + req.generated[ids]).sum())
        self.state = "decode"
        self._seg_id += 1
        self._seg_event = env.event()
        self._seg_t0 = t0 = env.now
        self._seg_steps = steps
        self._seg_model = sm
        self._seg_context = context
        self._seg_batch = batch
        self._seg_end = t0 + sm.decode_time(steps, context, batch)
        self._schedule_segment_end(self._seg_end - t0)
        yield self._seg_event
        steps = self._seg_steps
        self._seg_model = None
        self.busy["decode"] += env.now - t0
        first_step = sm.a_d + sm.c_d * batch + sm.b_d * context
        world.advance_decode(ids, steps, t0, first_step, sm.b_d * batch)
        world.settle(self, ids)

    def _switch(self, job: Switch) -> Generator[simpy.Event, Any, None]:
        world = self.world
        if self.kv_blocks_used:
            raise EngineError(f"{self.name}: switch while {self.kv_blocks_used} KV blocks held")
        duration = world.latency.switch_time(self, self.model, job.model)
        self.state = "switch"
        self.model = -1
        yield world.env.timeout(duration)
        self.model = job.model
        self.busy["switch"] += duration
        self.switch_seconds += duration
        self.switches += 1

    def _move_kv(self, job: MoveKV) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        ids = job.ids
        tokens = int((req.input_len[ids] + req.generated[ids]).sum())
        duration = world.latency.kv_move_time(self, int(req.model[ids[0]]), tokens)
        self.state = "kv_transfer"
        if job.direction == "in":
            blocks = world.blocks_for(req.input_len[ids] + req.generated[ids])
            req.kv_blocks[ids] = blocks
            self.kv_blocks_used += int(blocks.sum())
            if self.kv_blocks_used > self.kv_capacity_blocks:
                raise EngineError(f"{self.name}: KV swap-in over capacity")
            req.status[ids] = Status.RUNNING
            req.instance[ids] = self.index
        yield world.env.timeout(duration)
        if job.direction == "out":
            self.kv_blocks_used -= int(req.kv_blocks[ids].sum())
            req.kv_blocks[ids] = 0
            req.status[ids] = Status.SWAPPED
        self.busy["kv_transfer"] += duration


def as_ids(ids: Any) -> np.ndarray:
    """Request ids as a contiguous int64 array (what jobs and kernels take)."""
    return np.ascontiguousarray(ids, dtype=np.int64)


__all__ = ["Instance", "EngineError", "PHASES", "as_ids", "kernels"]
