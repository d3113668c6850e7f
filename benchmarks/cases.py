"""The benchmark cases: a name, a scenario file, ``--set``-style overrides, notes and targets.

Adding a case is one call to :func:`register` below; the runner, the results file, the tables
and ``--compare`` pick it up by name. A case may belong to *families* (``--only FAMILY`` runs
every case of a family, and the report derives family figures from their records: the
scaling slope, the event ratio against the stepwise engine, memory per request...). Options
of a case:

- ``baseline``: another case to print how its events, requests and tokens scale against;
- ``cli``: also time fresh ``servesim run`` processes (the wall time a user waits, start-up,
  imports and numba's cache load included); ``cli_cold`` once more with an empty numba cache
  (what the cache saves);
- ``stepwise``: also run the scenario with the stepwise reference engine in the same process
  (events, wall time, and whether the two engines agree);
- ``target_*``: the figures the case must reach (``report.target_rows`` marks them met or
  missed); ``max_repeat`` caps ``--repeat`` for the cases of a minute.
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
        families: the families the case belongs to (``--only FAMILY`` selects them all).
        label: the case's name inside its family tables (default: the name).
        cli: also time fresh ``servesim run`` processes of the scenario.
        cli_cold: also time one ``servesim run`` with an empty numba cache.
        stepwise: also run the stepwise engine on the scenario, in the same process.
        target_wall_seconds: ``simulate()`` must take less (full size).
        target_cli_seconds: a fresh ``servesim run`` must take less (full size).
        target_peak_rss_mib: peak resident memory must stay below (full size).
        target_event_ratio: stepwise events / fast events must be at least this.
        max_repeat: at most this many measured runs whatever ``--repeat`` says.
        requires: files (relative to the repository root) the case needs; when one is
            missing the case reports an error naming it.
    """

    name: str
    scenario: str
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    baseline: str | None = None
    target_requests_per_second: float | None = None
    warmup_overrides: dict[str, Any] = field(default_factory=dict)
    families: tuple[str, ...] = ()
    label: str = ""
    cli: bool = False
    cli_cold: bool = False
    stepwise: bool = False
    target_wall_seconds: float | None = None
    target_cli_seconds: float | None = None
    target_peak_rss_mib: float | None = None
    target_event_ratio: float | None = None
    max_repeat: int | None = None
    requires: tuple[str, ...] = ()

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
            "families": list(self.families),
            "label": self.label or self.name,
            "target_wall_seconds": self.target_wall_seconds,
            "target_cli_seconds": self.target_cli_seconds,
            "target_peak_rss_mib": self.target_peak_rss_mib,
            "target_event_ratio": self.target_event_ratio,
        }


@dataclass(frozen=True)
class Family:
    """A group of cases whose records the report reads together.

    Attributes:
        name: ``--only`` name; cases list it in their ``families``.
        notes: one line on what the family shows.
        target: the family-level target in words (the report computes and checks it), or "".
    """

    name: str
    notes: str
    target: str = ""


#: Every registered case, in registration (= run and print) order.
CASES: dict[str, Case] = {}

#: Every registered family, in registration order.
FAMILIES: dict[str, Family] = {}


