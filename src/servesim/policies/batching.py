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

Composition hook (orderings inside any policy): an ordering is registered by name with
:func:`register_order` and built with :func:`make_queue`::

    queue = make_queue(params.order, params.order_params, world)   # "fcfs", "vtc", "equinox", ...
    batcher = Batcher(world, inst, queue, params)

A policy that wants ``--set policy.order=vtc`` inherits :class:`OrderParams` in its ``Params``
(fields ``order`` and ``order_params``, validated at load time) and builds its queues with
:func:`make_queue`; one queue may be shared by several batchers (the counters are then global
over those instances). Besides the five methods of :class:`AdmissionQueue`, a queue may define
two optional hooks that :class:`Batcher` calls when present:

- ``admitted(rid, now)``: ``rid`` was just popped to be prefilled (counters charge it here;
  ``pop`` alone never charges, since a popped request may instead fail);
- ``job_done(inst, job, started, now)``: a job of ``inst`` that started at ``started`` ended
  (counters charge the tokens generated and settle finished requests).

A policy with its own batching code must call them the same way to keep the orderings exact.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from servesim.config import build, fld
from servesim.engine.jobs import IDLE, Decode, Job, Prefill
from servesim.engine.requests import Status
from servesim.errors import ScenarioError, did_you_mean

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World

_EMPTY = np.zeros(0, dtype=np.int64)
#: ``Status.RUNNING`` as a plain int: an IntEnum member lookup costs a microsecond in the
#: hot path (``EnumType.__getattr__``), the comparison result is the same.
_RUNNING = int(Status.RUNNING)
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
    """The order in which waiting requests are admitted (optional hooks: module docstring)."""

    def push(self, rid: int) -> None: ...
    def push_front(self, rid: int) -> None: ...
    def peek(self) -> int: ...
    def pop(self) -> int: ...
    def __len__(self) -> int: ...


#: ``(order parameters or None, world) -> queue``; registered with :func:`register_order`.
QueueFactory = Callable[[Any, "World"], AdmissionQueue]


class _Order:
    __slots__ = ("factory", "params")

    def __init__(self, factory: QueueFactory, params: type) -> None:
        self.factory = factory
        self.params = params


ORDERS: dict[str, _Order] = {}


@dataclass(frozen=True)
class _NoOrderParams:
    """An ordering without parameters."""


def register_order(name: str, params: type = _NoOrderParams
                   ) -> Callable[[QueueFactory], QueueFactory]:
    """Decorator: register a queue factory under ``name`` with its frozen ``params`` dataclass.

    Duplicate names are refused (as for policies)."""
    key = name.lower()

    def deco(factory: QueueFactory) -> QueueFactory:
        if key in ORDERS and ORDERS[key].factory is not factory:
            raise ValueError(f"order name {name!r} is already registered")
        ORDERS[key] = _Order(factory, params)
        return factory

    return deco


def order_names() -> list[str]:
    """Names of the registered orderings."""
    return sorted(ORDERS)


def order_params(order: str, params: Any = None, path: str = "order_params",
                 order_path: str = "order") -> Any:
    """The validated parameters of ``order``.

    ``params`` may be an instance of the order's parameter class, any other dataclass holding
    its fields (e.g. a policy's ``Params``; missing fields take their defaults), a mapping
    (validated; errors name ``path``) or None (defaults). An unknown order raises a
    ScenarioError naming ``order_path``."""
    entry = ORDERS.get(str(order).lower())
    if entry is None:
        names = order_names()
        raise ScenarioError(f"{order_path}: unknown order '{order}'"
                            f"{did_you_mean(str(order), names)}; known: {', '.join(names)}")
    if isinstance(params, entry.params):
        return params
    if params is None:
        params = {}
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        fields = {f.name for f in dataclasses.fields(entry.params)}
        return entry.params(**{k: getattr(params, k) for k in fields if hasattr(params, k)})
    if not isinstance(params, dict):
        raise ScenarioError(f"{path}: expected a mapping, got {params!r}")
    return build(entry.params, params, path)


def make_queue(order: str, params: Any, world: World) -> AdmissionQueue:
    """Build the admission queue of ordering ``order`` with ``params`` (see
    :func:`order_params`) for ``world`` (see module docstring)."""
    resolved = order_params(order, params)
    return ORDERS[str(order).lower()].factory(resolved, world)


