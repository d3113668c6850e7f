"""``rpm``: a per-tenant requests-per-minute limit in front of FCFS.

The rate-limit baseline of the VTC paper (§6, "RPM"): a request is rejected at arrival when
its tenant already had ``limit`` accepted requests in the last ``window`` seconds (60); the
accepted ones are served first come first served on the shared engine
(:mod:`servesim.policies.fairness`). Rejected requests are reported (status ``rejected`` in
``requests.parquet``, the ``rejected`` column of ``tenants.parquet``), never silently dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from servesim.config import fld
from servesim.engine.world import World
from servesim.policies.base import register
from servesim.policies.fairness import EngineProfileParams, FairPolicy


@dataclass(frozen=True)
class RPMParams(EngineProfileParams):
    """Parameters of ``rpm``."""

    limit: int = fld(5, "accepted requests per tenant per window (RPM-5: 5)", ge=1)
    window: float = fld(60.0, "seconds of the sliding window", gt=0)


@register
class RPM(FairPolicy):
    """Per-tenant rate limit (reject at arrival over ``limit`` per ``window``), then FCFS."""

    name = "rpm"
    order = "fcfs"
    Params = RPMParams

    def attach(self, world: World) -> None:
        super().attach(world)
        self.accepted: dict[int, deque[float]] = {}

    def accept(self, rid: int, now: float) -> bool:
        tenant = int(self.world.requests.tenant[rid])
        times = self.accepted.setdefault(tenant, deque())
        horizon = now - self.params.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.params.limit:
            return False
        times.append(now)
        return True
