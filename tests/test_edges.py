"""Numerical edges, each with a defined outcome (documented in docs/edge-cases.md)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import ScenarioError, simulate
from servesim.scenario import scenario_from_dict
from servesim.simulate import prepare


def test_zero_length_output_is_refused_at_load(make_scenario) -> None:
    """An output length of 0 is a validation error (every request emits >= 1 token)."""
    with pytest.raises(ScenarioError, match=r"lengths.output: must be >= 1"):
        make_scenario(workload__lengths={"kind": "fixed", "input": 10, "output": 0})


def test_one_token_outputs_finish_at_prefill(make_scenario) -> None:
    """A one-token request finishes when its prefill ends: e2e == TTFT, no inter-token gap,
    attainment 1 when the TTFT is met."""
    res = simulate(make_scenario(workload__lengths={"kind": "fixed", "input": 300,
                                                    "output": 1}))
    req = res.requests
    assert (req.status == "finished").all()
    np.testing.assert_allclose(req.e2e, req.ttft)
    assert req.tbt_mean.isna().all() and (req.late_gaps == 0).all()
    assert (req.slo_attainment == 1.0).all()
    assert res.summary["tbt_p50"] is None


def test_context_at_the_model_limit_runs(make_scenario) -> None:
    """input + output == max_context runs to completion; longer requests are capped."""
    res = simulate(make_scenario(
        models=[{"name": "llama-2-7b"}], cluster=[{"gpu": "H800", "count": 1}], duration=5.0,
        workload={"rate": 1.0, "lengths": {"kind": "fixed", "input": 4000, "output": 500}},
    ))
    req = res.requests
    assert ((req.input_len + req.output_len) == 4096).all()  # llama-2-7b max_context 4096
    assert (req.input_len == 4000).all() and (req.status == "finished").all()


def test_rate_so_low_that_nothing_arrives(make_scenario) -> None:
    """No arrival: an empty run, counts 0, ratios and percentiles null, no error."""
    res = simulate(make_scenario(workload__rate=1e-9, duration=1.0))
    s = res.summary
    assert s["requests_total"] == 0 and len(res.requests) == 0
    assert s["slo_attainment"] is None and s["ttft_p99"] is None
    assert s["throughput_tokens_per_s"] == 0.0 and s["sim_seconds"] == 0.0


def test_burst_of_ten_thousand_at_one_instant(tmp_path) -> None:
    """10,000 requests at t = 0: served in arrival (id) order per instance, the rest fail the
    start timeout at exactly 15 s, every invariant holds."""
    trace = tmp_path / "burst.csv"
    rows = [f"00:00:00.000,synth_model_{i % 2:02d},500,100" for i in range(10_000)]
    trace.write_text("Request Time,Model Name,Input Length,Output Length\n" + "\n".join(rows))
    scenario = scenario_from_dict({
        "duration": 10, "cluster": [{"gpu": "H800", "count": 2}],
        "workload": {"trace": str(trace)}, "engine": {"check": True},
    })
    assert prepare(scenario).requests.n == 10_000
    res = simulate(scenario)
    req = res.requests
    assert len(req) == 10_000 and (req.arrival == 0).all()
    failed = req[req.status == "failed"]
    assert len(failed) > 0 and (failed.finish == 15.0).all()
    started = req[req.first_scheduled.notna()]
    for _, g in started.groupby("instance"):
        assert g.sort_values("id").first_scheduled.is_monotonic_increasing
