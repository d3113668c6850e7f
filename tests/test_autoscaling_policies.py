"""Laws of the multi-model policies (aegaeon, serverlessllm, serverlessllm+, muxserve) on
whole runs, and the behaviours that distinguish them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_scenario_dict

from servesim import load_scenario, simulate
from servesim.engine.jobs import MoveKV, Prefill
from servesim.errors import ServesimError
from servesim.policies import get_policy
from servesim.policies.aegaeon import Aegaeon
from servesim.policies.muxserve import placement
from servesim.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("aegaeon", "serverlessllm", "serverlessllm+", "muxserve", "fcfs")


def _many_models(policy: str, **changes):
    """6 models (60/20/20 mix) on 4 H800 (aegaeon: 1 prefill + 3 decode), 40 s, invariant
    checks after every event."""
    doc = tiny_scenario_dict(
        duration=40.0,
        cluster=[{"gpu": "H800", "count": 1, "role": "prefill"},
                 {"gpu": "H800", "count": 3, "role": "decode"}],
        workload={"models": 6, "rate": 0.6,
                  "mix": {"qwen2.5-7b": 6, "yi-1.5-9b": 2, "llama-2-13b": 2},
                  "lengths": {"kind": "sharegpt", "preset": "aegaeon"}},
        policy={"name": policy}, engine={"check": True})
    doc.update(changes)
    return scenario_from_dict(doc)


@pytest.mark.parametrize("policy", ["aegaeon", "serverlessllm", "serverlessllm+", "muxserve"])
def test_tokens_conserved_and_kv_within_capacity(policy: str) -> None:
    """Every request ends in one state; a finished request generated exactly its output; no
    instance ever held more KV than its capacity (the invariant checker runs after every
    event; on colocated muxserve instances the engine also refuses to exceed the unified
    pool, counted in its units)."""
    res = simulate(_many_models(policy))
    req = res.requests
    assert len(req) > 100
    assert set(req.status) <= {"finished", "failed"}
    fin = req[req.status == "finished"]
    assert (fin.generated == fin.output_len).all()
    assert res.summary["requests_finished"] > 0.5 * len(req)
    inst = res.instances
    assert (inst.kv_blocks_peak <= inst.kv_capacity_blocks).all()


def test_multi_model_policies_switch_and_report_it_per_instance() -> None:
    """Switch counts and seconds appear per instance and add up to the summary; muxserve and
    fcfs never switch."""
    for policy in ("aegaeon", "serverlessllm", "serverlessllm+"):
        res = simulate(_many_models(policy))
        inst = res.instances
        assert inst.switches.sum() == res.summary["switches"] > 0
        assert inst.switch_seconds.sum() == pytest.approx(res.summary["switch_seconds"])
        assert (inst.switch_seconds > 0).sum() >= 2
    for policy in ("muxserve",):
        assert simulate(_many_models(policy)).summary["switches"] == 0


class _Recorder:
    """Wraps a policy's next_job to record the jobs it hands out."""

    def __init__(self, policy_cls):
        self.jobs: list = []
        original = policy_cls.next_job

        def next_job(policy, inst, now):
            job = original(policy, inst, now)
            self.jobs.append(job)
            return job

        self.cls, self.original = policy_cls, original
        policy_cls.next_job = next_job

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cls.next_job = self.original


def test_aegaeon_preempts_only_by_moving_kv_never_recomputes() -> None:
    """Under aegaeon a request is prefilled exactly once; between decode turns its KV moves to
    host memory and back with its tokens intact (no preemption by recomputation)."""
    with _Recorder(Aegaeon) as rec:
        res = simulate(_many_models("aegaeon", workload={
            "models": 12, "rate": 0.5, "mix": {"qwen2.5-7b": 6, "yi-1.5-9b": 2,
                                               "llama-2-13b": 2},
            "lengths": {"kind": "sharegpt", "preset": "aegaeon"}}))
    req = res.requests
    assert (req.preemptions == 0).all()
    prefilled = np.concatenate([j.ids for j in rec.jobs if isinstance(j, Prefill)])
    assert np.unique(prefilled).size == prefilled.size  # nobody prefilled twice
    moved_in = np.concatenate([j.ids for j in rec.jobs
                               if isinstance(j, MoveKV) and j.direction == "in"])
    ids, turns = np.unique(moved_in, return_counts=True)
    assert (turns > 1).sum() > 10  # many requests decoded over several turns
    fin = req[req.status == "finished"]
    assert (fin.generated == fin.output_len).all()
    assert set(fin.id) >= set(ids[turns > 1]) - set(req[req.status != "finished"].id)


