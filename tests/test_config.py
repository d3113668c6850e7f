"""The config loader's conveniences: YAML 1.1 quirks handled, not turned into errors."""

from __future__ import annotations

import yaml

from servesim.scenario import scenario_from_dict


def test_on_off_keys_are_not_booleans() -> None:
    """`on:` / `off:` (read by YAML 1.1 as true/false) still set the on/off fields."""
    doc = yaml.safe_load("workload:\n  models: 1\n  arrival: {kind: onoff, on: 30, off: 10}\n")
    arrival = scenario_from_dict(doc).workload.arrival
    assert (arrival.on, arrival.off) == (30.0, 10.0)


def test_exponent_without_sign_is_a_number() -> None:
    """`8.0e9` (a string to YAML 1.1) is accepted where a number is expected."""
    doc = yaml.safe_load("models:\n  - {name: big, base: llama-2-7b, params: 8.0e9}\n")
    assert scenario_from_dict(doc).models[0].params == 8.0e9


def test_replace_policy_name_drops_the_old_policys_parameters() -> None:
    """Scenario.replace({'policy.name': ...}) on a resolved scenario keeps only the new
    policy's parameters (the old ones would be unknown fields)."""
    from pathlib import Path

    from servesim import load_scenario

    root = Path(__file__).resolve().parents[1]
    s = load_scenario(root / "scenarios" / "quickstart.yaml").replace({"policy.name": "vtc"})
    assert s.policy.name == "vtc"
    assert not hasattr(s.policy.params, "routing")
