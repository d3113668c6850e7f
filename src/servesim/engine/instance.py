"""An instance: one GPU or tensor-parallel group, executing the jobs its policy hands it.

The instance's SimPy process repeatedly asks the policy for the next job, prices it with the
latency model and waits for it to end. A ``Decode`` job is fast-forwarded: it is one event
however many steps it runs (see ARCHITECTURE.md, "Time: fast-forward decoding"); a poke from
the policy cuts it at the next step boundary.

Two extensions serve the multi-model policies (``specs/autoscaling.md``):

- **Prefetch** (``Prefetch(model)`` job, no time): the instance records the model it loads in
  the background and credits the prefill and decode seconds it computes afterwards; a later
  ``Switch`` to that model costs ``max(floor, full - credit)`` (see
  :meth:`ClusterLatency.switch_time`).
- **Colocation** (:meth:`Instance.colocate`, MuxServe): several models resident at once with
  one *unified* KV pool in bytes. Blocks of different models have different sizes, so the pool
  is counted in *units* (the greatest common divisor of the models' block sizes in bytes):
  ``kv_units_used <= kv_units_capacity`` is the real bound, while ``kv_blocks_used`` stays the
  plain sum of the blocks its requests hold (the invariant checker's law) and
  ``kv_capacity_blocks`` is the pool in blocks of the smallest model. Prefill and decode jobs
  take the step model of their requests' model; jobs of one model at a time (time slicing).

Single-model instances never take these branches, so their results are unchanged.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy
from simpy.events import PENDING, URGENT

from servesim import kernels
from servesim.engine.jobs import Decode, Idle, MoveKV, Prefetch, Prefill, Switch
from servesim.engine.requests import Status
from servesim.hardware import GPU
from servesim.latency import StepModel

if TYPE_CHECKING:
    from servesim.engine.world import World

#: Busy-time categories of an instance (seconds), in the ``instances`` table.
PHASES = ("prefill", "decode", "switch", "kv_transfer")

#: The value a poked decode segment's process is resumed with (see :meth:`Instance.poke`).
_POKED = object()


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
        prefetch_model: model being loaded in the background (-1: none);
        ``prefetch_overlap``: compute seconds credited to it; ``prefetched_switches``:
        switches that used a prefetched copy.
        resident: models resident together on a colocated instance (empty otherwise).
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
        self.kv_capacity_blocks = 0
        self.step_model: StepModel | None = None
        self._model = -1
        self.model = model
        self.state = "idle"
        self.kv_blocks_used = 0
        self.kv_blocks_peak = 0
        self.busy = dict.fromkeys(PHASES, 0.0)
        self.switches = 0
        self.switch_seconds = 0.0
        self.prefetch_model = -1
        self.prefetch_overlap = 0.0
        self.prefetched_switches = 0
        self.last_switch_seconds = 0.0
        # colocation (MuxServe): resident models, KV units per block of each, unit pool
        self.resident: tuple[int, ...] = ()
        self._units: dict[int, int] | None = None
        self._colocated_steps: dict[int, StepModel] = {}
        self.kv_units_capacity = 0
        self.kv_units_used = 0
        self.kv_units_peak = 0
        self.policy_state: Any = None
        self._wake: simpy.Event | None = None
        # the running decode segment (fast-forwarded)
        self._seg_t0 = 0.0
        self._seg_steps = 0
        self._seg_end = 0.0
        self._seg_context = 0.0
        self._seg_batch = 0
        self._seg_poked = False
        self._seg_sm: StepModel | None = None
        self.process = world.env.process(self._run())

    @property
    def model(self) -> int:
        """Resident deployed-model index (-1: none). Setting it (placement at time 0, or the
        end of a switch) also sets ``kv_capacity_blocks`` and ``step_model``; it raises a
        ServesimError when the model does not fit this instance."""
        return self._model

    @model.setter
    def model(self, model: int) -> None:
        self._model = model
        if model < 0:
            self.kv_capacity_blocks = 0
            self.step_model = None
        else:
            latency = self.world.latency
            self.kv_capacity_blocks = latency.kv_capacity(self, model)
            self.step_model = latency.step_model(self, model)

    @property
    def kv_blocks_free(self) -> int:
        return self.kv_capacity_blocks - self.kv_blocks_used

    # -- colocation (several resident models, unified KV pool) --------------------------------

    def colocate(self, models: tuple[int, ...] | list[int]) -> None:
        """Make ``models`` resident together with one unified KV pool (no switching after).

        Raises a ServesimError when their weights and a minimal KV pool do not fit."""
        models = tuple(int(m) for m in models)
        if len(models) == 1:
            self.model = models[0]
            return
        latency = self.world.latency
        units_capacity, units = latency.colocated_pool(self.gpu, self.tp, models)
        self.model = -1
        self._model = models[0]  # reported model; step models come from the job's requests
        self.resident = models
        self._units = units
        self._colocated_steps = {m: latency.step_model(self, m) for m in models}
        self.step_model = self._colocated_steps[models[0]]
        self.kv_units_capacity = units_capacity
        self.kv_capacity_blocks = units_capacity // min(units.values())

    def blocks_free(self, model: int) -> int:
        """KV blocks of ``model`` that still fit (the unified pool on colocated instances)."""
        units = self._units
        if units is None:
            return self.kv_capacity_blocks - self.kv_blocks_used
        return (self.kv_units_capacity - self.kv_units_used) // units[model]

    def blocks_capacity(self, model: int) -> int:
        """KV blocks of ``model`` in an empty instance."""
        units = self._units
        if units is None:
            return self.kv_capacity_blocks
        return self.kv_units_capacity // units[model]

    # -- control from the policy --------------------------------------------------------------

    def wake(self) -> None:
        """Wake the instance if it is idle (it will ask its policy for a job)."""
        ev = self._wake
        if ev is not None and not ev.triggered:
            ev.succeed()

    def poke(self) -> None:
        """Cut the running decode segment at its next step boundary (wake it when idle)."""
        state = self.state
        if state == "idle":
            self.wake()
            return
        if state != "decode" or self._seg_poked:
            return
        env = self.world.env
        if env.active_process is self.process:
            return  # it is deciding right now and will ask its policy anyway
        if self.world.stepwise:
            self._seg_poked = True  # the stepwise loop stops after the current step
            return
        sm = self._seg_sm
        assert sm is not None
        elapsed = env.now - self._seg_t0
        k = sm.decode_steps_within(elapsed, self._seg_context, self._seg_batch)
        if k == 0 or sm.decode_time(k, self._seg_context, self._seg_batch) < elapsed:
            k += 1  # a step is in progress: stop when it ends
        if k >= self._seg_steps:
            return
        self._seg_steps = k
        self._seg_end = self._seg_t0 + sm.decode_time(k, self._seg_context, self._seg_batch)
        self._seg_poked = True
        # What ``self.process.interrupt()`` does, without raising an exception into the
        # generator: an urgent event now (the same heap position and event count as SimPy's
        # Interruption) whose callback detaches the process from its decode timeout and
        # resumes it with the _POKED value.
        proc = self.process
        if proc._value is not PENDING:
            raise RuntimeError(f"{proc} has terminated and cannot be interrupted.")
        ev = simpy.Event(env)
        ev._ok = True
        ev._value = _POKED
        ev.callbacks.append(self._resume_poked)  # type: ignore[union-attr]
        env.schedule(ev, URGENT)

    def _resume_poked(self, event: simpy.Event) -> None:
        proc = self.process
        if proc._value is not PENDING:
            return  # the process died meanwhile (as SimPy's Interruption)
        proc._target.callbacks.remove(proc._resume)  # type: ignore[union-attr]
        proc._resume(event)

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
            elif kind is Prefetch:
                self._prefetch(job)  # type: ignore[arg-type]
            else:
                raise EngineError(f"policy {policy.name!r} returned {job!r}, not a job")
            policy.on_done(self, job, env.now)

    def _add_blocks(self, delta: int, model: int = -1) -> None:
        if self._units is not None:
            self._add_units(delta * self._units[model])
        used = self.kv_blocks_used + delta
        self.kv_blocks_used = used
        if delta > 0:
            if used > self.kv_blocks_peak:
                self.kv_blocks_peak = used
            if used > self.kv_capacity_blocks:
                raise EngineError(
                    f"{self.name}: {used} KV blocks in use, capacity {self.kv_capacity_blocks}"
                )

    def release_blocks(self, blocks: int, model: int) -> None:
        """``blocks`` KV blocks of ``model`` were freed (eviction, move to host memory)."""
        self.kv_blocks_used -= blocks
        if self._units is not None:
            self.kv_units_used -= blocks * self._units[model]

    def _add_units(self, delta: int) -> None:
        used = self.kv_units_used + delta
        self.kv_units_used = used
        if used > self.kv_units_peak:
            self.kv_units_peak = used
        if used > self.kv_units_capacity:
            raise EngineError(
                f"{self.name}: {used} KV units in use, unified pool {self.kv_units_capacity}"
            )

    def _job_model(self, ids: np.ndarray) -> tuple[int, StepModel | None]:
        """Model and step model of a job's requests on a colocated instance."""
        model = int(self.world.requests.model[ids[0]])
        return model, self._colocated_steps.get(model)

    def _prefill(self, job: Prefill) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        env = world.env
        ids = job.ids
        if ids.shape[0] == 0:
            raise EngineError(f"{self.name}: empty prefill")
        sm = self.step_model
        model = self._model
        if self._units is not None:
            model, sm = self._job_model(ids)
        if sm is None:
            raise EngineError(f"{self.name}: prefill with no resident model")
        delta, tokens, tokens_sq, wrong = kernels.begin_prefill_packed(
            ids, env.now, self.index, model, req.f64, req.i64, req.i32, req.status,
            world.block_size, world.lookahead,
        )
        if wrong:
            raise EngineError(f"{self.name}: prefill of {wrong} requests of another model")
        self._add_blocks(delta, model)
        duration = sm.a_p + sm.b_p * tokens + sm.c_p * tokens_sq
        self.state = "prefill"
        yield env.timeout(duration)
        self.busy["prefill"] += duration
        if self.prefetch_model >= 0:
            self.prefetch_overlap += duration
        self._add_blocks(world.finish_prefill(ids), model)

    def _decode(self, job: Decode) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        env = world.env
        ids = job.ids
        batch = int(ids.shape[0])
        if batch == 0:
            raise EngineError(f"{self.name}: empty decode batch")
        sm = self.step_model
        model = self._model
        if self._units is not None:
            model, sm = self._job_model(ids)
        if sm is None:
            raise EngineError(f"{self.name}: decode with no resident model")
        context, fewest = kernels.decode_batch_packed(ids, req.i64)
        steps = min(int(job.max_steps), int(fewest))
        if steps <= 0:
            raise EngineError(f"{self.name}: decode job with max_steps={job.max_steps}")
        first_step = sm.a_d + sm.c_d * batch + sm.b_d * context
        growth = sm.b_d * batch
        if world.stepwise:
            yield from self._decode_stepwise(ids, steps, sm, context, model)
            return
        self.state = "decode"
        self._seg_t0 = t0 = env.now
        self._seg_steps = steps
        self._seg_context = context
        self._seg_batch = batch
        self._seg_poked = False
        self._seg_sm = sm
        duration = steps * first_step + growth * (steps * (steps - 1) / 2.0)
        if (yield env.timeout(duration)) is _POKED:  # run on to the step boundary of poke()
            yield env.timeout(max(0.0, self._seg_end - env.now))
        steps = self._seg_steps
        self.busy["decode"] += env.now - t0
        if self.prefetch_model >= 0:
            self.prefetch_overlap += env.now - t0
        self._add_blocks(world.finish_decode(ids, steps, t0, first_step, growth), model)

    def _decode_stepwise(self, ids: np.ndarray, steps: int, sm: StepModel, context: float,
                         model: int) -> Generator[simpy.Event, Any, None]:
        """The reference engine (``engine.mode: stepwise``): one event per decode step, step
        times summed one by one, no closed form. A poke stops it after the current step."""
        world = self.world
        env = world.env
        batch = int(ids.shape[0])
        self.state = "decode"
        self._seg_poked = False
        t0 = env.now
        for _ in range(steps):
            step = sm.a_d + sm.c_d * batch + sm.b_d * context
            yield env.timeout(step)
            world.advance_decode(ids, 1, env.now, 0.0, 0.0)
            context += batch
            if self._seg_poked:
                break
        self.busy["decode"] += env.now - t0
        if self.prefetch_model >= 0:
            self.prefetch_overlap += env.now - t0
        self._add_blocks(world.settle(ids), model)

    def _switch(self, job: Switch) -> Generator[simpy.Event, Any, None]:
        world = self.world
        if self.kv_blocks_used:
            raise EngineError(f"{self.name}: switch while {self.kv_blocks_used} KV blocks held")
        if self._units is not None:
            raise EngineError(f"{self.name}: switch on an instance with colocated models")
        overlapped = None
        if self.prefetch_model >= 0 and self.prefetch_model == job.model:
            overlapped = self.prefetch_overlap
            self.prefetched_switches += 1
        self.prefetch_model = -1
        self.prefetch_overlap = 0.0
        duration = world.latency.switch_time(self, self._model, job.model, overlapped)
        self.state = "switch"
        self.model = -1
        yield world.env.timeout(duration)
        self.model = job.model
        self.busy["switch"] += duration
        self.switch_seconds += duration
        self.last_switch_seconds = duration
        self.switches += 1

    def _move_kv(self, job: MoveKV) -> Generator[simpy.Event, Any, None]:
        world = self.world
        req = world.requests
        ids = job.ids
        if ids.shape[0] == 0:
            raise EngineError(f"{self.name}: empty KV move")
        model = int(req.model[ids[0]])
        tokens = int((req.input_len[ids] + req.generated[ids]).sum())
        duration = world.latency.kv_move_time(self, model, tokens)
        self.state = "kv_transfer"
        if job.direction == "in":
            blocks = world.blocks_for(req.input_len[ids] + req.generated[ids])
            req.kv_blocks[ids] = blocks
            self._add_blocks(int(blocks.sum()), model)
            req.status[ids] = Status.RUNNING
            req.instance[ids] = self.index
        yield world.env.timeout(duration)
        if job.direction == "out":
            self.release_blocks(int(req.kv_blocks[ids].sum()), model)
            req.kv_blocks[ids] = 0
            req.status[ids] = Status.SWAPPED
        self.busy["kv_transfer"] += duration

    def _prefetch(self, job: Prefetch) -> None:
        if self._units is not None:
            raise EngineError(f"{self.name}: prefetch on an instance with colocated models")
        self.prefetch_model = -1 if job.model == self._model else int(job.model)
        self.prefetch_overlap = 0.0


def as_ids(ids: Any) -> np.ndarray:
    """Request ids as a contiguous int64 array (what jobs and kernels take)."""
    return np.ascontiguousarray(ids, dtype=np.int64)


__all__ = ["Instance", "EngineError", "PHASES", "as_ids", "kernels"]
