"""Fairness metrics, the new arrival kinds, tenant weights and the VTC scenario suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim import load_scenario, simulate
from servesim.errors import ScenarioError
from servesim.fairness import (
    accumulated_service,
    backlogged,
    fairness_summary,
    jain_index,
    service_difference,
    vtc_table_metric,
)
from servesim.workload.arrivals import generate_arrivals
from servesim.workload.spec import ArrivalSpec

ROOT = Path(__file__).resolve().parents[1]


def naive_accumulated(first, last, service, t):
    """Reference: the sum of every request's uniformly spread service up to t."""
    total = 0.0
    for f, lt, s in zip(first, last, service, strict=True):
        if lt <= f:
            total += s if t >= lt else 0.0
        else:
            total += s * min(1.0, max(0.0, (t - f) / (lt - f)))
    return total


def test_accumulated_service_matches_the_naive_sum() -> None:
    """The O(n log n) service curve equals the per-request sum, one-token requests included."""
    rng = np.random.default_rng(0)
    first = rng.uniform(0, 100, 200)
    last = first + rng.uniform(0, 20, 200)
    last[:15] = first[:15]
    service = rng.uniform(1, 100, 200)
    times = np.linspace(-10, 130, 301)
    got = accumulated_service(first, last, service, times)
    want = [naive_accumulated(first, last, service, t) for t in times]
    assert np.allclose(got, want)


def frame_of(rows: list[tuple[str, float, float, float, int, int]]) -> pd.DataFrame:
    """A request frame from (tenant, arrival, first_token, last_token, input, output)."""
    tenant, arrival, first, last, inp, out = zip(*rows, strict=True)
    return pd.DataFrame({
        "tenant": pd.Categorical(tenant),
        "arrival": arrival,
        "first_scheduled": first,
        "first_token": first,
        "last_token": last,
        "finish": last,
        "input_len": inp,
        "output_len": out,
        "generated": out,
    })


def test_jain_index_and_single_tenant_definitions() -> None:
    """Jain's index is 1 for equal shares and 1/n for one tenant taking everything; a
    single-tenant run has Jain 1 and service differences 0."""
    assert jain_index(np.array([3.0, 3.0, 3.0])) == pytest.approx(1.0)
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert jain_index(np.array([])) is None
    frame = frame_of([("a", t, t + 1, t + 5, 10, 20) for t in range(0, 100, 2)])
    out = fairness_summary(frame, None, 100.0)
    assert out == {"jain_index": 1.0, "service_diff_max": 0.0, "service_diff_avg": 0.0}


def test_vtc_table_metric_and_weights() -> None:
    """Two equal tenants have no service difference; when one gets twice the other while
    both ask for more, the metric is the gap in service rate; weights divide Jain's input."""
    even = frame_of([(u, t, t + 0.5, t + 1.5, 50, 50) for t in range(0, 200) for u in "ab"])
    table = vtc_table_metric(even, 200.0, window=20, warmup=20)
    assert table["max"] == pytest.approx(0.0, abs=1e-6)
    rows = [("a", 0.0, t, t + 1.0, 50, 50) for t in range(0, 200)]
    rows += [("b", 0.0, t, t + 1.0, 50, 50) for t in np.arange(0, 200, 0.5)]
    skew = frame_of(rows)  # both backlogged from 0; b served at twice a's rate (150/s, 300/s)
    table = vtc_table_metric(skew, 200.0, window=20, warmup=20)
    assert table["avg"] == pytest.approx(150.0, rel=0.02)
    assert fairness_summary(skew, None, 200.0)["jain_index"] == pytest.approx(0.9, rel=1e-3)
    weighted = fairness_summary(skew, np.array([1.0, 2.0]), 200.0)
    assert weighted["jain_index"] == pytest.approx(1.0, rel=1e-3)


def test_backlog_and_service_difference() -> None:
    """A tenant is backlogged between arrival and first scheduling; the difference is taken
    over backlogged tenants only."""
    frame = frame_of([("a", 0.0, 10.0, 20.0, 100, 0), ("b", 0.0, 0.0, 10.0, 100, 0),
                      ("b", 5.0, 30.0, 40.0, 100, 0)])
    back = backlogged(frame, np.array([1.0, 7.0, 15.0, 35.0]))
    assert back.tolist() == [[True, True, False, False], [False, True, True, False]]
    diff = service_difference(frame, np.array([1.0, 7.0, 15.0]))
    # t=7: a has 0, b has 70 of its first request -> 70; elsewhere < 2 backlogged
    assert diff.tolist() == pytest.approx([0.0, 70.0, 0.0])


