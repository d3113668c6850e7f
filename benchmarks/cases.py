"""The benchmark cases: a name, a scenario file, ``--set``-style overrides and notes.

Adding a case is one call to :func:`register` below; the runner, the results file, the table
and ``--compare`` pick it up by name. A case may name a ``baseline`` case to print how its
events, requests and tokens scale against it (the fast-forward check), and a throughput
``target`` in simulated requests per wall-second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The repository root; case scenario paths are relative to it.
ROOT = Path(__file__).resolve().parents[1]

#: The shared data folder every developer and CI has next to the repository (real traces).
SHARED = ROOT.parent / "shared"

#: Seconds of arrivals in the warm-up run that precedes the measured run (at most the
#: case's own duration). Long enough to go through prefill, decode and finish.
WARMUP_DURATION = 10.0

#: ``--quick`` multiplies a case's duration by this.
QUICK_SCALE = 0.1


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes:
        name: unique name, used by ``--only`` and as the key in results files.
        scenario: scenario YAML path, relative to the repository root.
        overrides: ``{"path.to.field": value}`` applied on load, as ``servesim run --set``.
        notes: one line on what the case shows.
        baseline: another case to compare events/requests/tokens with (printed as ratios).
        target_requests_per_second: the simulated requests per wall-second the case should
            reach on one core (full size), or None for no target.
        warmup_overrides: extra overrides for the warm-up run (default: same scenario with
            ``duration`` cut to :data:`WARMUP_DURATION`).
    """

    name: str
    scenario: str
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    baseline: str | None = None
    target_requests_per_second: float | None = None
    warmup_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def scenario_path(self) -> Path:
        return ROOT / self.scenario

    def describe(self) -> dict[str, Any]:
        """The case's definition, as stored with its results."""
        return {
            "scenario": self.scenario,
            "overrides": dict(self.overrides),
            "notes": self.notes,
            "baseline": self.baseline,
            "target_requests_per_second": self.target_requests_per_second,
        }


#: Every registered case, in registration (= run and print) order.
CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    """Add ``case`` to :data:`CASES`; a second case with the same name is an error."""
    if case.name in CASES:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    if case.baseline is not None and case.baseline not in CASES:
        raise ValueError(
            f"case {case.name!r}: baseline {case.baseline!r} is not registered "
            "(register the baseline first)"
        )
    CASES[case.name] = case
    return case


def select(only: str | None) -> list[Case]:
    """The cases named in a comma-separated ``--only`` list (all cases when None)."""
    if not only:
        return list(CASES.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    return [CASES[n] for n in names]


# --- the cases ------------------------------------------------------------------------------
# Later: aegaeon-fig11, vtc-real, scale-1m, scaling-curve, fast-vs-stepwise.

register(
    Case(
        name="fcfs-100k",
        scenario="benchmarks/scenarios/fcfs-100k.yaml",
        notes="1 model on 8 H800, Poisson 40 req/s for 2,500 s (~100k requests), ShareGPT lengths",
        target_requests_per_second=10_000,
    )
)

register(
    Case(
        name="fcfs-100k-ox2",
        scenario="benchmarks/scenarios/fcfs-100k.yaml",
        overrides={"workload.output_scale": 2},
        notes="fcfs-100k with every output doubled: tokens x2, events should stay ~x1",
        baseline="fcfs-100k",
    )
)
