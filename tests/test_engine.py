"""Laws of the simulated world, checked on whole runs of the fcfs policy."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import naive
from servesim import simulate
from servesim.hardware import get_gpu, get_model
from servesim.latency import load_profile


def test_tokens_conserved_and_every_request_resolved(make_scenario) -> None:
    """Every finished request generated exactly its output length; all end in one state."""
    res = simulate(make_scenario(workload__rate=4.0))
    req = res.requests
    assert len(req) == res.summary["requests_total"] > 100
    fin = req[req.status == "finished"]
    assert (fin.generated == fin.output_len).all()
    assert set(req.status) <= {"finished", "failed", "rejected"}
    assert (req.generated <= req.output_len).all()
    assert res.summary["requests_finished"] + res.summary["requests_failed"] == len(req)


def test_kv_never_exceeds_capacity_under_pressure(make_scenario) -> None:
    """With little KV memory the engine preempts by recomputation, never exceeds capacity,
    and still conserves tokens."""
    scenario = make_scenario(
        engine__usable_fraction=0.45,  # llama-2-13b: ~ 10 GiB of KV left -> a few hundred blocks
        workload__rate=6.0,
        workload__lengths={"kind": "uniform", "input_min": 800, "input_max": 2000,
                           "output_min": 200, "output_max": 800},
    )
    res = simulate(scenario)
    inst = res.instances
    assert (inst.kv_blocks_peak <= inst.kv_capacity_blocks).all()
    assert (inst.kv_blocks_peak > 0.9 * inst.kv_capacity_blocks).any()
    assert res.requests.preemptions.sum() > 0
    fin = res.requests[res.requests.status == "finished"]
    assert (fin.generated == fin.output_len).all()


def test_fcfs_admits_in_arrival_order_per_instance(make_scenario) -> None:
    """On each instance, requests start (first prefill) in the order they arrived."""
    res = simulate(make_scenario(workload__rate=8.0))
    req = res.requests
    started = req[req.first_scheduled.notna()]
    for _, group in started.groupby("instance"):
        assert group.sort_values("id").first_scheduled.is_monotonic_increasing


def _parquet_bytes(result, tmp_path, name) -> bytes:
    path = tmp_path / name
    result.save(path)
    return (path / "requests.parquet").read_bytes()


def test_same_seed_gives_identical_requests_table(make_scenario, tmp_path) -> None:
    """Same scenario + seed => byte-identical requests.parquet; another seed differs."""
    a = _parquet_bytes(simulate(make_scenario()), tmp_path, "a")
    b = _parquet_bytes(simulate(make_scenario()), tmp_path, "b")
    c = _parquet_bytes(simulate(make_scenario(seed=8)), tmp_path, "c")
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    assert a != c


def test_lone_request_timing_matches_latency_model(make_scenario) -> None:
    """A request alone on an idle instance: TTFT is its prefill time and every token lands at
    the step-by-step sum of decode step times (no queueing with unlimited capacity)."""
    scenario = make_scenario(
        duration=10.0, cluster=[{"gpu": "H800", "count": 1}], models=[{"name": "qwen2.5-7b"}],
        workload={"rate": 0.1, "arrival": {"kind": "deterministic"},
                  "lengths": {"kind": "fixed", "input": 700, "output": 50}},
        outputs={"token_times": True},
    )
    res = simulate(scenario)
    assert len(res.requests) == 1
    row = res.requests.iloc[0]
    prof = load_profile(get_gpu("H800"), get_model("qwen2.5-7b"))
    p, d = prof.prefill, prof.decode
    prefill = p.a + p.b * 700 + p.c * 700**2
    assert row.ttft == pytest.approx(prefill, rel=1e-12)
    times = res.token_times[0]
    ref = naive.decode_token_times(row.first_token, 49, d.a, d.b, d.c, 701, 1)
    np.testing.assert_allclose(times[1:], ref, rtol=1e-9)
    assert row.slo_attainment == pytest.approx(1.0)
    assert row.queue_delay == 0.0


def test_unlimited_capacity_means_no_queueing(make_scenario) -> None:
    """Arrivals spaced far apart never wait: queueing delay is zero for every request."""
    res = simulate(make_scenario(workload__rate=0.05, workload__arrival={"kind": "deterministic"},
                                 duration=400.0))
    assert (res.requests.queue_delay == 0).all()


def test_overload_fails_requests_not_started_within_timeout(make_scenario) -> None:
    """A hopelessly overloaded instance fails requests that wait past slo.start_timeout; they
    fail at arrival + timeout and count 0 attainment."""
    scenario = make_scenario(
        cluster=[{"gpu": "A10", "count": 1}], models=[{"name": "llama-2-7b"}],
        workload={"rate": 30.0, "lengths": {"kind": "fixed", "input": 1500, "output": 400}},
        duration=40.0, slo={"start_timeout": 5.0},
    )
    res = simulate(scenario)
    failed = res.requests[res.requests.status == "failed"]
    assert len(failed) > 0
    assert (failed.fail_reason == "start_timeout").all()
    np.testing.assert_allclose(failed.finish, failed.arrival + 5.0)
    assert (failed.slo_attainment == 0).all()
    assert res.summary["requests_failed"] == len(failed)


def test_request_too_long_for_memory_fails_instead_of_looping(make_scenario) -> None:
    """A request whose context can never fit the instance's KV fails as too_long."""
    scenario = make_scenario(
        cluster=[{"gpu": "A10", "count": 1}], models=[{"name": "llama-2-7b"}],
        engine={"usable_fraction": 0.58},
        workload={"rate": 0.2, "lengths": {"kind": "fixed", "input": 3000, "output": 1000},
                  "max_context": 4096},
        duration=10.0,
    )
    res = simulate(scenario)
    assert (res.requests.fail_reason == "too_long").all()


def test_summary_has_the_contract_keys(make_scenario) -> None:
    """Summary keys are the documented contract; fairness keys are null for now."""
    from servesim.metrics import SUMMARY_KEYS

    res = simulate(make_scenario())
    assert tuple(res.summary) == SUMMARY_KEYS
    assert 0 < res.summary["slo_attainment"] <= 1
    assert res.summary["events"] > 0
