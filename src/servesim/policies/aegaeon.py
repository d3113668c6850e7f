"""``aegaeon``: token-level auto-scaling with prefill/decode pools (Aegaeon, SOSP '25, §4).

Models are switched on an instance at token granularity: a decode instance rotates through
*batches* of different models, each for a time *quota*, moving a batch's KV cache to host
memory between its turns (never recomputing it) and switching the resident model between turns
of different models (``specs/autoscaling.md``).

**Pools.** Instances with role ``prefill`` form the prefill pool, ``decode`` (and ``both``,
when roles are given) the decode pool. A cluster without roles is split: the first
``round(prefill_fraction * N)`` instances prefill (the paper's 6 of 16).

**Prefill (Algorithm 1, grouped FCFS, batch size 1).** Each prefill instance keeps a queue of
*groups* of at most ``max_gpsize`` requests of one model (cumulative: a group never takes more
than ``max_gpsize`` requests in its life). A new request joins a queued group of its model with
room, else starts a group at the tail of the least-loaded instance. ``dispatch: paper`` joins the
group on the least-loaded instance and measures load as the estimated time to run every queued
group including the switches between them; ``dispatch: artifact`` (the published artifact)
joins the first group found (first-fit) and measures load in queued requests. An instance
prefills one request at a time from its front group, switching model when needed, then moves
the request's KV to host memory and hands it to the decode pool.

**Decode (Algorithm 2, weighted round-robin with quotas).** A new request joins a same-model
batch with room on any decode instance (first-fit), else forms a batch on the instance with
the fewest batches. At the start of each round an instance re-forms its batches first-come
first-served under its KV capacity, puts batches of one model next to each other (the resident
model first) and gives batch ``i`` the quota of :func:`quotas`. A turn switches model if
needed, moves the batch's KV in (the KV of any other batch out), prefetches the next different
model of the round, and decodes until the first step boundary past the quota (the quota clock
starts after the first step) or until the batch empties. A request that joins the batch
whose turn is running is moved in at the next step boundary. If the batch outgrows the KV
capacity within a turn, its newest request is moved to host memory and re-batched next round.

Admission order: each prefill group's requests wait in an admission queue built by
:func:`~servesim.policies.batching.make_queue` (``policy.order``, FCFS by default).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from servesim.config import fld
from servesim.engine.instance import as_ids
from servesim.engine.jobs import IDLE, Decode, Job, MoveKV, Prefetch, Prefill, Switch
from servesim.engine.requests import Status
from servesim.errors import ServesimError
from servesim.policies.base import Policy, register
from servesim.policies.batching import AdmissionQueue, BatchingParams, OrderParams, make_queue

#: Status codes as plain ints for element-wise tests: comparing a NumPy scalar with an
#: IntEnum member costs microseconds (NumPy probes the member's attributes), with an int
#: a tenth of one; the outcome is the same.
_RUNNING, _FINISHED = int(Status.RUNNING), int(Status.FINISHED)

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World
    from servesim.latency import StepModel


@dataclass(frozen=True)
class AegaeonParams(BatchingParams, OrderParams):
    """Parameters of ``aegaeon`` (``max_num_seqs`` bounds a decode batch; ``watermark`` is the
    share of KV kept free when batches are formed; ``max_batched_tokens`` is unused: prefill
    batches hold one request)."""

    max_gpsize: int = fld(8, "MAX_GPSIZE: most requests a prefill group ever takes", ge=1)
    dispatch: Literal["paper", "artifact"] = fld(
        "paper",
        "prefill dispatch: paper (join the group on the least-loaded instance; load = estimated "
        "seconds of queued prefills and switches) or artifact (first-fit join; load = queued "
        "requests)",
    )
    q_max: float = fld(4.0, "Q_MAX: longest decode turn the quota equations give, seconds", gt=0)
    alpha_floor: float = fld(
        0.5, "floor of alpha (1/alpha = the round's expected SLO attainment)", gt=0, le=1
    )
    prefill_fraction: float = fld(
        0.375,
        "share of instances in the prefill pool when the cluster gives no roles (6 of 16)",
        gt=0, lt=1,
    )


def quotas(step_times: list[float], tbt: float, switch_cost: float, q_max: float,
           alpha_floor: float = 0.5) -> tuple[float, list[float]]:
    """Aegaeon's decode quotas (§4.3): ``(alpha, [q_i])`` in seconds.

    ``n_i = d / t_i``; ``alpha = max(c / (min n * Q_MAX) + sum 1/n, floor)``;
    ``q_i = c / (n_i * (alpha - sum 1/n))``. Every batch then emits the same number of tokens
    per round, ``c / (d * (alpha - sum 1/n))``, at an average TBT of ``alpha * d``, and no quota
    exceeds ``Q_MAX``. With no switch cost (``c = 0``) the quotas split ``Q_MAX`` in the same
    proportions (``q_i = Q_MAX * (1/n_i) / sum 1/n``).
    """
    n = [tbt / t for t in step_times]
    inv = sum(1.0 / x for x in n)
    min_n = min(n)
    alpha = switch_cost / (min_n * q_max) + inv
    if switch_cost <= 0:
        return max(alpha, alpha_floor), [q_max * (1.0 / x) / inv for x in n]
    if alpha >= alpha_floor:
        # alpha - sum 1/n = c / (min n * Q_MAX): q_i = Q_MAX * min n / n_i, exactly
        return alpha, [q_max * min_n / x for x in n]
    return alpha_floor, [switch_cost / (x * (alpha_floor - inv)) for x in n]


def steps_past(sm: StepModel, seconds: float, context: float, batch: int) -> int:
    """Fewest decode steps (>= 1) of a fixed batch that take at least ``seconds``."""
    k = sm.decode_steps_within(seconds, context, batch)
    if k >= 1 and sm.decode_time(k, context, batch) >= seconds:
        return k
    return k + 1


class _Group:
    """A prefill group: requests of one model, at most ``max_gpsize`` ever."""

    __slots__ = ("model", "queue", "added", "work")

    def __init__(self, model: int, queue: AdmissionQueue) -> None:
        self.model = model
        self.queue = queue
        self.added = 0
        self.work = 0.0  # estimated prefill seconds of the queued requests


class _Prefill:
    """Per prefill instance: queued groups and prefilled requests waiting to move out."""

    __slots__ = ("inst", "groups", "handoff", "queued", "busy_until", "started", "last_queue")

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        self.groups: deque[_Group] = deque()
        self.handoff: list[int] = []
        self.queued = 0
        self.busy_until = 0.0  # estimated end of the running prefill or switch
        self.started = 0.0  # start of the running prefill
        self.last_queue: AdmissionQueue | None = None  # the queue it came from


class _Batch:
    """A decode batch: requests of one model and the quota of its turn (seconds)."""

    __slots__ = ("model", "ids", "quota")

    def __init__(self, model: int, ids: list[int]) -> None:
        self.model = model
        self.ids = ids
        self.quota = 0.0


class _Decode:
    """Per decode instance: the round's work list and the state of the running turn."""

    __slots__ = ("inst", "work", "pos", "in_turn", "deadline", "overflow", "alpha", "rounds",
                 "prefetched")

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        self.work: list[_Batch] = []
        self.pos = 0
        self.in_turn = False
        self.deadline = math.inf
        self.overflow: list[int] = []  # moved out for lack of KV within a turn; next round
        self.alpha = 0.0
        self.rounds = 0
        self.prefetched = False

    def batches(self) -> int:
        return sum(1 for b in self.work if b.ids)


