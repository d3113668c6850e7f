"""Invariant mode (``engine.check: true`` / ``servesim run --check``): the laws of the world,
asserted after every event.

- simulated time never goes back;
- tokens generated never decrease and never exceed a request's output length;
- the KV blocks an instance says it uses equal the sum over the requests it holds, and never
  exceed its capacity; a request holds KV only while running;
- a switching instance holds no KV (it computes nothing) and has no resident model;
- at the end, every arrived request is in exactly one terminal state, and a request that is
  finished generated exactly its output length.

A violation stops the run with :class:`InvariantError`, naming the event number, the simulated
time, and the instance and request ids involved. Checking costs O(requests) per event: use it
on small and medium scenarios (the test suite runs every scenario of ``scenarios/`` with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from servesim.engine.requests import TERMINAL, Status

if TYPE_CHECKING:
    from servesim.engine.world import World


class InvariantError(RuntimeError):
    """A law of the simulated world was broken (a bug in a policy or the engine)."""


class Checker:
    """Checks a world's invariants; call :meth:`after_event` after each event."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.last_time = 0.0
        self.prev_generated = world.requests.generated.copy()
        self.checks = 0

    def _fail(self, what: str, instance: int | None = None,
              requests: np.ndarray | None = None) -> None:
        env = self.world.env
        where = f"event {env.events}, t={env.now:.9g} s"
        if instance is not None:
            where += f", instance {instance}"
        if requests is not None and requests.size:
            ids = ", ".join(str(int(r)) for r in requests[:5])
            where += f", request{'s' if requests.size > 1 else ''} {ids}"
            if requests.size > 5:
                where += f" (+{requests.size - 5} more)"
        raise InvariantError(f"invariant violated at {where}: {what}")

    def after_event(self) -> None:
        world = self.world
        req = world.requests
        now = world.env.now
        self.checks += 1
        if now < self.last_time:
            self._fail(f"time went back from {self.last_time} to {now}")
        self.last_time = now
        gen = req.generated
        bad = np.flatnonzero(gen < self.prev_generated)
        if bad.size:
            self._fail("tokens generated decreased", requests=bad)
        bad = np.flatnonzero(gen > req.output_len)
        if bad.size:
            self._fail("more tokens generated than the output length", requests=bad)
        np.copyto(self.prev_generated, gen)
        holding = req.kv_blocks > 0
        bad = np.flatnonzero(holding & (req.status != Status.RUNNING))
        if bad.size:
            self._fail("a request that is not running holds KV blocks", requests=bad)
        n_inst = len(world.instances)
        inst_of = np.where(holding, req.instance, n_inst)
        if np.any(inst_of < 0):
            self._fail("a request holds KV on no instance",
                       requests=np.flatnonzero(holding & (req.instance < 0)))
        per_inst = np.bincount(inst_of, weights=req.kv_blocks, minlength=n_inst + 1)
        for inst in world.instances:
            used = inst.kv_blocks_used
            if used != int(per_inst[inst.index]):
                self._fail(f"instance says {used} KV blocks in use, its requests hold "
                           f"{int(per_inst[inst.index])}", instance=inst.index,
                           requests=np.flatnonzero(inst_of == inst.index))
            if used > inst.kv_capacity_blocks:
                self._fail(f"{used} KV blocks in use over capacity {inst.kv_capacity_blocks}",
                           instance=inst.index)
            if inst.state == "switch" and (used or inst.model >= 0):
                self._fail("a switching instance holds KV or a resident model",
                           instance=inst.index)

    def at_end(self) -> None:
        req = self.world.requests
        status = req.status
        arrived = status != Status.PENDING
        terminal = np.isin(status, [int(s) for s in TERMINAL])
        bad = np.flatnonzero(arrived & ~terminal)
        if bad.size:
            self._fail("a request did not end finished, failed, rejected or unfinished",
                       requests=bad)
        fin = status == Status.FINISHED
        bad = np.flatnonzero(fin & (req.generated != req.output_len))
        if bad.size:
            self._fail("a finished request did not generate exactly its output length",
                       requests=bad)
        # unfinished requests (the run stopped at engine.max_time) have no end by definition
        ended = terminal & (status != Status.UNFINISHED)
        bad = np.flatnonzero(ended & np.isnan(req.finish))
        if bad.size:
            self._fail("a request ended without an end time", requests=bad)
