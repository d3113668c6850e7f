"""Docs stay true: the scenario reference is current and documented scenarios load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from servesim.reference import reference_markdown
from servesim.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]


def test_scenario_reference_is_current() -> None:
    """docs/scenario-reference.md equals what `python -m servesim.reference` generates."""
    assert (ROOT / "docs" / "scenario-reference.md").read_text() == reference_markdown(), (
        "regenerate with: python -m servesim.reference > docs/scenario-reference.md"
    )


def _yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for md in sorted((ROOT / "docs").rglob("*.md")):
        for m in re.finditer(r"```yaml\n(# scenario.*?)```", md.read_text(), re.S):
            blocks.append((f"{md.name}:{m.group(1).splitlines()[0]}", m.group(1)))
    return blocks


@pytest.mark.parametrize("name,text", _yaml_blocks(), ids=[n for n, _ in _yaml_blocks()])
def test_documented_scenarios_load_and_run(name: str, text: str) -> None:
    """Every ```yaml block starting with '# scenario' in docs/ is a valid scenario that runs."""
    from servesim import simulate

    scenario = scenario_from_dict(yaml.safe_load(text)).replace({"duration": 5.0})
    assert simulate(scenario).summary["requests_total"] >= 0


def test_every_scenario_file_loads() -> None:
    """Every YAML under scenarios/ loads and validates."""
    from servesim import load_scenario

    files = sorted((ROOT / "scenarios").rglob("*.yaml"))
    assert files
    for f in files:
        load_scenario(f)
