"""Invariant mode: the laws of the world hold on every bundled scenario, and a broken policy
is caught with the event, instance and request named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.engine.checks import InvariantError
from servesim.policies.fcfs import FCFS

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml") if "golden" not in p.parts)


@pytest.mark.parametrize("path", SCENARIOS, ids=[str(p.relative_to(ROOT)) for p in SCENARIOS])
def test_bundled_scenarios_hold_every_invariant(path: Path) -> None:
    """Every scenario in scenarios/ (cut to 20 s of arrivals) runs clean in invariant mode."""
    scenario = load_scenario(path, overrides={"engine.check": True})
    scenario = scenario.replace({"duration": min(20.0, scenario.duration)})
    result = simulate(scenario)
    assert result.summary["requests_total"] == len(result.requests)


class LeakyFCFS(FCFS):
    """A buggy policy: it 'frees' KV of a running request without telling the engine."""

    name = "test-leaky-fcfs"

    def on_done(self, inst, job, now):  # type: ignore[no-untyped-def]
        super().on_done(inst, job, now)
        running = inst.policy_state.running
        if running.shape[0] >= 2:
            self.world.requests.kv_blocks[running[0]] = 0


def test_broken_policy_is_caught_with_ids(make_scenario) -> None:
    """KV accounting broken by a policy stops the run, naming event, instance and request."""
    scenario = make_scenario(engine__check=True, workload__rate=5.0)
    from servesim.engine.world import World
    from servesim.simulate import prepare

    prep = prepare(scenario)
    world = World(prep.requests, prep.instances, LeakyFCFS(scenario.policy.params),
                  prep.latency, check=True)
    with pytest.raises(InvariantError, match=r"event \d+, t=.*instance \d+.*request"):
        world.run()


def test_check_mode_changes_nothing(make_scenario) -> None:
    """Results with and without invariant mode are identical."""
    plain = simulate(make_scenario()).requests
    checked = simulate(make_scenario(engine__check=True)).requests
    np.testing.assert_array_equal(plain.finish.to_numpy(), checked.finish.to_numpy())


class FailsAtTheEnd(FCFS):
    """A buggy policy that raises right after the last request finishes."""

    name = "test-fails-at-the-end"

    def on_done(self, inst, job, now):  # type: ignore[no-untyped-def]
        super().on_done(inst, job, now)
        if self.world.resolved == self.world.requests.n:
            raise RuntimeError("policy bug at the very end")


def test_failure_in_the_last_instant_is_not_lost(make_scenario) -> None:
    """An exception raised by a policy in the run's last instant reaches the caller."""
    from servesim.engine.world import World
    from servesim.simulate import prepare

    scenario = make_scenario(duration=5.0)
    prep = prepare(scenario)
    world = World(prep.requests, prep.instances, FailsAtTheEnd(scenario.policy.params),
                  prep.latency)
    with pytest.raises(RuntimeError, match="very end"):
        world.run()