def register(case: Case) -> Case:
    """Add ``case`` to :data:`CASES`; a second case with the same name is an error."""
    if case.name in CASES or case.name in FAMILIES:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    if case.baseline is not None and case.baseline not in CASES:
        raise ValueError(
            f"case {case.name!r}: baseline {case.baseline!r} is not registered "
            "(register the baseline first)"
        )
    unknown = [f for f in case.families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"case {case.name!r}: unknown families {unknown} (register them first)")
    CASES[case.name] = case
    return case


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES`; a name used twice is an error."""
    if family.name in FAMILIES or family.name in CASES:
        raise ValueError(f"benchmark family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def members(family: str) -> list[Case]:
    """The cases of ``family``, in registration order."""
    return [c for c in CASES.values() if family in c.families]


def select(only: str | None) -> list[Case]:
    """The cases named in a comma-separated ``--only`` list of case or family names (all
    cases when None), each once, in registration order."""
    if not only:
        return list(CASES.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES and n not in FAMILIES]
    if unknown:
        raise SystemExit(
            f"unknown case(s): {', '.join(unknown)}; known families: {', '.join(FAMILIES)}; "
            f"cases: {', '.join(CASES)}"
        )
    chosen = set()
    for n in names:
        chosen |= {c.name for c in members(n)} if n in FAMILIES else {n}
    return [c for c in CASES.values() if c.name in chosen]


# --- the families ---------------------------------------------------------------------------

register_family(Family(
    "aegaeon-fig11",
    "the Aegaeon Figure 11 scenario (16 H800, 0.1 req/s per model) at 16, 48 and 80 models, "
    "every auto-scaling policy (muxserve up to 2 models per GPU, fcfs up to 1)",
    "every point < 2 s of wall time including start-up (a fresh `servesim run`); at 80 models "
    ">= 50x fewer events than the stepwise engine",
))
register_family(Family(
    "vtc-real",
    "the VTC paper's real-trace scenario (27 tenants of Chatbot Arena, 1,500 requests on one "
    "A10G), every fairness policy",
))
register_family(Family(
    "scaling-curve",
    "fcfs (fcfs-100k's cluster and rate) at 10k, 100k and 1M requests, and with every output "
    "doubled",
    "log-log slope of wall time against requests in [0.9, 1.1]; doubling outputs changes "
    "events by < 10 %",
))
register_family(Family(
    "memory",
    "peak RSS of the scale-1m scenario cut to 0.25M and 0.5M requests, and scale-1m itself",
    "memory grows with requests (per-request columns), not with tokens",
))
register_family(Family(
    "scale-pooled",
    "scale-1m's long tail on 128 H800 with pooled (auto-scaling) policies, ~20k requests: what "
    "a request costs a policy that scans instances and batches per decision",
))
register_family(Family(
    "fast-vs-stepwise",
    "the same scenario with the fast (fast-forward) and the stepwise engine in one process",
))

# --- the cases ------------------------------------------------------------------------------

_FCFS = "benchmarks/scenarios/fcfs-100k.yaml"
_FIG11 = "scenarios/aegaeon/fig11.yaml"
_VTC_REAL = "scenarios/vtc/real.yaml"
_VTC_TRACE = "../shared/data/vtc/real_trace.csv"
_SCALE = "benchmarks/scenarios/scale-1m.yaml"
_SCALE_DURATION = 2604.1667

register(
    Case(
        name="fcfs-100k",
        scenario=_FCFS,
        notes="1 model on 8 H800, Poisson 40 req/s for 2,500 s (~100k requests), ShareGPT lengths",
        target_requests_per_second=10_000,
        families=("scaling-curve",),
        label="100k",
    )
)

register(
    Case(
        name="fcfs-100k-ox2",
        scenario=_FCFS,
        overrides={"workload.output_scale": 2},
        notes="fcfs-100k with every output doubled: tokens x2, events should stay ~x1",
        baseline="fcfs-100k",
        families=("scaling-curve",),
        label="100k, outputs x2",
    )
)

register(
    Case(
        name="scaling-curve/10k",
        scenario=_FCFS,
        overrides={"duration": 250.0},
        notes="fcfs-100k cut to 250 s of arrivals (~10k requests)",
        families=("scaling-curve",),
        label="10k",
    )
)

register(
    Case(
        name="scaling-curve/10k-ox2",
        scenario=_FCFS,
        overrides={"duration": 250.0, "workload.output_scale": 2},
        notes="scaling-curve/10k with every output doubled",
        baseline="scaling-curve/10k",
        families=("scaling-curve",),
        label="10k, outputs x2",
    )
)

register(
    Case(
        name="scaling-curve/1M",
        scenario=_FCFS,
        overrides={"duration": 25_000.0},
        notes="fcfs-100k for 25,000 s of arrivals (~1M requests)",
        families=("scaling-curve",),
        label="1M",
        max_repeat=2,
    )
)

# Aegaeon Figure 11: every policy at 16, 48 and 80 models where it can place them.
_FIG11_POLICIES = ("aegaeon", "serverlessllm", "serverlessllm+", "muxserve", "fcfs")
for _models in (16, 48, 80):
    for _policy in _FIG11_POLICIES:
        if _policy == "muxserve" and _models > 32 or _policy == "fcfs" and _models > 16:
            continue  # muxserve: at most 2 models per GPU; fcfs: one GPU per model
        register(
            Case(
                name=f"aegaeon-fig11/{_policy}-{_models}",
                scenario=_FIG11,
                overrides={"workload.models": _models, "policy.name": _policy},
                notes=f"{_models} models at 0.1 req/s on 16 H800 for 120 s, {_policy}",
                families=("aegaeon-fig11",),
                label=f"{_policy} {_models}",
                cli=True,
                cli_cold=(_policy == "aegaeon" and _models == 16),
                stepwise=_models == 80,
                target_cli_seconds=2.0,
                target_event_ratio=50.0 if _models == 80 else None,
            )
        )

# VTC real trace: every fairness policy on the paper's engine.
for _policy in ("fcfs", "rpm", "vtc", "lcf", "vtc-oracle", "vtc-predict", "equinox"):
    register(
        Case(
            name=f"vtc-real/{_policy}",
            scenario=_VTC_REAL,
            overrides={"policy.name": _policy, "workload.trace": _VTC_TRACE},
            notes=f"27 tenants, 1,500 requests of the real trace on one A10G, {_policy}",
            families=("vtc-real",),
            label=_policy,
            requires=(_VTC_TRACE,),
        )
    )

register(
    Case(
        name="memory/0.25M",
        scenario=_SCALE,
        overrides={"duration": _SCALE_DURATION / 4},
        notes="scale-1m cut to a quarter of its arrivals (~250k requests)",
        families=("memory",),
        label="0.25M",
    )
)

register(
    Case(
        name="memory/0.5M",
        scenario=_SCALE,
        overrides={"duration": _SCALE_DURATION / 2},
        notes="scale-1m cut to half of its arrivals (~500k requests)",
        families=("memory",),
        label="0.5M",
    )
)

register(
    Case(
        name="scale-1m",
        scenario=_SCALE,
        notes="256 H800, 256 models with long-tail rates (lognormal, capped at 4 req/s), "
        "fcfs, ~1M requests",
        families=("memory",),
        label="1M",
        target_wall_seconds=60.0,
        target_peak_rss_mib=2048.0,
        max_repeat=2,
    )
)

for _policy in ("aegaeon", "serverlessllm", "serverlessllm+"):
    register(
        Case(
            name=f"scale-pooled/{_policy}",
            scenario="benchmarks/scenarios/scale-pooled.yaml",
            overrides={"policy.name": _policy},
            notes=f"128 H800, 256 long-tail models, ~20k requests, {_policy}",
            families=("scale-pooled",),
            label=_policy,
        )
    )

# Fast vs stepwise: small scenarios of several policies, both engines in one process.
for _name, _scenario, _over in (
    ("fcfs-10k", _FCFS, {"duration": 250.0}),
    ("aegaeon-80", _FIG11, {"workload.models": 80}),
    ("serverlessllm+-48", _FIG11, {"workload.models": 48, "policy.name": "serverlessllm+"}),
    ("muxserve-16", _FIG11, {"workload.models": 16, "policy.name": "muxserve"}),
    ("vtc-real", _VTC_REAL, {"workload.trace": _VTC_TRACE}),
    ("scale-10s", _SCALE, {"duration": 10.0}),
):
    register(
        Case(
            name=f"fast-vs-stepwise/{_name}",
            scenario=_scenario,
            overrides=_over,
            notes="both engines on the same scenario, in one process",
            families=("fast-vs-stepwise",),
            label=_name,
            stepwise=True,
            requires=(_VTC_TRACE,) if _scenario == _VTC_REAL else (),
        )
    )
