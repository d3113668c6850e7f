"""Multi-model auto-scaling: the switching cost model, the engine's prefetch and colocation,
and Aegaeon's quota equations, checked against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_scenario_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.jobs import IDLE, Decode, MoveKV, Prefetch, Prefill, Switch
from servesim.engine.world import World
from servesim.errors import ServesimError
from servesim.hardware import GB, GiB, get_gpu, get_model
from servesim.latency import switch_model_for
from servesim.policies.aegaeon import quotas, steps_past
from servesim.policies.base import Policy
from servesim.scenario import scenario_from_dict
from servesim.simulate import prepare

# -- the switch cost formula ------------------------------------------------------------------


def test_switch_cost_formula_by_stage_tier_and_tp() -> None:
    """T_switch = fixed(stage) + weights / (tier bandwidth * efficiency): T3 from host DRAM
    on an H800 (64 GiB/s x 0.625) loads Llama-2-13B in ~0.76 s; the unoptimised T0 restart
    over PCIe 4.0 takes the 26.9 s Aegaeon measured; a TP group loads its shards in parallel;
    SSD and overrides use their own bandwidth."""
    llama13 = get_model("llama-2-13b")
    t3 = switch_model_for(get_gpu("H800"), "T3", "dram")
    expected = 0.15 + llama13.weight_bytes / (64 * GiB * 0.625)
    assert t3.switch_time(llama13) == pytest.approx(expected, rel=1e-12)
    assert 0.7 < expected < 0.8
    t0 = switch_model_for(get_gpu("H100"), "T0", "dram")
    assert t0.switch_time(llama13) == pytest.approx(26.9, abs=0.05)
    assert t3.switch_time(llama13, tp=4) == pytest.approx(
        0.15 + llama13.weight_bytes / 4 / (64 * GiB * 0.625), rel=1e-12)
    ssd = switch_model_for(get_gpu("H800"), "T3", "ssd", efficiency=1.0)
    assert ssd.switch_time(llama13) == pytest.approx(0.15 + llama13.weight_bytes / (4 * GB))
    loader = switch_model_for(get_gpu("H800"), "T3", fixed_seconds=0.0, bandwidth=16e9,
                              efficiency=1.0)
    assert loader.switch_time(llama13) == pytest.approx(llama13.weight_bytes / 16e9)


def test_prefetch_credit_and_its_floor() -> None:
    """After a prefetch, a switch costs max(10 ms, full - overlapped compute seconds)."""
    sw = switch_model_for(get_gpu("H800"))
    full = sw.switch_time(get_model("qwen2.5-7b"))
    assert sw.with_prefetch(full, 0.2) == pytest.approx(full - 0.2)
    assert sw.with_prefetch(full, 10.0) == 0.010
    assert switch_model_for(get_gpu("H800"), floor_seconds=0.05).with_prefetch(full, 9) == 0.05


class _Script(Policy):
    """Runs a fixed list of jobs on instance 0 once the first request has arrived."""

    name = "script"

    def __init__(self, jobs) -> None:
        super().__init__()
        self.jobs = list(jobs)
        self.rid: int | None = None
        self.done: list[tuple[object, float]] = []

    def on_arrival(self, rid: int, now: float) -> None:
        if self.rid is None:
            self.rid = rid
            self.world.instances[0].wake()

    def next_job(self, inst, now: float):
        if inst.index != 0 or self.rid is None or not self.jobs:
            return IDLE
        job = self.jobs.pop(0)
        return job(self.rid) if callable(job) else job

    def on_done(self, inst, job, now: float) -> None:
        self.done.append((job, now))


def _world(policy: Policy, **changes) -> World:
    doc = tiny_scenario_dict(
        duration=5.0, cluster=[{"gpu": "H800", "count": 1}],
        workload={"models": 2, "rate": 0.5, "mix": {"qwen2.5-7b": 1, "llama-2-13b": 1},
                  "arrival": {"kind": "deterministic"},
                  "lengths": {"kind": "fixed", "input": 600, "output": 400}},
        **changes)
    prep = prepare(scenario_from_dict(doc))
    return World(prep.requests, prep.instances, policy, prep.latency, max_time=60.0)


def test_engine_credits_prefetch_with_compute_only() -> None:
    """Prefill and decode time after a Prefetch is credited; KV transfers are not; the next
    Switch to the prefetched model costs max(floor, full - credit) and is counted."""
    policy = _Script([])
    model = lambda r: int(policy.world.requests.model[r])  # noqa: E731
    policy.jobs = [lambda r: Switch(model(r)), lambda r: Prefetch(1 - model(r)),
                   lambda r: Prefill(np.array([r])), lambda r: Decode(np.array([r]), 30),
                   lambda r: MoveKV(np.array([r]), "out"), lambda r: Switch(1 - model(r))]
    world = _world(policy)
    world.run()
    inst = world.instances[0]
    first = model(policy.rid)
    times = [t for _, t in policy.done]
    compute = times[3] - times[1]  # prefill + decode, after the prefetch (zero time)
    assert times[1] == times[0]  # Prefetch takes no time
    full = world.latency.switch_time(inst, first, 1 - first)
    assert times[5] - times[4] == pytest.approx(max(0.010, full - compute), rel=1e-9)
    assert inst.prefetched_switches == 1 and inst.switches == 2
    assert inst.switch_seconds == pytest.approx(world.latency.switch_time(inst, -1, first)
                                                + max(0.010, full - compute))


@pytest.mark.parametrize("per_token", [None, 3.125e-5])
def test_kv_move_costs_bytes_over_the_host_link_or_the_per_token_figure(
        per_token: float | None) -> None:
    """MoveKV of a request costs context * kv_bytes / host link (each way), or
    context * switching.kv_seconds_per_token when set (Aegaeon's 0.03125 ms/token)."""
    policy = _Script([])
    model = lambda r: int(policy.world.requests.model[r])  # noqa: E731
    policy.jobs = [lambda r: Switch(model(r)), lambda r: Prefill(np.array([r])),
                   lambda r: MoveKV(np.array([r]), "out"),
                   lambda r: MoveKV(np.array([r]), "in")]
    world = _world(policy, switching={"kv_seconds_per_token": per_token})
    world.run()
    times = [t for _, t in policy.done]
    tokens = 601  # 600 prompt tokens + the first output token
    shape = world.latency.models[model(policy.rid)]
    expected = (tokens * per_token if per_token is not None
                else tokens * shape.kv_bytes_per_token / (64 * GiB))
    assert times[2] - times[1] == pytest.approx(expected, rel=1e-9)
    assert times[3] - times[2] == pytest.approx(expected, rel=1e-9)


def test_prefetch_needs_memory_for_two_models() -> None:
    """enable_prefetch reserves the largest model's weights (KV capacity shrinks by it) where
    two models fit; on a 24 GB A10 it is refused (auto) or an error (forced on)."""
    h800 = prepare(scenario_from_dict(tiny_scenario_dict())).latency
    before = h800.capacity_of(get_gpu("H800"), 1, 0)
    assert h800.enable_prefetch([(get_gpu("H800"), 1)])
    after = h800.capacity_of(get_gpu("H800"), 1, 0)
    kv_block = get_model("qwen2.5-7b").kv_bytes_per_token * 16
    assert (before - after) * kv_block == pytest.approx(get_model("llama-2-13b").weight_bytes,
                                                        rel=1e-3)
    a10 = dict(cluster=[{"gpu": "A10", "count": 2}],
               workload={"models": 2, "mix": {"llama-2-7b": 1}})
    lat = prepare(scenario_from_dict(tiny_scenario_dict(**a10))).latency
    assert not lat.enable_prefetch([(get_gpu("A10"), 1)])
    assert lat.reserved_bytes == 0
    forced = prepare(scenario_from_dict(tiny_scenario_dict(
        **a10, switching={"prefetch": True}))).latency
    with pytest.raises(ServesimError, match="two models do not fit"):
        forced.enable_prefetch([(get_gpu("A10"), 1)])


def test_colocated_pool_counts_blocks_of_both_models_in_bytes() -> None:
    """Two models on one instance share one KV pool: units per block are proportional to the
    models' KV bytes per token and the pool holds the memory left after both weights."""
    lat = prepare(scenario_from_dict(tiny_scenario_dict())).latency
    gpu = get_gpu("H800")
    cap, units = lat.colocated_pool(gpu, 1, [0, 1])
    qwen, llama = get_model("qwen2.5-7b"), get_model("llama-2-13b")
    assert units[1] / units[0] == pytest.approx(llama.kv_bytes_per_token
                                                / qwen.kv_bytes_per_token)
    unit_bytes = qwen.kv_bytes_per_token * 16 / units[0]
    free = 80 * GiB * 0.9 - qwen.weight_bytes - llama.weight_bytes
    assert free - unit_bytes < cap * unit_bytes <= free
    big = prepare(scenario_from_dict(tiny_scenario_dict(
        workload={"models": 2, "mix": {"qwen2.5-72b": 1}},
        cluster=[{"gpu": "H800", "count": 2, "tp": 4}]))).latency
    with pytest.raises(ServesimError, match="do not fit together"):
        big.colocated_pool(gpu, 1, [0, 1])


# -- Aegaeon's quota equations ------------------------------------------------------------------


def test_quota_equations_hand_computed() -> None:
    """Two cases worked by hand (d = 100 ms, Q_MAX = 4 s).

    Floor active: t = (10, 20) ms, c = 1 s -> n = (10, 5), sum 1/n = 0.3,
    c/(min n * Q) = 0.05, alpha = max(0.35, 0.5) = 0.5, q = 1/(10*0.2), 1/(5*0.2) = 0.5, 1 s.
    Above the floor: t = (20, 25, 50) ms, c = 2 s -> n = (5, 4, 2), sum 1/n = 0.95,
    c/(2*4) = 0.25, alpha = 1.2, q = 2/(5*0.25), 2/(4*0.25), 2/(2*0.25) = 1.6, 2, 4 s."""
    alpha, q = quotas([0.010, 0.020], 0.1, 1.0, 4.0)
    assert alpha == pytest.approx(0.5)
    assert q == pytest.approx([0.5, 1.0])
    alpha, q = quotas([0.020, 0.025, 0.050], 0.1, 2.0, 4.0)
    assert alpha == pytest.approx(1.2)
    assert q == pytest.approx([1.6, 2.0, 4.0])
    # every batch emits q_i / t_i = 80 tokens per round; average TBT alpha * d = 120 ms
    tokens = [qi / t for qi, t in zip(q, [0.020, 0.025, 0.050], strict=True)]
    assert tokens == pytest.approx([80.0] * 3)
    round_seconds = 2.0 + sum(q)
    assert round_seconds / tokens[0] == pytest.approx(1.2 * 0.1)


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.floats(0.003, 0.2), min_size=1, max_size=12),
    switch=st.floats(0.0, 20.0),
    tbt=st.floats(0.02, 0.5),
)
def test_quota_laws(times: list[float], switch: float, tbt: float) -> None:
    """alpha >= 0.5; no quota exceeds Q_MAX; every batch gets the same tokens per round."""
    alpha, q = quotas(times, tbt, switch, 4.0)
    assert alpha >= 0.5
    assert max(q) <= 4.0 * (1 + 1e-9)
    tokens = [qi / t for qi, t in zip(q, times, strict=True)]
    assert max(tokens) == pytest.approx(min(tokens), rel=1e-9)


def test_turn_ends_at_first_step_boundary_past_the_quota() -> None:
    """steps_past gives the fewest whole steps whose time reaches the quota."""
    from servesim.latency import StepModel

    sm = StepModel(0, 0, 0, 0.010, 1e-6, 0.0)
    k = steps_past(sm, 0.1, context=1000.0, batch=2)
    assert sm.decode_time(k, 1000.0, 2) >= 0.1 > sm.decode_time(k - 1, 1000.0, 2)
    assert steps_past(sm, 1e-9, 1000.0, 2) == 1
