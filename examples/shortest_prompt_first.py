"""An example third-party policy in one file: dedicated placement, shortest prompt first.

It reuses the shared continuous-batching engine and changes only the admission order, so it is
a dozen lines of logic. Use it without installing anything, by dotted path:

    servesim run scenarios/quickstart.yaml \
        --set policy.name=examples.shortest_prompt_first:ShortestPromptFirst

(run from the repository root so that ``examples`` is importable), or register it under a name
with an entry point in your package's ``pyproject.toml``::

    [project.entry-points."servesim.policies"]
    shortest-prompt-first = "mypackage.shortest_prompt_first:ShortestPromptFirst"
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from servesim.config import fld
from servesim.engine.instance import Instance
from servesim.policies.base import Policy
from servesim.policies.batching import Batcher, BatchingParams


class ShortestPromptQueue:
    """Admission order: shortest input first (ties: arrival order); preempted go first."""

    def __init__(self, input_len) -> None:  # type: ignore[no-untyped-def]
        self._input_len = input_len
        self._heap: list[tuple[int, int]] = []
        self._front: list[int] = []

    def push(self, rid: int) -> None:
        heapq.heappush(self._heap, (int(self._input_len[rid]), rid))

    def push_front(self, rid: int) -> None:
        self._front.append(rid)

    def peek(self) -> int:
        return self._front[-1] if self._front else self._heap[0][1]

    def pop(self) -> int:
        return self._front.pop() if self._front else heapq.heappop(self._heap)[1]

    def __len__(self) -> int:
        return len(self._front) + len(self._heap)


@dataclass(frozen=True)
class ShortestPromptFirstParams(BatchingParams):
    """Parameters: the continuous-batching settings, plus one of our own."""

    max_waiting: int = fld(100_000, "reject arrivals beyond this many waiting per instance", ge=1)


class ShortestPromptFirst(Policy):
    """Every model on its own instance(s); waiting requests admitted shortest prompt first."""

    name = "shortest-prompt-first"
    Params = ShortestPromptFirstParams

    def attach(self, world) -> None:  # type: ignore[no-untyped-def]
        super().attach(world)
        n_models, n_inst = len(world.latency.models), len(world.instances)
        if n_inst < n_models:
            from servesim.errors import ServesimError

            raise ServesimError(f"cluster: {n_models} models need {n_models} instances")
        self.by_model: list[list[Instance]] = [[] for _ in range(n_models)]
        for inst in world.instances:
            inst.model = inst.index * n_models // n_inst
            self.by_model[inst.model].append(inst)
            queue = ShortestPromptQueue(world.requests.input_len)
            inst.policy_state = Batcher(world, inst, queue, self.params)

    def on_arrival(self, rid: int, now: float) -> None:
        model = int(self.world.requests.model[rid])
        inst = min(self.by_model[model], key=lambda i: (i.policy_state.load, i.index))
        batcher: Batcher = inst.policy_state
        if len(batcher.waiting) >= self.params.max_waiting:
            self.world.reject(rid, now)
            return
        batcher.waiting.push(rid)
        batcher.notify()

    def next_job(self, inst, now):  # type: ignore[no-untyped-def]
        return inst.policy_state.next_job(now)

    def on_done(self, inst, job, now) -> None:  # type: ignore[no-untyped-def]
        inst.policy_state.on_done(job)
