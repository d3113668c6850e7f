"""Production-like multi-model traffic: per-model rates from a long-tail law, and the check
of the expected number of concurrently active models ``E[m] = M (1 - exp(-lambda T))``
against the count on generated arrivals.

Statistical checks use fixed seeds and a stated tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from servesim.errors import ScenarioError
from servesim.scenario import scenario_from_dict
from servesim.simulate import prepare
from servesim.workload.popularity import (
    PopularitySpec,
    expected_active_models,
    lognormal_sigma_for,
    model_rates,
    observed_active_models,
    solve_tail,
    tail_share,
)


def many_models(models: int, rate: float, duration: float, **popularity: object):
    return scenario_from_dict({
        "seed": 11, "duration": duration, "cluster": [{"gpu": "H800"}],
        "workload": {"models": models, "rate": rate, "popularity": popularity,
                     "lengths": {"kind": "fixed", "input": 8, "output": 2}},
    })


def test_equal_rates() -> None:
    """equal gives every model exactly the mean rate."""
    assert model_rates(PopularitySpec(), 5, 0.3).tolist() == [0.3] * 5


def test_power_law_rates() -> None:
    """power_law: rate_i proportional to (i+1)^-exponent, mean = the requested rate."""
    rates = model_rates(PopularitySpec(kind="power_law", exponent=1.5), 10, 2.0)
    assert rates.mean() == pytest.approx(2.0)
    np.testing.assert_allclose(rates / rates[0], np.arange(1, 11) ** -1.5)


def test_long_tail_779_models() -> None:
    """779 lognormal models with tail_fraction 0.94 / tail_share 0.0135 reproduce '94 % of
    models receive 1.35 % of requests' (sigma solved, ~4.29); so does a power law (~1.97)."""
    spec = PopularitySpec(kind="lognormal", tail_fraction=0.94, tail_share=0.0135)
    rates = model_rates(spec, 779, 0.05)
    assert tail_share(rates, 0.94) == pytest.approx(0.0135, rel=1e-6)
    assert rates.mean() == pytest.approx(0.05)
    assert np.all(np.diff(rates) <= 0)
    assert solve_tail("lognormal", 779, 0.94, 0.0135) == pytest.approx(4.29, abs=0.01)
    power = PopularitySpec(kind="power_law", tail_fraction=0.94, tail_share=0.0135)
    assert tail_share(model_rates(power, 779, 0.05), 0.94) == pytest.approx(0.0135, rel=1e-6)
    # With infinitely many models the closed form would say sigma ~3.77.
    assert lognormal_sigma_for(0.94, 0.0135) == pytest.approx(3.766, abs=0.001)


def test_deployment_like_47_models() -> None:
    """47 lognormal models clipped to [0.01, 1.13] req/s keep the mean 0.037 and span the
    range: 0.01 .. 1.13 req/s."""
    spec = PopularitySpec(kind="lognormal", sigma=5.0, min_rate=0.01, max_rate=1.13)
    rates = model_rates(spec, 47, 0.037)
    assert rates.mean() == pytest.approx(0.037, rel=1e-9)
    assert rates.min() == pytest.approx(0.01) and rates.max() == pytest.approx(1.13)


@pytest.mark.parametrize(
    ("popularity", "message"),
    [
        ({"kind": "lognormal", "min_rate": 0.5}, "mean rate 0.1 req/s is outside"),
        ({"kind": "lognormal", "tail_fraction": 0.9}, "tail_share: tail_fraction and"),
        ({"kind": "equal", "tail_fraction": 0.9, "tail_share": 0.1}, "needs kind power_law"),
        ({"kind": "lognormal", "tail_fraction": 0.5, "tail_share": 0.6}, "must be < tail_frac"),
        ({"kind": "lognormal", "min_rate": 2, "max_rate": 1}, "min_rate: must be <= max_rate"),
        ({"kind": "zipf"}, "'zipf' is not allowed"),
        ({"kind": "lognormal", "sigma": -1}, "sigma: must be >= 0"),
    ],
)
def test_popularity_errors(popularity: dict, message: str) -> None:
    """Bad popularity settings are one-line errors naming the field."""
    with pytest.raises(ScenarioError, match=message) as caught:
        prepare(many_models(4, 0.1, 10.0, **popularity))
    assert "workload.popularity" in str(caught.value)


def test_expected_active_models_formula() -> None:
    """E[m] = M (1 - exp(-lambda T)): lambda 0.037 req/s, T 16.79 s gives 46 of 100."""
    assert round(expected_active_models(0.037, 16.79, 100)) == 46
    rates = np.array([0.1, 1.0])
    assert expected_active_models(rates, 2.0) == pytest.approx(
        (1 - math.exp(-0.2)) + (1 - math.exp(-2.0)))


def test_simulated_active_models_match_expectation() -> None:
    """On generated Poisson arrivals (100 models at 0.037 req/s, 20,000 s) the mean count of
    models with an arrival in a 16.79 s window is E[m] = 46.3 within 1 model (the count's
    standard deviation is ~5, averaged over ~1,000 nearly independent windows)."""
    table = prepare(many_models(100, 0.037, 20_000.0)).requests
    observed = observed_active_models(table.arrival, table.model, 100, 16.79, 0.0, 20_000.0)
    assert observed == pytest.approx(expected_active_models(0.037, 16.79, 100), abs=1.0)


def test_long_tail_scenario_counts_follow_the_rates() -> None:
    """With lognormal popularity the generated per-model counts follow the per-model rates
    (each within 5 Poisson sigmas), the active-model count matches sum(1 - exp(-rate_i T)),
    and a source with model '*' is spread the same way."""
    duration = 5_000.0
    spec = {"kind": "lognormal", "sigma": 5.0, "min_rate": 0.01, "max_rate": 1.13}
    sc = many_models(47, 0.037, duration, **spec)
    table = prepare(sc).requests
    rates = model_rates(PopularitySpec(kind="lognormal", sigma=5.0, min_rate=0.01,
                                       max_rate=1.13), 47, 0.037)
    counts = np.bincount(table.model, minlength=47)
    expected = rates * duration
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected))
    observed = observed_active_models(table.arrival, table.model, 47, 16.79, 0.0, duration)
    assert observed == pytest.approx(expected_active_models(rates, 16.79), abs=1.0)
    star = sc.replace({"workload.sources": [{"model": "*", "rate": 0.037, "tenant": "t"}]})
    star_counts = np.bincount(prepare(star).requests.model, minlength=47)
    assert np.all(np.abs(star_counts - expected) <= 5 * np.sqrt(expected))


def test_equal_popularity_keeps_existing_workloads() -> None:
    """The default (equal) popularity generates exactly what a plain per-model rate did."""
    base = prepare(many_models(3, 0.5, 100.0)).requests
    explicit = prepare(many_models(3, 0.5, 100.0, kind="equal")).requests
    np.testing.assert_array_equal(base.arrival, explicit.arrival)
    np.testing.assert_array_equal(base.model, explicit.model)
