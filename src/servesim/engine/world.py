"""The world: SimPy environment, request table, instances and the pricing of jobs.

The world knows no scenario and no policy by name: it is handed a policy object, the request
table (arrivals already drawn) and a :class:`ClusterLatency` that prices jobs.

For the multi-model policies :class:`ClusterLatency` also prices a switch after a prefetch
(``max(floor, full - overlapped compute)``), lets a policy replace the switch cost model
(ServerlessLLM's loader), reserves the memory of a prefetch buffer (:meth:`enable_prefetch`)
and sizes the unified KV pool of colocated models (:meth:`colocated_pool`, MuxServe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from heapq import heappop
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import EventPriority

from servesim import kernels
from servesim.engine.checks import Checker
from servesim.engine.instance import Instance
from servesim.engine.requests import RequestTable, Status
from servesim.errors import ServesimError
from servesim.hardware import GPU, ModelShape
from servesim.latency import Profile, StepModel, SwitchModel, kv_capacity_blocks

if TYPE_CHECKING:
    from servesim.policies.base import Policy


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (``events``)."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self.events = 0
        #: called after every event when set (invariant mode)
        self.after_step: Callable[[], None] | None = None

    def step(self) -> None:
        self.events += 1
        super().step()
        if self.after_step is not None:
            self.after_step()

    def run(self, until: Any = None) -> Any:
        """:meth:`simpy.Environment.run`; until an event and without ``after_step``, with
        SimPy's ``step`` inlined in the loop (the same statements, in the same order, and the
        count kept in a local): the per-event Python overhead is the engine's floor, and this
        saves two calls per event."""
        if self.after_step is not None or not isinstance(until, simpy.Event):
            return super().run(until)
        if until.callbacks is None:
            return until.value
        until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        events = self.events
        try:
            while True:
                try:
                    self._now, _, _, event = heappop(queue)
                except IndexError:
                    raise EmptySchedule from None
                events += 1
                callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
                try:
                    for callback in callbacks:
                        callback(event)
                except StopSimulation:
                    event.callbacks = callbacks[callbacks.index(callback) + 1:]
                    self.schedule(event, EventPriority(-1))
                    raise
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation as exc:
            return exc.args[0]  # == until.value
        except EmptySchedule:
            raise RuntimeError(
                f'No scheduled events left but "until" event was not triggered: {until}'
            ) from None
        finally:
            self.events = events


@dataclass(frozen=True)
class InstanceSpec:
    """A resolved instance: GPU, TP degree, role and the model resident at time 0 (-1: none)."""

    gpu: GPU
    tp: int = 1
    role: str = "both"
    model: int = -1
    group: int = 0


class ClusterLatency:
    """Prices jobs: step models, KV capacities, switch and KV-transfer times, per instance.

    Args:
        models: deployed model shapes, indexed like the request table's ``model`` column.
        profile_for: ``(gpu, model_shape, tp) -> Profile``.
        switch_for: ``gpu -> SwitchModel``.
        usable_fraction: share of GPU memory usable for weights and KV.
        reserved_bytes: memory kept aside per instance (e.g. a prefetch buffer), bytes.
        block_size: tokens per KV block.
        kv_transfer_seconds_per_token: if set, seconds per context token to move KV to or
            from host memory (Aegaeon's simulator: 0.03125 ms); else bytes / host bandwidth.
        kv_tokens: if set, a fixed KV pool of this many tokens per instance.
        prefetch: may policies prefetch (load a second model in the background, which reserves
            memory for it)? ``None``: when two models fit the GPU (not on 24 GB cards).
    """

    def __init__(
        self,
        models: Sequence[ModelShape],
        profile_for: Callable[[GPU, ModelShape, int], Profile],
        switch_for: Callable[[GPU], SwitchModel],
        usable_fraction: float = 0.9,
        reserved_bytes: float = 0.0,
        block_size: int = 16,
        kv_transfer_seconds_per_token: float | None = None,
        kv_tokens: int | None = None,
        prefetch: bool | None = None,
    ) -> None:
        self.models = list(models)
        self.prefetch = prefetch
        self._profile_for = profile_for
        self._switch_for = switch_for
        self.usable_fraction = usable_fraction
        self.reserved_bytes = reserved_bytes
        self.block_size = block_size
        self.kv_transfer_seconds_per_token = kv_transfer_seconds_per_token
        self.kv_tokens = kv_tokens
        self._steps: dict[tuple[str, int, int], StepModel] = {}
        self._capacity: dict[tuple[str, int, int], int] = {}
        self._switch: dict[str, SwitchModel] = {}

    def profile(self, gpu: GPU, tp: int, model: int) -> Profile:
        return self._profile_for(gpu, self.models[model], tp)

    def step_model(self, inst: Instance, model: int) -> StepModel:
        key = (inst.gpu.name, inst.tp, model)
        sm = self._steps.get(key)
        if sm is None:
            sm = StepModel.from_profile(self.profile(inst.gpu, inst.tp, model))
            self._steps[key] = sm
        return sm

    def kv_capacity(self, inst: Instance, model: int) -> int:
        key = (inst.gpu.name, inst.tp, model)
        cap = self._capacity.get(key)
        if cap is None:
            cap = self.capacity_of(inst.gpu, inst.tp, model)
            self._capacity[key] = cap
        return cap

    def capacity_of(self, gpu: GPU, tp: int, model: int) -> int:
        """KV blocks of ``model`` on ``gpu``; raises ServesimError when it does not fit.

        With ``kv_tokens`` set, the pool is that many tokens (the model must still fit)."""
        blocks = kv_capacity_blocks(
            gpu, self.models[model], tp, self.usable_fraction, self.reserved_bytes,
            self.block_size,
        )
        if self.kv_tokens is not None:
            return max(1, self.kv_tokens // self.block_size)
        return blocks

    def switch_model(self, gpu: GPU) -> SwitchModel:
        """The switch cost model of ``gpu`` (cached)."""
        sw = self._switch.get(gpu.name)
        if sw is None:
            sw = self._switch_for(gpu)
            self._switch[gpu.name] = sw
        return sw

    def switch_time(self, inst: Instance, old: int, new: int,
                    overlapped: float | None = None) -> float:
        """Seconds to make ``new`` resident; after a prefetch that overlapped ``overlapped``
        seconds of compute: ``max(floor, full - overlapped)`` (``specs/latency-model.md`` §3)."""
        sw = self.switch_model(inst.gpu)
        full = sw.switch_time(self.models[new], inst.tp)
        if overlapped is None:
            return full
        return sw.with_prefetch(full, overlapped)

    def set_switch_model(self, switch_for: Callable[[GPU], SwitchModel]) -> None:
        """Replace the switch cost model (a policy with its own loader, before the run)."""
        self._switch_for = switch_for
        self._switch.clear()

    def _reserve(self, reserved_bytes: float) -> None:
        self.reserved_bytes = reserved_bytes
        self._capacity.clear()

    def enable_prefetch(self, gpus: Sequence[tuple[GPU, int]]) -> bool:
        """Reserve a prefetch buffer (the largest model's weights) if prefetching is allowed.

        Allowed when ``prefetch`` is true, or ``None`` and every model still fits every
        ``(gpu, tp)`` with the buffer (two models in memory; never on a 24 GB card with 7B
        models). Call before any model is made resident. Returns whether prefetch is on.
        """
        if self.prefetch is False or not self.models:
            return False
        buffer = max(m.weight_bytes for m in self.models)
        old = self.reserved_bytes
        self._reserve(old + buffer)
        try:
            for gpu, tp in set(gpus):
                for m in range(len(self.models)):
                    self.capacity_of(gpu, tp, m)
        except ServesimError as exc:
            self._reserve(old)
            if self.prefetch:
                raise ServesimError(f"switching.prefetch: two models do not fit: {exc}") from None
            return False
        return True

    def colocated_pool(self, gpu: GPU, tp: int, models: Sequence[int]
                       ) -> tuple[int, dict[int, int]]:
        """Unified KV pool of ``models`` resident together: ``(capacity in units, units per
        block of each model)``; a unit is the gcd of the models' block sizes in bytes.

        Raises a ServesimError when the weights leave less than one block of each model."""
        shapes = [self.models[m] for m in models]
        block_bytes = [int(s.kv_bytes_per_token) * self.block_size for s in shapes]
        unit = math.gcd(*block_bytes)
        usable = gpu.memory_bytes * tp * self.usable_fraction - self.reserved_bytes
        free = usable - sum(s.weight_bytes for s in shapes)
        if self.kv_tokens is not None:
            free = min(free, self.kv_tokens * max(s.kv_bytes_per_token for s in shapes))
        if free < sum(block_bytes):
            gib = 1024**3
            raise ServesimError(
                f"models {', '.join(s.name for s in shapes)} "
                f"({sum(s.weight_bytes for s in shapes) / gib:.1f} GiB of weights) do not fit "
                f"together on {gpu.name}" + (f" x {tp}" if tp > 1 else "")
                + f" ({usable / gib:.1f} GiB usable)"
            )
        return int(free // unit), {m: b // unit for m, b in zip(models, block_bytes, strict=True)}

    def kv_move_time(self, inst: Instance, model: int, tokens: int) -> float:
        if self.kv_transfer_seconds_per_token is not None:
            return tokens * self.kv_transfer_seconds_per_token
        shape = self.models[model]
        return tokens * shape.kv_bytes_per_token / (inst.gpu.host_link_bandwidth * inst.tp)


class World:
    """The simulated world of one run.

    Args:
        requests: the request table (sorted by arrival).
        instances: resolved instance specs.
        policy: the scheduling policy object.
        latency: prices jobs.
        block_size, lookahead: KV blocks of ``block_size`` tokens; a request holding ``L``
            tokens holds ``ceil((L + lookahead) / block_size)`` blocks.
        start_timeout: seconds after arrival by which a request must have started, else it
            fails (policies apply it when they look at their queues).
        max_time: stop the run at this simulated time even if requests remain (None: drain).
        record_token_times: keep every token's emission time (memory grows with tokens).
        check: assert the world's invariants after every event (:mod:`.checks`).
        stepwise: the reference engine: one event per decode step instead of fast-forward.
        tenant_weights: fair-share weight of each tenant index (fairness policies divide their
            charges by it); None: 1 for every tenant of the request table.
    """

    def __init__(
        self,
        requests: RequestTable,
        instances: Sequence[InstanceSpec],
        policy: Policy,
        latency: ClusterLatency,
        block_size: int = 16,
        lookahead: int = 0,
        start_timeout: float = 15.0,
        max_time: float | None = None,
        record_token_times: bool = False,
        check: bool = False,
        stepwise: bool = False,
        tenant_weights: Sequence[float] | None = None,
    ) -> None:
        self.env = CountingEnvironment()
        self.stepwise = stepwise
        self.requests = requests
        self.policy = policy
        self.latency = latency
        self.block_size = block_size
        self.lookahead = lookahead
        self.start_timeout = start_timeout
        self.max_time = max_time
        n_tenants = int(requests.tenant.max()) + 1 if requests.n else 1
        self.tenant_weights = (np.ones(n_tenants) if tenant_weights is None
                               else np.asarray(tenant_weights, dtype=np.float64))
        self.gap_hist = np.zeros(kernels.GAP_HIST_BINS, dtype=np.int64)
        self.resolved = 0
        #: requests finished by the last settled job (policies skip bookkeeping when 0)
        self.last_finished = 0
        self.arrived = 0
        self.stop_reason = "drained"
        self._done = self.env.event()
        #: called as ``progress(arrived, total)`` about every 1 % of arrivals (CLI progress)
        self.progress: Callable[[int, int], None] | None = None
        self.token_offsets: np.ndarray | None = None
        self.token_times: np.ndarray | None = None
        if record_token_times:
            self.token_offsets = np.zeros(requests.n + 1, dtype=np.int64)
            np.cumsum(requests.output_len, out=self.token_offsets[1:])
            self.token_times = np.full(int(self.token_offsets[-1]), np.nan)
        self.instances = [
            Instance(self, i, s.gpu, s.tp, s.role, s.model, s.group)
            for i, s in enumerate(instances)
        ]
        policy.attach(self)
        self._arrival_process = self.env.process(self._arrivals())
        self.checker: Checker | None = None
        if check:
            self.checker = Checker(self)
            self.env.after_step = self.checker.after_event

    # -- helpers for policies ----------------------------------------------------------------

    def blocks_for(self, tokens: Any) -> Any:
        """KV blocks that ``tokens`` held tokens need (scalar or array)."""
        return (tokens + self.lookahead + self.block_size - 1) // self.block_size

    def kv_max_steps(self, inst: Instance, ids: np.ndarray, cap_steps: int) -> int:
        """Largest number of decode steps (<= ``cap_steps``) of batch ``ids`` that fits KV."""
        req = self.requests
        return int(kernels.kv_max_steps_packed(
            ids, req.i64, int(cap_steps),
            inst.blocks_free(int(req.model[ids[0]])) if inst.resident
            else inst.kv_capacity_blocks - inst.kv_blocks_used,
            self.block_size, self.lookahead))

    def fail(self, rid: int, when: float, reason: int = 1) -> None:
        """Mark ``rid`` failed at ``when`` (it must hold no KV)."""
        req = self.requests
        req.status[rid] = Status.FAILED
        req.finish[rid] = when
        req.fail_reason[rid] = reason
        self._resolve(1)

    def reject(self, rid: int, now: float) -> None:
        """Refuse ``rid`` at arrival (reported as rejected)."""
        req = self.requests
        req.status[rid] = Status.REJECTED
        req.finish[rid] = now
        self._resolve(1)

    def expired(self, rid: int, now: float) -> bool:
        """True when ``rid`` never started and waited past the start timeout: it is failed now.

        Policies call this on the request they are about to admit.
        """
        req = self.requests
        if now - req.arrival[rid] > self.start_timeout and req.generated[rid] == 0:
            self.fail(rid, float(req.arrival[rid] + self.start_timeout))
            return True
        return False

    def evict(self, inst: Instance, rid: int) -> None:
        """Preempt ``rid`` by recomputation: free its KV; it waits to be prefilled again."""
        req = self.requests
        inst.release_blocks(int(req.kv_blocks[rid]), int(req.model[rid]))
        req.kv_blocks[rid] = 0
        req.status[rid] = Status.WAITING
        req.preemptions[rid] += 1

    # -- called by instances -----------------------------------------------------------------

    def emit_first_tokens(self, ids: np.ndarray, t: float) -> None:
        req = self.requests
        if self.token_times is not None and self.token_offsets is not None:
            self.token_times[self.token_offsets[ids] + req.generated[ids]] = t
        kernels.emit_one_token(
            ids, t, req.arrival, req.generated, req.first_token, req.last_token, req.slo_start,
            req.slo_accum, req.slo_target, req.slo_qos, req.ttft_slo, req.tbt_slo, req.gap_sum,
            req.gap_max, req.late_gaps, self.gap_hist,
        )

    def advance_decode(
        self, ids: np.ndarray, steps: int, t0: float, first_step: float, growth: float
    ) -> None:
        req = self.requests
        if self.token_times is not None and self.token_offsets is not None:
            kernels.record_token_times(ids, steps, t0, first_step, growth, req.generated[ids],
                                       self.token_offsets, self.token_times)
        kernels.advance_decode(
            ids, steps, t0, first_step, growth, req.arrival, req.generated, req.last_token,
            req.slo_start, req.slo_accum, req.slo_target, req.slo_qos, req.tbt_slo, req.gap_sum,
            req.gap_max, req.late_gaps, self.gap_hist,
        )

    def finish_prefill(self, ids: np.ndarray) -> int:
        """End of a prefill of ``ids`` now: :meth:`emit_first_tokens` then :meth:`settle`, in
        one kernel call. Returns the change in blocks held."""
        req = self.requests
        now = self.env.now
        if self.token_times is not None and self.token_offsets is not None:
            self.token_times[self.token_offsets[ids] + req.generated[ids]] = now
        delta, finished = kernels.finish_prefill_packed(
            ids, now, req.f64, req.i64, req.status, self.gap_hist, self.block_size,
            self.lookahead)
        self.last_finished = finished
        if finished:
            self._resolve(finished)
        return int(delta)

    def finish_decode(
        self, ids: np.ndarray, steps: int, t0: float, first_step: float, growth: float
    ) -> int:
        """End of a fast-forwarded decode job now: :meth:`advance_decode` then :meth:`settle`,
        in one kernel call. Returns the change in blocks held."""
        req = self.requests
        if self.token_times is not None and self.token_offsets is not None:
            kernels.record_token_times(ids, steps, t0, first_step, growth, req.generated[ids],
                                       self.token_offsets, self.token_times)
        delta, finished = kernels.finish_decode_packed(
            ids, steps, t0, first_step, growth, self.env.now, req.f64, req.i64, req.status,
            self.gap_hist, self.block_size, self.lookahead)
        self.last_finished = finished
        if finished:
            self._resolve(finished)
        return int(delta)

    def settle(self, ids: np.ndarray) -> int:
        """After a job: finish requests that emitted their last token, resize the KV of the
        rest. Returns the change in blocks held; ``last_finished`` counts the finishes."""
        req = self.requests
        delta, finished = kernels.settle(ids, self.env.now, req.input_len, req.output_len,
                                         req.generated, req.kv_blocks, req.status, req.finish,
                                         self.block_size, self.lookahead)
        self.last_finished = finished
        if finished:
            self._resolve(finished)
        return int(delta)

    # -- the run -----------------------------------------------------------------------------

    def _resolve(self, count: int) -> None:
        self.resolved += count
        if self.resolved >= self.requests.n and not self._done.triggered:
            self._done.succeed()

    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        req = self.requests
        arrival = req.arrival
        policy = self.policy
        status = req.status
        waiting = int(Status.WAITING)  # a plain int: a NumPy store of an IntEnum is slower
        every = max(1, req.n // 100)
        for rid in range(req.n):
            delay = arrival[rid] - env.now
            if delay > 0:
                yield env.timeout(delay)
            status[rid] = waiting
            self.arrived += 1
            policy.on_arrival(rid, env.now)
            if self.progress is not None and self.arrived % every == 0:
                self.progress(self.arrived, req.n)

    def run(self) -> None:
        """Run until every request is finished, failed or rejected (or ``max_time``)."""
        if self.requests.n == 0:
            return
        if self.max_time is not None:
            cap = self.env.timeout(self.max_time)
            cap.callbacks.append(self._stop_at_cap)
        try:
            self.env.run(until=self._done)
        except RuntimeError as exc:  # the queue ran dry before every request was resolved
            if "No scheduled events left" not in str(exc):
                raise
            self.stop_reason = "stalled"
        # A process that failed in the run's last instant (a policy bug, or Ctrl-C landing
        # inside a process) is scheduled but never processed once the run stops: re-raise it.
        for proc in [inst.process for inst in self.instances] + [self._arrival_process]:
            if proc.triggered and not proc.ok:
                proc.defused = True
                raise cast(BaseException, proc.value)
        self._close()
        if self.checker is not None:
            self.checker.at_end()

    def _stop_at_cap(self, _ev: simpy.Event) -> None:
        if not self._done.triggered:
            self.stop_reason = "max_time"
            self._done.succeed()

    def _close(self) -> None:
        """Resolve what is left when the run stops early: unfinished or failed."""
        req = self.requests
        now = self.env.now
        open_ = np.flatnonzero(np.isin(req.status, (Status.WAITING, Status.RUNNING,
                                                    Status.SWAPPED, Status.PENDING)))
        if open_.size == 0:
            return
        never = open_[(req.generated[open_] == 0) & (req.status[open_] != Status.PENDING)]
        timed_out = never[now - req.arrival[never] > self.start_timeout]
        req.status[timed_out] = Status.FAILED
        req.finish[timed_out] = req.arrival[timed_out] + self.start_timeout
        req.fail_reason[timed_out] = 1
        rest = np.setdiff1d(open_, timed_out)
        if self.stop_reason == "stalled":
            req.status[rest] = Status.FAILED
            req.fail_reason[rest] = 3
            req.finish[rest] = now
        else:
            req.status[rest] = Status.UNFINISHED
        for inst in self.instances:
            inst.kv_blocks_used = 0
        req.kv_blocks[open_] = 0