def test_run_outputs_have_fairness_columns(make_scenario) -> None:
    """Every run fills the fairness summary keys; tenants.parquet has weights and weighted
    service; timeline.parquet has windowed rates, backlog and the service difference."""
    result = simulate(make_scenario(duration=20.0))
    summary = result.summary
    assert summary["jain_index"] == 1.0 and summary["service_diff_max"] == 0.0
    assert {"weight", "weighted_service", "rejected"} <= set(result.tenants.columns)
    assert {"time", "tenant", "service_rate", "windowed_service_rate", "accumulated_service",
            "queue_length", "backlogged", "service_diff"} <= set(result.timeline.columns)


@pytest.mark.parametrize("process", ["poisson", "deterministic"])
def test_ramp_and_piecewise_arrivals(process: str) -> None:
    """ramp: the count per window follows the linear rate; piecewise: each piece its rate
    (deterministic exactly up to one arrival, Poisson within 4 standard deviations)."""
    rng = np.random.default_rng(11)
    ramp = ArrivalSpec(kind="ramp", rate_end=4.0, process=process)
    times = generate_arrivals(ramp, 1.0, 100.0, 700.0, rng)
    counts = np.histogram(times, bins=6, range=(100, 700))[0]
    expected = np.array([1.25, 1.75, 2.25, 2.75, 3.25, 3.75]) * 100
    tol = 1.5 if process == "deterministic" else 4 * np.sqrt(expected)
    assert np.all(np.abs(counts - expected) <= tol)
    assert times.min() >= 100 and times.max() < 700 and np.all(np.diff(times) >= 0)
    piece = ArrivalSpec(kind="piecewise", times=(0.0, 200.0, 500.0), rates=(2.0, 0.5, 3.0),
                        process=process)
    times = generate_arrivals(piece, 1.0, 0.0, 800.0, rng)
    counts = np.histogram(times, bins=[0, 200, 500, 800])[0]
    expected = np.array([400, 150, 900])
    tol = 1.5 if process == "deterministic" else 4 * np.sqrt(expected)
    assert np.all(np.abs(counts - expected) <= tol)


@pytest.mark.parametrize("change,message", [
    ({"kind": "ramp"}, "rate_end: required when kind is 'ramp'"),
    ({"kind": "piecewise", "rates": [1.0, 2.0]}, "rates: piecewise needs one rate per entry"),
    ({"kind": "piecewise", "times": [5.0], "rates": [1.0]}, "times: must start at 0"),
    ({"kind": "piecewise", "times": [0.0, 1.0], "rates": [1.0, 0.0]}, "every rate must be > 0"),
])
def test_arrival_validation(change: dict, message: str) -> None:
    """The new arrival kinds validate their fields with one-line errors."""
    from servesim.config import build

    with pytest.raises(ScenarioError, match=message):
        build(ArrivalSpec, change, "workload.arrival")


def test_vtc_scenarios_load_and_the_suite_is_complete() -> None:
    """Every suite of the spec table has its scenario; overload runs short with every
    fairness policy via --set policy.name."""
    names = {p.stem for p in (ROOT / "scenarios" / "vtc").glob("*.yaml")}
    assert {"overload", "overload-multi", "overload-weighted", "proportional", "on_off_less",
            "on_off_overload", "poisson_short_long", "poisson_short_long_2", "increase",
            "dist_shift", "real"} <= names
    for name in ("fcfs", "rpm", "vtc", "lcf", "vtc-oracle", "vtc-predict", "equinox"):
        scenario = load_scenario(ROOT / "scenarios" / "vtc" / "overload.yaml",
                                 overrides={"policy.name": name, "duration": 20})
        assert simulate(scenario).summary["requests_total"] == 90


def test_real_trace_reproduces_the_vtc_ordering(shared_data: Path) -> None:
    """On the 27-tenant arena trace, VTC's max and average service difference are well below
    FCFS's and LCF's at the same throughput (published: 368/252 vs 760/434 and 750/324)."""
    trace = shared_data / "vtc" / "real_trace.csv"
    results = {}
    for name in ("fcfs", "lcf", "vtc"):
        scenario = load_scenario(ROOT / "scenarios" / "vtc" / "real.yaml",
                                 overrides={"policy.name": name, "workload.trace": str(trace)})
        result = simulate(scenario)
        assert result.summary["requests_total"] == 1499  # the last arrival is at 600.0 s
        results[name] = result.summary
    vtc, fcfs, lcf = results["vtc"], results["fcfs"], results["lcf"]
    assert vtc["service_diff_max"] < 0.6 * fcfs["service_diff_max"]
    assert vtc["service_diff_avg"] < 0.7 * fcfs["service_diff_avg"]
    assert vtc["service_diff_max"] < 0.6 * lcf["service_diff_max"]
    assert vtc["throughput_tokens_per_s"] == pytest.approx(fcfs["throughput_tokens_per_s"],
                                                           rel=0.03)
