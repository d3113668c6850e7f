"""The fast engine against the stepwise reference: identical request tables and summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml") if "golden" not in p.parts)
TIME_COLUMNS = ("first_scheduled", "first_token", "last_token", "finish", "ttft", "e2e",
                "queue_delay", "tbt_mean", "tbt_max", "switch_wait", "slo_attainment")


def _both(scenario):  # type: ignore[no-untyped-def]
    fast = simulate(scenario.replace({"engine.mode": "fast", "outputs.token_times": True}))
    step = simulate(scenario.replace({"engine.mode": "stepwise", "outputs.token_times": True}))
    return fast, step


def assert_same_world(fast, step) -> None:  # type: ignore[no-untyped-def]
    """Equal request tables (times within 1e-9 relative), token times and summaries."""
    a, b = fast.requests, step.requests
    for col in a.columns:
        if col in TIME_COLUMNS or col == "tbt_p99":
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float),
                                       rtol=1e-9, atol=1e-12, err_msg=col)
        else:
            pd.testing.assert_series_equal(a[col], b[col], check_names=False, obj=col)
    for ta, tb in zip(fast.token_times, step.token_times, strict=True):
        np.testing.assert_allclose(ta, tb, rtol=1e-9, atol=1e-12)
    for key, value in fast.summary.items():
        if key in ("events", "wall_seconds"):
            continue
        other = step.summary[key]
        if isinstance(value, float) and other is not None:
            assert value == pytest.approx(other, rel=1e-9, abs=1e-12), key
        else:
            assert value == other, key


@pytest.mark.parametrize("path", SCENARIOS, ids=[str(p.relative_to(ROOT)) for p in SCENARIOS])
def test_fast_equals_stepwise_on_bundled_scenarios(path: Path) -> None:
    """Every bundled scenario (cut to 15 s of arrivals): fast == stepwise, fewer events."""
    scenario = load_scenario(path)
    scenario = scenario.replace({"duration": min(15.0, scenario.duration)})
    fast, step = _both(scenario)
    assert_same_world(fast, step)
    if fast.requests.generated.sum() > 10 * len(fast.requests):
        assert fast.summary["events"] < step.summary["events"]


def test_fast_equals_stepwise_under_kv_pressure(make_scenario) -> None:
    """With preemption by recomputation and arrivals cutting decode segments, still equal."""
    scenario = make_scenario(
        engine__usable_fraction=0.45, workload__rate=6.0, duration=30.0,
        workload__lengths={"kind": "uniform", "input_min": 800, "input_max": 2000,
                           "output_min": 200, "output_max": 800},
    )
    fast, step = _both(scenario)
    assert fast.requests.preemptions.sum() > 0
    assert_same_world(fast, step)