def test_serverlessllm_recomputes_preempted_requests() -> None:
    """Under memory pressure serverlessllm preempts by recomputation: the request is prefilled
    again over its prompt and the tokens it had generated, and still finishes exactly."""
    scenario = _many_models(
        "serverlessllm", engine={"check": True, "usable_fraction": 0.42},
        cluster=[{"gpu": "H800", "count": 1}],
        workload={"models": 1, "rate": 2.0, "mix": {"llama-2-13b": 1},
                  "lengths": {"kind": "uniform", "input_min": 800, "input_max": 2000,
                              "output_min": 200, "output_max": 800}})
    res = simulate(scenario)
    req = res.requests
    assert req.preemptions.sum() > 0
    fin = req[req.status == "finished"]
    assert (fin.generated == fin.output_len).all()
    assert (fin.preemptions > 0).any()


def _trace(tmp_path: Path, rows: list[tuple[float, int, int, int]]) -> Path:
    path = tmp_path / "trace.csv"
    lines = ["Request Time,Model Name,Input Length,Output Length"]
    for t, model, inp, out in rows:
        m, s = divmod(t, 60)
        lines.append(f"00:{int(m):02d}:{s:06.3f},synth_model_{model:02d},{inp},{out}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _two_gpu(policy: str, trace: Path, **changes):
    doc = tiny_scenario_dict(
        duration=1e6, cluster=[{"gpu": "H800", "count": 2}],
        workload={"trace": str(trace), "mix": {"qwen2.5-7b": 1}},
        policy={"name": policy}, engine={"check": True})
    doc.update(changes)
    return scenario_from_dict(doc)


def test_serverlessllm_head_of_line_blocking(tmp_path: Path) -> None:
    """With no free slot (4 requests of model A already trail on GPU 0) a new A request goes
    behind everything on the least-recently-used GPU: it waits for B's long request there and
    a switch, and fails if that is longer than the 15 s start timeout."""
    rows = [(0.0, 0, 200, 50), (0.1, 1, 200, 4000)]  # A on GPU 0, long B on GPU 1
    rows += [(0.2 + 0.01 * k, 0, 200, 2000) for k in range(3)]  # A fills GPU 0's 4 slots
    rows += [(0.3, 0, 200, 50)]  # 5th A: no free slot -> behind B on GPU 1
    res = simulate(_two_gpu("serverlessllm", _trace(tmp_path, rows)))
    req = res.requests.sort_values("arrival").reset_index(drop=True)
    assert list(req.instance[:5]) == [0, 1, 0, 0, 0]
    blocked = req.iloc[5]
    assert blocked.status == "failed" and blocked.fail_reason == "start_timeout"
    assert blocked.finish == pytest.approx(0.3 + 15.0)
    # with a short B the 5th request runs on GPU 1 after B and a switch back to A
    rows[1] = (0.1, 1, 200, 100)
    res = simulate(_two_gpu("serverlessllm", _trace(tmp_path, rows)))
    req = res.requests.sort_values("arrival").reset_index(drop=True)
    b, blocked = req.iloc[1], req.iloc[5]
    assert blocked.instance == 1 and blocked.status == "finished"
    assert blocked.first_scheduled >= b.finish + 0.4  # B ran first, then a load of A
    assert blocked.switch_wait > 0.4


def test_serverlessllm_plus_runs_the_shortest_batch_first(tmp_path: Path) -> None:
    """serverlessllm+ puts a new batch on the GPU with the fewest batches and orders a GPU's
    waiting batches by remaining time from the true output lengths: later, shorter batches
    overtake longer ones (FIFO would run them in arrival order)."""
    rows = [(0.0, 0, 200, 3000),  # A runs on GPU 0
            (0.1, 1, 200, 3000),  # B runs on GPU 1
            (0.2, 2, 200, 2000),  # C waits on GPU 0 (tie on batches: lower index)
            (0.3, 3, 200, 50),  # D waits on GPU 1
            (0.4, 4, 200, 1500),  # E waits on GPU 0
            (0.5, 5, 200, 20)]  # F waits on GPU 1
    res = simulate(_two_gpu("serverlessllm+", _trace(tmp_path, rows),
                            slo={"start_timeout": 100.0}))
    req = res.requests.set_index("model")
    for gpu, expected in ((0, ["synth_model_04", "synth_model_02"]),
                          (1, ["synth_model_05", "synth_model_03"])):
        runs = req[req.instance == gpu].sort_values("first_scheduled")
        assert list(runs.index[1:]) == expected


def test_muxserve_refuses_more_than_two_models_per_gpu() -> None:
    """muxserve places at most 2 models per GPU: 5 models on 2 GPUs is an error before the run;
    4 models on 2 GPUs are paired (heaviest with lightest) and share each GPU."""
    doc = tiny_scenario_dict(policy={"name": "muxserve"},
                             workload={"models": 5, "mix": {"qwen2.5-7b": 1}})
    with pytest.raises(ServesimError, match="at most 2 models per GPU"):
        simulate(scenario_from_dict(doc))
    assert placement(4, 2, np.array([4.0, 3.0, 2.0, 1.0])) == [(0, 3), (1, 2)]
    assert placement(3, 2, np.array([1.0, 3.0, 2.0])) == [(1,), (2, 0)]
    assert placement(2, 4, np.ones(2)) == [(0,), (0,), (1,), (1,)]
    res = simulate(_many_models("muxserve", cluster=[{"gpu": "H800", "count": 3}]))
    assert res.summary["requests_finished"] == len(res.requests)


def test_a_request_not_started_within_the_timeout_fails() -> None:
    """Overloaded auto-scaling policies fail requests that did not start within
    slo.start_timeout, at arrival + timeout, with attainment 0."""
    for policy in ("serverlessllm", "aegaeon"):
        res = simulate(_many_models(policy, slo={"start_timeout": 2.0}, workload={
            "models": 24, "rate": 1.0, "mix": {"llama-2-13b": 1},
            "lengths": {"kind": "sharegpt", "preset": "aegaeon"}}))
        failed = res.requests[res.requests.status == "failed"]
        assert len(failed) > 0
        assert (failed.fail_reason == "start_timeout").all()
        np.testing.assert_allclose(failed.finish, failed.arrival + 2.0)
        assert (failed.slo_attainment == 0).all()


def test_same_seed_same_result(tmp_path: Path) -> None:
    """Same scenario and seed give byte-identical request tables for every policy."""
    for policy in POLICIES:
        digests = []
        for k in range(2):
            res = simulate(_many_models(policy, engine={}, cluster=[
                {"gpu": "H800", "count": 2, "role": "prefill"},
                {"gpu": "H800", "count": 4, "role": "decode"}]))
            out = res.save(tmp_path / f"{policy}-{k}")
            digests.append(hashlib.sha256((out / "requests.parquet").read_bytes()).digest())
        assert digests[0] == digests[1], policy


def test_paper_scenarios_run_with_their_overrides() -> None:
    """The three Aegaeon scenarios load and run (short) for every policy they support, with
    the override keys of the issue."""
    fig11 = ROOT / "scenarios" / "aegaeon" / "fig11.yaml"
    for policy in POLICIES:
        res = simulate(load_scenario(fig11, overrides={
            "policy.name": policy, "workload.models": 16, "duration": 15,
            "workload.rate": 0.5, "workload.output_scale": 0.5, "workload.input_scale": 2,
            "slo.scale": 0.5, "engine.check": True}))
        assert res.summary["requests_total"] > 50
        assert res.scenario.tbt == pytest.approx(0.05)
    for name, policies in (("a10", ("aegaeon", "serverlessllm")),
                           ("tp4", ("aegaeon", "serverlessllm+", "muxserve"))):
        for policy in policies:
            res = simulate(load_scenario(ROOT / "scenarios" / "aegaeon" / f"{name}.yaml",
                                         overrides={"policy.name": policy, "duration": 30,
                                                    "engine.check": True}))
            assert res.summary["requests_finished"] > 0


def test_prefetch_hides_switches_on_h800_not_on_a10() -> None:
    """aegaeon prefetches the next model where two fit (H800: most switches cost less than the
    full load) and never on the A10 (every switch pays the full load)."""
    res = simulate(_many_models("aegaeon"))
    full = min(0.15 + w / (64 * 2**30 * 0.625) for w in (15.24e9, 17.66e9, 26.04e9))
    assert (res.instances.switch_seconds < res.instances.switches * full).any()
    a10 = simulate(load_scenario(ROOT / "scenarios" / "aegaeon" / "a10.yaml",
                                 overrides={"duration": 30, "switching.prefetch": None}))
    inst = a10.instances
    a10_full = 0.15 + 12.1e9 / (32 * 2**30 * 0.625)  # the smallest model (yi-1.5-6b)
    assert (inst.switch_seconds >= inst.switches * a10_full * 0.999).all()


def test_registered_names() -> None:
    """The four policies are registered by their YAML names."""
    for name in ("aegaeon", "serverlessllm", "serverlessllm+", "muxserve"):
        assert get_policy(name).name == name