@dataclass(frozen=True)
class OrderParams:
    """Mixin of a policy's ``Params``: the admission order of its queues (composition hook)."""

    order: str = fld(
        "fcfs",
        "admission order of waiting requests: fcfs, vtc, lcf, vtc-oracle, vtc-predict, equinox "
        "(docs/fairness.md)",
    )
    order_params: dict[str, Any] = fld(
        factory=dict,
        doc="parameters of the order, e.g. {lift: paper} for vtc (docs/policies/vtc.md)",
    )

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        order_params(self.order, dict(self.order_params), f"{prefix}order_params",
                     f"{prefix}order")


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


register_order("fcfs")(lambda _params, _world: FCFSQueue())


class Batcher:
    """The continuous-batching state of one instance: a waiting queue and a running batch."""

    def __init__(self, world: World, inst: Instance, queue: AdmissionQueue,
                 params: BatchingParams, model: int = -1) -> None:
        self.world = world
        self.inst = inst
        self.waiting = queue
        self.params = params
        #: on an instance with colocated models (muxserve): the model this batcher serves,
        #: whose blocks are counted in the instance's unified pool; -1: the resident model
        self.model = model
        self.running: np.ndarray = _EMPTY
        # optional hooks of ordered queues (module docstring)
        self._admitted = getattr(queue, "admitted", None)
        self._job_done = getattr(queue, "job_done", None)
        self._started = 0.0

    @property
    def load(self) -> int:
        """Requests waiting or running here."""
        return len(self.waiting) + int(self.running.shape[0])

    def free_blocks(self) -> int:
        """KV blocks free for this batcher's requests on its instance."""
        inst = self.inst
        return inst.kv_blocks_free if self.model < 0 else inst.blocks_free(self.model)

    def capacity_blocks(self) -> int:
        """KV blocks of this batcher's model in the empty instance."""
        inst = self.inst
        return inst.kv_capacity_blocks if self.model < 0 else inst.blocks_capacity(self.model)

    def _watermark_blocks(self) -> int:
        return int(self.params.watermark * self.capacity_blocks())

    def head_fits(self) -> bool:
        """Would the head of the queue be admitted now? (Used to decide a poke.)"""
        if not len(self.waiting) or self.running.shape[0] >= self.params.max_num_seqs:
            return False
        req = self.world.requests
        rid = self.waiting.peek()
        need = int(self.world.blocks_for(int(req.input_len[rid] + req.generated[rid]) + 1))
        return need <= self.free_blocks() - self._watermark_blocks()

    def notify(self) -> None:
        """A request was queued: wake the instance, or cut its decode if the head fits."""
        inst = self.inst
        if inst.state == "idle":
            inst.wake()
        elif inst.state == "decode" and self.head_fits():
            inst.poke()

    def admit(self, now: float) -> list[int]:
        """Pop the requests to prefill now, in queue order (see module docstring)."""
        queue = self.waiting
        if not len(queue):
            return []
        world = self.world
        req = world.requests
        capacity = self.capacity_blocks()
        free = self.free_blocks() - self._watermark_blocks()
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
            if self._admitted is not None:
                self._admitted(rid, now)
            ids.append(rid)
            tokens += held
            free -= need
            seqs += 1
        return ids

    def next_job(self, now: float) -> Job:
        """Prefill admitted requests, else decode the running batch, else idle."""
        self._started = now
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
        # type() is: the engine only runs these exact job classes; a lone prefilled request
        # (the common case) is checked without array temporaries
        kind = type(job)
        if kind is Prefill:
            ids = job.ids  # type: ignore[union-attr]
            status = self.world.requests.status
            if ids.shape[0] == 1:
                if status[ids[0]] == _RUNNING:
                    self.running = np.concatenate((self.running, ids))
            else:
                ids = ids[status[ids] == _RUNNING]
                if ids.shape[0]:
                    self.running = np.concatenate((self.running, ids))
        elif kind is Decode and self.world.last_finished:
            run = self.running
            if run.shape[0]:
                keep = self.world.requests.status[run] == _RUNNING
                if np.count_nonzero(keep) < keep.shape[0]:
                    self.running = run[keep]
        if self._job_done is not None:
            self._job_done(self.inst, job, self._started, self.world.env.now)
