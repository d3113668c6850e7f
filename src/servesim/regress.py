"""Golden-metric regression of scheduler policies (``servesim regress``).

A *suite* is a folder of small scenario YAML files (default ``scenarios/ci/``); the *golden*
folder (default ``<suite>/golden/``) holds one ``<scenario>.json`` per scenario with the summary
metrics of a trusted run. :func:`run_suite` reruns every scenario and compares each metric:

- integers (request counts, events, switches) must be equal;
- floats must agree within ``rtol`` (default 1e-9: the simulator is deterministic, the slack
  only absorbs floating-point summation order across NumPy builds), or the per-metric
  tolerance in ``<golden>/tolerances.yaml`` (``{metric: rtol}``);
- ``wall_seconds`` is never compared.

A team changing a policy runs this in its CI; ``--update`` rewrites the golden files after an
intended change and prints what moved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servesim.errors import ServesimError

#: Summary keys that are not deterministic and never compared.
IGNORED = ("wall_seconds",)
DEFAULT_RTOL = 1e-9


@dataclass
class Difference:
    """One metric of one scenario that moved."""

    scenario: str
    metric: str
    golden: Any
    current: Any
    rtol: float

    @property
    def relative(self) -> float | None:
        if isinstance(self.golden, int | float) and isinstance(self.current, int | float):
            if self.golden == 0:
                return math.inf if self.current else 0.0
            return abs(self.current - self.golden) / abs(self.golden)
        return None


@dataclass
class SuiteReport:
    """Outcome of a regression run."""

    scenarios: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    missing_golden: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.missing_golden


def _same(golden: Any, current: Any, rtol: float) -> bool:
    if golden is None or current is None:
        return golden is current
    if isinstance(golden, bool) or isinstance(current, bool):
        return bool(golden == current)
    if isinstance(golden, int) and isinstance(current, int):
        return golden == current
    if isinstance(golden, int | float) and isinstance(current, int | float):
        return math.isclose(float(golden), float(current), rel_tol=rtol, abs_tol=1e-12)
    return bool(golden == current)


def compare(name: str, golden: dict[str, Any], current: dict[str, Any], rtol: float,
            tolerances: dict[str, float]) -> list[Difference]:
    """The metrics of ``current`` that differ from ``golden`` beyond their tolerance."""
    diffs = []
    for key in sorted(set(golden) | set(current)):
        if key in IGNORED:
            continue
        tol = tolerances.get(key, rtol)
        g, c = golden.get(key), current.get(key)
        if not _same(g, c, tol):
            diffs.append(Difference(name, key, g, c, tol))
    return diffs


def _load_tolerances(golden_dir: Path) -> dict[str, float]:
    path = golden_dir / "tolerances.yaml"
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ServesimError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in doc.values()
    ):
        raise ServesimError(f"{path}: expected a mapping of metric name to rtol >= 0")
    return {str(k): float(v) for k, v in doc.items()}


def _clean(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in summary.items():
        if k in IGNORED:
            continue
        out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return out


def run_suite(suite: str | Path, golden: str | Path | None = None, *, update: bool = False,
              rtol: float = DEFAULT_RTOL, only: list[str] | None = None) -> SuiteReport:
    """Run every scenario of ``suite`` and compare (or, with ``update``, rewrite) goldens."""
    from servesim.scenario import load_scenario
    from servesim.simulate import simulate

    suite_dir = Path(suite)
    if not suite_dir.is_dir():
        raise ServesimError(f"--suite {suite_dir}: no such folder")
    golden_dir = Path(golden) if golden is not None else suite_dir / "golden"
    files = sorted(suite_dir.glob("*.yaml"))
    if only:
        files = [f for f in files if f.stem in only]
        unknown = set(only) - {f.stem for f in files}
        if unknown:
            raise ServesimError(f"--only: no scenario named {', '.join(sorted(unknown))} in "
                                f"{suite_dir}")
    if not files:
        raise ServesimError(f"--suite {suite_dir}: no *.yaml scenarios")
    tolerances = _load_tolerances(golden_dir)
    report = SuiteReport()
    for path in files:
        name = path.stem
        report.scenarios.append(name)
        current = _clean(simulate(load_scenario(path)).summary)
        gold_path = golden_dir / f"{name}.json"
        if update:
            previous = json.loads(gold_path.read_text()) if gold_path.exists() else None
            if previous is not None:
                report.differences += compare(name, previous, current, rtol, tolerances)
            golden_dir.mkdir(parents=True, exist_ok=True)
            gold_path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
            report.updated.append(name)
            continue
        if not gold_path.exists():
            report.missing_golden.append(name)
            continue
        try:
            gold = json.loads(gold_path.read_text())
        except json.JSONDecodeError as exc:
            raise ServesimError(f"{gold_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        report.differences += compare(name, gold, current, rtol, tolerances)
    return report


def format_report(report: SuiteReport, update: bool = False) -> str:
    """The differences as a table, and a one-line verdict."""
    lines = []
    if report.differences:
        head = "changed by --update" if update else "regressions"
        lines.append(f"{head}:")
        lines.append(f"  {'scenario':<24} {'metric':<26} {'golden':>14} {'current':>14} "
                     f"{'rel. diff':>10}")
        for d in report.differences:
            rel = d.relative
            lines.append(
                f"  {d.scenario:<24} {d.metric:<26} {_show(d.golden):>14} {_show(d.current):>14}"
                f" {('-' if rel is None else f'{rel:.2e}'):>10}"
            )
    for name in report.missing_golden:
        lines.append(f"  {name}: no golden file (run 'servesim regress --update')")
    n = len(report.scenarios)
    if update:
        lines.append(f"updated {len(report.updated)} golden files "
                     f"({len(report.differences)} metrics changed)")
    elif report.ok:
        lines.append(f"ok: {n} scenarios match their golden metrics")
    else:
        bad = len({d.scenario for d in report.differences} | set(report.missing_golden))
        lines.append(f"FAILED: {bad} of {n} scenarios regressed")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
