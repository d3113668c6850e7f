"""Per-tenant counter queues: the machinery under VTC, its variants and Equinox.

A :class:`CounterQueue` keeps one FIFO queue per tenant and admits the head request of the
backlogged tenant (one with waiting requests) whose *score* is smallest (ties: the tenant seen
first). Scores come from per-tenant counters charged with the service a tenant receives
(``specs/fairness.md``).

Charging with prediction and reconciliation (VTC §4.4 "length prediction"; Equinox §4): each
counter charges a request an *estimate* at admission, then, after every job, the part of the
*accrued* amount (what the request has really cost so far) that exceeds what was charged, and
at its finish the difference either way (a refund of an over-prediction). Plain VTC is the case
whose estimate is the input only, so every output token is charged as it is generated.

The *lift* (VTC Algorithm 2): a tenant that becomes backlogged gets
``c = max(c, min(counters of the other backlogged tenants))`` (``waiting-min``, the reference
implementation), or, when nobody else waits, the counter of the last tenant that left the queue
(``paper``); ``none`` is LCF.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from servesim.engine.jobs import Decode, Job, Prefill
from servesim.engine.requests import Status

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.world import World


#: Status codes as plain ints: comparing NumPy values with an IntEnum member costs
#: microseconds (NumPy probes the member's attributes); the outcome is the same.
_FINISHED = int(Status.FINISHED)


class Counter:
    """One per-tenant counter with per-request charged and accrued amounts (unweighted)."""

    def __init__(self, n_tenants: int, n_requests: int, weights: np.ndarray) -> None:
        self.value = np.zeros(n_tenants)
        self.weights = weights
        self.charged = np.zeros(n_requests)
        self.accrued = np.zeros(n_requests)

    def charge_estimate(self, rid: int, tenant: int, estimate: float, accrued: float) -> None:
        """At admission: charge ``estimate``; ``accrued`` is what the request cost so far."""
        self.charged[rid] = estimate
        self.accrued[rid] = accrued
        self.value[tenant] += estimate / self.weights[tenant]

    def settle(self, ids: np.ndarray, tenants: np.ndarray, accrued: np.ndarray,
               finished: np.ndarray, progressive: bool = True) -> None:
        """After a job: charge what ``accrued`` exceeds of the charge (``progressive``), and
        settle finished requests exactly (refunds included)."""
        delta = accrued - self.charged[ids]
        if progressive:
            delta = np.where(finished, delta, np.maximum(delta, 0.0))
        else:
            delta = np.where(finished, delta, 0.0)
        self.accrued[ids] = accrued
        if not delta.any():
            return
        self.charged[ids] += delta
        self.value += np.bincount(tenants, weights=delta / self.weights[tenants],
                                  minlength=self.value.shape[0])


class CounterQueue:
    """Per-tenant FIFO queues, served lowest score first (module docstring).

    Subclasses define :meth:`score` (the counter value by default), :meth:`on_admitted`
    (charges at admission) and :meth:`on_job` (charges after a job).

    Attributes:
        counter: the main per-tenant counter (VTC's ``c_u``).
        served: actual service received per tenant (unweighted cost, never lifted): the ``W``
            of VTC's Theorem 4.4.
    """

    def __init__(self, world: World, lift: str, weights: np.ndarray | None = None) -> None:
        self.world = world
        req = world.requests
        self.n_tenants = max(int(world.tenant_weights.shape[0]),
                             int(req.tenant.max()) + 1 if req.n else 1)
        w = np.ones(self.n_tenants)
        if weights is not None:
            w[: weights.shape[0]] = weights
        self.weights = w
        self.lift = lift
        self.queues: list[deque[int]] = [deque() for _ in range(self.n_tenants)]
        self.counters: list[Counter] = []
        self.counter = self.new_counter()
        self.served = np.zeros(self.n_tenants)
        self._served_req = np.zeros(req.n)
        self._admitted_once = np.zeros(req.n, dtype=bool)
        self.rank = np.full(self.n_tenants, np.iinfo(np.int64).max, dtype=np.int64)
        self._seen = 0
        self.backlog: list[int] = []
        self._last_left = -1
        self._len = 0

    def new_counter(self) -> Counter:
        """A counter lifted and ordered with the others."""
        counter = Counter(self.n_tenants, self.world.requests.n, self.weights)
        self.counters.append(counter)
        return counter

    # -- ordering -----------------------------------------------------------------------------

    def score(self, tenant: int) -> float:
        """Lower is served first (VTC: the counter)."""
        return float(self.counter.value[tenant])

    def prepare_scores(self) -> None:
        """Called before the scores of the backlogged tenants are compared."""

    def _pick(self) -> int:
        backlog = self.backlog
        if len(backlog) == 1:
            return backlog[0]
        self.prepare_scores()
        rank = self.rank
        return min(backlog, key=lambda u: (self.score(u), rank[u]))

    # -- AdmissionQueue -----------------------------------------------------------------------

    def push(self, rid: int) -> None:
        tenant = int(self.world.requests.tenant[rid])
        queue = self.queues[tenant]
        if self.rank[tenant] == np.iinfo(np.int64).max:
            self.rank[tenant] = self._seen
            self._seen += 1
        if not queue:
            self._lift(tenant)
            self.backlog.append(tenant)
        queue.append(rid)
        self._len += 1

    def _lift(self, tenant: int) -> None:
        if self.lift == "none":
            return
        others = [u for u in self.backlog if u != tenant]
        for counter in self.counters:
            values = counter.value
            if others:
                floor = min(values[u] for u in others)
            elif self.lift == "paper" and self._last_left >= 0:
                floor = values[self._last_left]
            else:
                continue
            if floor > values[tenant]:
                values[tenant] = floor

    def push_front(self, rid: int) -> None:
        tenant = int(self.world.requests.tenant[rid])
        queue = self.queues[tenant]
        if not queue:
            self.backlog.append(tenant)
        queue.appendleft(rid)
        self._len += 1

    def peek(self) -> int:
        return self.queues[self._pick()][0]

    def pop(self) -> int:
        tenant = self._pick()
        queue = self.queues[tenant]
        rid = queue.popleft()
        self._len -= 1
        if not queue:
            self.backlog.remove(tenant)
            self._last_left = tenant
        return rid

    def __len__(self) -> int:
        return self._len

    def backlogged(self) -> list[int]:
        """Tenants with waiting requests."""
        return list(self.backlog)

    # -- hooks called by the batchers ---------------------------------------------------------

    def admitted(self, rid: int, now: float) -> None:
        """``rid`` is prefilled now: charge its admission estimate (once per request)."""
        if self._admitted_once[rid]:
            return  # a preempted request coming back was charged already
        self._admitted_once[rid] = True
        tenant = int(self.world.requests.tenant[rid])
        base = self.actual_cost(rid)
        self._served_req[rid] = base
        self.served[tenant] += base
        self.on_admitted(rid, tenant, now)

    def job_done(self, inst: Instance, job: Job, started: float, now: float) -> None:
        """Charge the tokens the job generated; settle the requests it finished."""
        if not isinstance(job, Prefill | Decode):
            return
        ids = job.ids
        req = self.world.requests
        tenants = req.tenant[ids]
        cost = self.actual_cost_of(ids)
        self.served += np.bincount(tenants, weights=cost - self._served_req[ids],
                                   minlength=self.n_tenants)
        self._served_req[ids] = cost
        finished = req.status[ids] == _FINISHED
        self.on_job(inst, job, ids, tenants, finished, cost, started, now)

    # -- costs --------------------------------------------------------------------------------

    def actual_cost(self, rid: int) -> float:
        """Service cost of ``rid`` so far (the unit the counters compare)."""
        return float(self.actual_cost_of(np.array([rid]))[0])

    def actual_cost_of(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def on_admitted(self, rid: int, tenant: int, now: float) -> None:
        raise NotImplementedError

    def on_job(self, inst: Instance, job: Job, ids: np.ndarray, tenants: np.ndarray,
               finished: np.ndarray, cost: np.ndarray, started: float, now: float) -> None:
        """Charges after a job on ``ids``; ``cost`` is their :meth:`actual_cost_of`."""
        raise NotImplementedError
