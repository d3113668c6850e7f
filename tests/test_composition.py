"""Composition: fairness orderings inside auto-scaling policies (policy.order)."""

from __future__ import annotations

from pathlib import Path

from servesim import load_scenario, simulate
from servesim.policies import counters

ROOT = Path(__file__).resolve().parents[1]


def test_vtc_order_inside_aegaeon_charges_counters(monkeypatch) -> None:
    """With policy.order=vtc, aegaeon's queues are VTC queues: admissions and finished jobs
    reach the counters (input at admission, output tokens when jobs end), invariants hold."""
    calls = {"admitted": 0, "job_done": 0}
    real_admitted, real_done = counters.CounterQueue.admitted, counters.CounterQueue.job_done

    def admitted(self, rid, now):  # type: ignore[no-untyped-def]
        calls["admitted"] += 1
        return real_admitted(self, rid, now)

    def job_done(self, inst, job, started, now):  # type: ignore[no-untyped-def]
        calls["job_done"] += 1
        return real_done(self, inst, job, started, now)

    monkeypatch.setattr(counters.CounterQueue, "admitted", admitted)
    monkeypatch.setattr(counters.CounterQueue, "job_done", job_done)
    scenario = load_scenario(ROOT / "scenarios" / "composed" / "aegaeon-vtc.yaml",
                             overrides={"duration": 10, "engine.check": True})
    assert scenario.policy.name == "aegaeon" and scenario.policy.params.order == "vtc"
    res = simulate(scenario)
    assert calls["admitted"] == res.summary["requests_total"] > 0
    assert calls["job_done"] > 0
    fin = res.requests[res.requests.status == "finished"]
    assert (fin.generated == fin.output_len).all()
