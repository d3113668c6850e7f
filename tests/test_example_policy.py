"""The 'Writing a policy' example: a policy in one file, used by dotted path, tested like ours."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from servesim import simulate
from servesim.policies import get_policy

ROOT = Path(__file__).resolve().parents[1]


def _policy_path() -> str:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return "examples.shortest_prompt_first:ShortestPromptFirst"


def test_dotted_path_policy_loads_and_validates_params(make_scenario) -> None:
    """policy.name may be package.module:Class; its own parameters are validated."""
    cls = get_policy(_policy_path())
    assert cls.name == "shortest-prompt-first"
    scenario = make_scenario(policy={"name": _policy_path(), "max_waiting": 50})
    assert scenario.policy.params.max_waiting == 50


def test_shortest_prompt_first_admits_short_prompts_first(make_scenario) -> None:
    """Under a queue, requests start in input-length order among those waiting together; and
    tokens are conserved as with every policy."""
    scenario = make_scenario(
        cluster=[{"gpu": "A10", "count": 1}], models=[{"name": "llama-2-7b"}], duration=20.0,
        policy={"name": _policy_path(), "max_num_seqs": 4},
        workload={"rate": 6.0, "lengths": {"kind": "uniform", "input_min": 16,
                                           "input_max": 2000, "output_min": 50,
                                           "output_max": 200}},
    )
    req = simulate(scenario).requests
    fin = req[req.status == "finished"]
    assert (fin.generated == fin.output_len).all()
    # among requests that were all waiting at the same moment, shorter ones start earlier
    started = req[req.first_scheduled.notna() & (req.preemptions == 0)]
    inversions = 0
    pairs = 0
    arr, start, inp = (started[c].to_numpy() for c in ("arrival", "first_scheduled", "input_len"))
    for i in range(len(started)):
        both_waiting = (arr < start[i]) & (arr[i] < start) & (start != start[i])
        shorter = inp < inp[i]
        pairs += int(np.sum(both_waiting & shorter))
        inversions += int(np.sum(both_waiting & shorter & (start > start[i])))
    assert pairs > 20
    assert inversions == 0