@register
class Aegaeon(Policy):
    """Token-level auto-scaling: grouped prefill, weighted round-robin decode with quotas."""

    name = "aegaeon"
    Params = AegaeonParams

    def attach(self, world: World) -> None:
        super().attach(world)
        p: AegaeonParams = self.params
        insts = world.instances
        prefill = [i for i in insts if i.role == "prefill"]
        decode = [i for i in insts if i.role != "prefill"]
        if not any(i.role != "both" for i in insts):
            if len(insts) < 2:
                raise ServesimError(
                    "policy aegaeon needs at least 2 instances (a prefill and a decode pool)")
            n_pre = min(len(insts) - 1, max(1, round(p.prefill_fraction * len(insts))))
            prefill, decode = list(insts[:n_pre]), list(insts[n_pre:])
        if not prefill or not decode:
            raise ServesimError(
                "policy aegaeon needs prefill and decode instances: give cluster groups the "
                "roles prefill and decode (or none, to split by policy.prefill_fraction)")
        lat = world.latency
        self.prefetch = lat.enable_prefetch([(i.gpu, i.tp) for i in insts])
        n_models = len(lat.models)
        # every model must run on every instance; KV bound of a decode batch per model
        self.bound: dict[tuple[int, int], int] = {}
        decode_fit = np.zeros(n_models, dtype=np.int64)
        prefill_fit = np.full(n_models, np.iinfo(np.int64).max, dtype=np.int64)
        for inst in insts:
            for m in range(n_models):
                cap = lat.kv_capacity(inst, m)
                if inst in prefill:
                    prefill_fit[m] = min(prefill_fit[m], cap)
                else:
                    bound = int(cap * (1.0 - p.watermark))
                    self.bound[(inst.index, m)] = bound
                    decode_fit[m] = max(decode_fit[m], bound)
        #: KV blocks of the longest request a model can serve (larger ones fail as too_long)
        self.fits = np.minimum(decode_fit, prefill_fit)
        self.prefill = [_Prefill(i) for i in prefill]
        self.decode = [_Decode(i) for i in decode]
        for st_p in self.prefill:
            st_p.inst.policy_state = st_p
        for st_d in self.decode:
            st_d.inst.policy_state = st_d
        self._steps = {(i.index, m): lat.step_model(i, m) for i in insts for m in range(n_models)}
        self._switch = {(i.index, m): lat.switch_time(i, -1, m)
                        for i in insts for m in range(n_models)}

    # -- arrivals and prefill -------------------------------------------------------------------

    def _prefill_load(self, st: _Prefill, now: float) -> float:
        if self.params.dispatch == "artifact":
            return float(st.queued)
        t = max(0.0, st.busy_until - now)
        prev = st.inst.model
        idx = st.inst.index
        for g in st.groups:
            if not len(g.queue):
                continue
            if g.model != prev:
                t += self._switch[(idx, g.model)]
                prev = g.model
            t += g.work
        return t

    def on_arrival(self, rid: int, now: float) -> None:
        world = self.world
        req = world.requests
        m = int(req.model[rid])
        if world.blocks_for(int(req.input_len[rid] + req.output_len[rid]) - 1) > self.fits[m]:
            world.fail(rid, now, reason=2)
            return
        p: AegaeonParams = self.params
        target: tuple[_Prefill, _Group] | None = None
        best = math.inf
        for st in self.prefill:
            for g in st.groups:
                if g.model == m and g.added < p.max_gpsize:
                    if p.dispatch == "artifact":
                        target = (st, g)
                        break
                    load = self._prefill_load(st, now)
                    if load < best:
                        best, target = load, (st, g)
                    break
            if target is not None and p.dispatch == "artifact":
                break
        if target is None:
            st = min(self.prefill, key=lambda s: (self._prefill_load(s, now), s.inst.index))
            g = _Group(m, make_queue(p.order, p.order_params, world))
            st.groups.append(g)
            target = (st, g)
        st, g = target
        g.queue.push(rid)
        g.added += 1
        g.work += self._steps[(st.inst.index, m)].prefill_time(
            float(req.input_len[rid]), float(req.input_len[rid]) ** 2)
        st.queued += 1
        st.inst.wake()

    def _next_prefill(self, st: _Prefill, now: float) -> Job:
        inst = st.inst
        if st.handoff:
            ids = as_ids(st.handoff)
            st.handoff = []
            return MoveKV(ids, "out")
        world = self.world
        while st.groups:
            g = st.groups[0]
            if not len(g.queue):
                st.groups.popleft()
                continue
            rid = g.queue.peek()
            if world.expired(rid, now):
                self._pop(st, g)
                continue
            if inst.model != g.model:
                overlapped = inst.prefetch_overlap if inst.prefetch_model == g.model else None
                st.busy_until = now + self.world.latency.switch_time(inst, inst.model, g.model,
                                                                     overlapped)
                return Switch(g.model)
            if self.prefetch:
                nxt = next((h.model for h in st.groups if h.model != g.model and len(h.queue)),
                           -1)
                if nxt >= 0 and inst.prefetch_model != nxt:
                    return Prefetch(nxt)
            self._pop(st, g)
            held = float(self.world.requests.input_len[rid])
            st.busy_until = now + self._steps[(inst.index, g.model)].prefill_time(held, held**2)
            admitted = getattr(g.queue, "admitted", None)
            if admitted is not None:
                admitted(rid, now)
            st.started = now
            st.last_queue = g.queue
            return Prefill(as_ids([rid]))
        return IDLE

    def _pop(self, st: _Prefill, g: _Group) -> None:
        rid = g.queue.pop()
        st.queued -= 1
        req = self.world.requests
        g.work = max(0.0, g.work - self._steps[(st.inst.index, g.model)].prefill_time(
            float(req.input_len[rid]), float(req.input_len[rid]) ** 2))

    # -- decode ---------------------------------------------------------------------------------

    def _room(self, st: _Decode, b: _Batch, need: int) -> bool:
        if len(b.ids) >= self.params.max_num_seqs:
            return False
        req = self.world.requests
        ids = np.asarray(b.ids, dtype=np.int64)
        held = int(self.world.blocks_for(req.input_len[ids] + req.generated[ids] + 1).sum())
        return held + need <= self.bound[(st.inst.index, b.model)]

    def _to_decode(self, rid: int) -> None:
        """Hand a prefilled request (KV in host memory) to the decode pool."""
        world = self.world
        req = world.requests
        m = int(req.model[rid])
        need = int(world.blocks_for(int(req.input_len[rid] + req.generated[rid]) + 1))
        for st in self.decode:
            for b in st.work:
                if b.model == m and b.ids and self._room(st, b, need):
                    b.ids.append(rid)
                    if st.in_turn and st.work[st.pos] is b:
                        st.inst.poke()  # move it in at the next step boundary
                    else:
                        st.inst.wake()
                    return
        st = min(self.decode, key=lambda s: (s.batches(), s.inst.index))
        st.work.append(_Batch(m, [rid]))
        self._set_quotas(st)
        st.inst.wake()

    def _set_quotas(self, st: _Decode) -> None:
        live = [b for b in st.work if b.ids]
        if not live:
            return
        req = self.world.requests
        idx = st.inst.index
        times = []
        for b in live:
            ids = np.asarray(b.ids, dtype=np.int64)
            context = float((req.input_len[ids] + req.generated[ids]).sum())
            times.append(self._steps[(idx, b.model)].decode_step_time(context, len(b.ids)))
        tbt = float(min(req.tbt_slo[b.ids[0]] for b in live))
        switch = sum(self._switch[(idx, m)] for m in dict.fromkeys(b.model for b in live))
        p: AegaeonParams = self.params
        st.alpha, q = quotas(times, tbt, switch, p.q_max, p.alpha_floor)
        for b, qi in zip(live, q, strict=True):
            b.quota = qi

    def _start_round(self, st: _Decode) -> None:
        """Re-form batches FCFS under the KV bound, one model's batches adjacent."""
        ids = sorted(r for b in st.work for r in b.ids)
        ids += st.overflow
        ids.sort()
        st.overflow = []
        st.work = []
        st.pos = 0
        st.in_turn = False
        if not ids:
            return
        st.rounds += 1
        world = self.world
        req = world.requests
        arr = np.asarray(ids, dtype=np.int64)
        need = world.blocks_for(req.input_len[arr] + req.generated[arr] + 1)
        by_model: dict[int, list[_Batch]] = {}
        order: list[int] = []
        max_seqs = self.params.max_num_seqs
        fill: dict[int, int] = {}
        idx = st.inst.index
        for rid, blocks in zip(ids, need.tolist(), strict=True):
            m = int(req.model[rid])
            batches = by_model.get(m)
            if batches is None:
                batches = by_model[m] = []
                order.append(m)
            cur = batches[-1] if batches else None
            if (cur is None or len(cur.ids) >= max_seqs
                    or fill[m] + blocks > self.bound[(idx, m)]):
                cur = _Batch(m, [])
                batches.append(cur)
                fill[m] = 0
            cur.ids.append(rid)
            fill[m] += blocks
        resident = st.inst.model
        if resident in by_model:
            order.remove(resident)
            order.insert(0, resident)
        st.work = [b for m in order for b in by_model[m]]
        self._set_quotas(st)

    def _next_decode(self, st: _Decode, now: float) -> Job:
        inst = st.inst
        world = self.world
        req = world.requests
        status = req.status
        while True:
            if st.pos >= len(st.work):
                self._start_round(st)
                if not st.work:
                    return IDLE
            b = st.work[st.pos]
            if not b.ids:
                st.pos += 1
                st.in_turn = False
                continue
            if not st.in_turn:
                # KV of any other batch goes to host memory before this turn
                stray = [r for o in st.work if o is not b for r in o.ids
                         if status[r] == _RUNNING]
                if stray:
                    return MoveKV(as_ids(sorted(stray)), "out")
                if inst.model != b.model:
                    return Switch(b.model)
                st.in_turn = True
                st.deadline = math.inf
                st.prefetched = False
            out = [r for r in b.ids if status[r] != _RUNNING]
            if out:
                fit = self._fitting(st, out)
                if fit:
                    return MoveKV(as_ids(fit), "in")
                # no room left this turn: the rest waits for the next round
                st.overflow += out
                b.ids = [r for r in b.ids if status[r] == _RUNNING]
                if not b.ids:
                    continue
            if self.prefetch and not st.prefetched:
                st.prefetched = True
                nxt = next((o.model for o in st.work[st.pos + 1:]
                            if o.ids and o.model != b.model), -1)
                if nxt >= 0 and inst.prefetch_model != nxt:
                    return Prefetch(nxt)
            ids = as_ids(b.ids)
            sm = self._steps[(inst.index, b.model)]
            context = float((req.input_len[ids] + req.generated[ids]).sum())
            batch = int(ids.shape[0])
            if st.deadline == math.inf:
                first = sm.decode_step_time(context, batch)
                st.deadline = now + first + b.quota
                steps = steps_past(sm, first + b.quota, context, batch)
            elif now < st.deadline:
                steps = steps_past(sm, st.deadline - now, context, batch)
            else:
                st.in_turn = False
                st.pos += 1
                continue
            fit_steps = world.kv_max_steps(inst, ids, steps)
            if fit_steps > 0:
                return Decode(ids, fit_steps)
            victim = b.ids.pop()  # the newest request goes to host memory, next round
            st.overflow.append(victim)
            return MoveKV(as_ids([victim]), "out")

    def _fitting(self, st: _Decode, out: list[int]) -> list[int]:
        """The longest prefix of ``out`` whose KV fits the instance now (with watermark)."""
        world = self.world
        req = world.requests
        inst = st.inst
        free = inst.kv_blocks_free - int(self.params.watermark * inst.kv_capacity_blocks)
        fit: list[int] = []
        for r in out:
            need = int(world.blocks_for(int(req.input_len[r] + req.generated[r]) + 1))
            if need > free:
                break
            free -= need
            fit.append(r)
        return fit

    # -- protocol -------------------------------------------------------------------------------

    def next_job(self, inst: Instance, now: float) -> Job:
        st = inst.policy_state
        if isinstance(st, _Prefill):
            return self._next_prefill(st, now)
        return self._next_decode(st, now)

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        st = inst.policy_state
        req = self.world.requests
        kind = type(job)
        if isinstance(st, _Prefill):
            if kind is Prefill:
                rid = int(job.ids[0])  # type: ignore[union-attr]
                if req.status[rid] == _RUNNING:
                    st.handoff.append(rid)
                job_done = getattr(st.last_queue, "job_done", None)
                if job_done is not None:  # ordered queues charge their counters here
                    job_done(inst, job, st.started, now)
            elif kind is MoveKV:
                for rid in job.ids.tolist():  # type: ignore[union-attr]
                    self._to_decode(rid)
            return
        if kind is Decode and self.world.last_finished:
            b = st.work[st.pos]
            b.ids = [r for r in b.ids if req.status[r] != _FINISHED]
        elif kind is Switch:
            b = st.work[st.pos] if st.pos < len(st.work) else None
            if b is not None and b.ids:
                req.switch_wait[as_ids(b.ids)] += inst.last_switch_seconds


__all__ = ["Aegaeon", "AegaeonParams", "quotas", "steps_past"]
