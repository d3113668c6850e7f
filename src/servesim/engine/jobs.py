"""Jobs: the only thing a policy hands the engine. The engine prices and executes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, eq=False)
class Prefill:
    """Prefill ``ids`` as one batch (their whole context: input plus tokens generated before a
    preemption). Each request emits one token when the batch ends."""

    ids: np.ndarray


@dataclass(frozen=True, eq=False)
class Decode:
    """Decode the fixed batch ``ids`` for at most ``max_steps`` steps.

    The engine stops earlier at the first step where a request of the batch finishes, or at the
    next step boundary after the policy pokes the instance. ``max_steps`` must respect the
    instance's KV capacity (see ``World.kv_max_steps``).
    """

    ids: np.ndarray
    max_steps: int


@dataclass(frozen=True)
class Switch:
    """Make ``model`` (a deployed model index) the resident model of the instance."""

    model: int


@dataclass(frozen=True, eq=False)
class MoveKV:
    """Move the KV cache of ``ids`` to host memory (``out``) or back to the GPU (``in``)."""

    ids: np.ndarray
    direction: Literal["in", "out"]


@dataclass(frozen=True)
class Prefetch:
    """Start loading ``model`` in the background; takes no simulated time.

    The instance keeps computing; a later ``Switch(model)`` then costs
    ``max(floor, full switch time - compute seconds since this job)`` where compute seconds
    are the prefill and decode time the instance spent after it (KV transfers and idle time
    earn no credit: they use the same host link or do not hide a load). A ``Switch`` to another
    model, or another ``Prefetch``, drops the prefetched copy. Policies only prefetch when
    :meth:`ClusterLatency.enable_prefetch` granted the memory for a second model.
    """

    model: int


@dataclass(frozen=True)
class Idle:
    """Nothing to do: the instance sleeps until the policy wakes it."""


IDLE = Idle()
Job = Prefill | Decode | Switch | MoveKV | Prefetch | Idle
