"""Machine description, results files, and the printed tables (Markdown, so they paste into
``benchmarks/README.md`` as they are)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import families
from benchmarks.cases import CASES, ROOT

RESULTS_DIR = ROOT / "benchmarks" / "results"
_RESULTS_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(-quick)?\.json$")

#: Schema version of results files.
SCHEMA = 1


# --- machine --------------------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 2**20, 1) if match else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def available_cpus() -> list[int]:
    """CPUs this process may run on (all of them where affinity is not supported)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def source_revision() -> dict[str, Any]:
    """The commit checked out and whether ``src/`` differs from it (None: not a git tree)."""
    dirty = _git("status", "--porcelain", "--", "src")
    return {
        "git_revision": _git("rev-parse", "--short", "HEAD"),
        "git_src_dirty": None if dirty is None else bool(dirty),
    }


def machine_description() -> dict[str, Any]:
    """Where and with what the benchmarks ran."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "servesim": _version("servesim"),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "simpy": _version("simpy"),
        "pandas": _version("pandas"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(available_cpus()),
        "memory_gib": _memory_gib(),
        **source_revision(),
    }


# --- results files --------------------------------------------------------------------------


def default_results_path(date: str, quick: bool) -> Path:
    return RESULTS_DIR / f"{date}{'-quick' if quick else ''}.json"


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` plus the cases of an existing ``path`` that were not rerun (and still exist)."""
    if not path.exists():
        return new
    try:
        old = load_results(path)
    except (OSError, ValueError):
        return new
    rerun = {c["name"] for c in new["cases"]}
    kept = [
        c for c in old.get("cases", []) if c.get("name") not in rerun and c.get("name") in CASES
    ]
    order = list(CASES)
    cases = sorted(
        kept + new["cases"],
        key=lambda c: order.index(c["name"]) if c["name"] in order else len(order),
    )
    return {**new, "cases": cases}


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def previous_results(current: Path, quick: bool) -> Path | None:
    """The newest results file of the same kind (quick or full) dated before ``current``.

    When ``current`` is not a dated file (``--out``), the newest dated file of that kind.
    """
    match = _RESULTS_NAME.match(current.name)
    before = match.group(1) if match else "9999-99-99"
    found = []
    for path in RESULTS_DIR.glob("*.json"):
        m = _RESULTS_NAME.match(path.name)
        if (
            m
            and bool(m.group(2)) == quick
            and m.group(1) < before
            and path.resolve() != current.resolve()
        ):
            found.append((m.group(1), path))
    return max(found)[1] if found else None


# --- tables ---------------------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def results_table(cases: list[dict[str, Any]]) -> str:
    """One row per case: size, speed, memory and the SLO attainment it simulated."""
    header = [
        "case",
        "requests",
        "tokens",
        "events",
        "events/req",
        "wall s",
        "CPU s",
        "req/s",
        "tokens/s",
        "peak RSS MiB",
        "SLO att.",
        "warm-up s",
    ]
    rows = []
    for c in cases:
        if "error" in c:
            rows.append([c["name"], "error: " + c["error"][:60], *[""] * (len(header) - 2)])
            continue
        rows.append(
            [
                c["name"],
                _num(c["requests"]),
                _num(c["tokens"]),
                _num(c["events"]),
                _num(c["events_per_request"], 2),
                _num(c["wall_seconds"], 2),
                _num(c.get("cpu_seconds"), 2),
                _num(c["requests_per_second"]),
                _num(c["tokens_per_second"]),
                _num(c["peak_rss_mib"]),
                "-" if c["slo_attainment"] is None else f"{c['slo_attainment']:.4f}",
                _num(c["warmup_seconds"], 2),
            ]
        )
    return _markdown(header, rows)


def baseline_lines(cases: list[dict[str, Any]]) -> list[str]:
    """For each case with a baseline: how events scale against requests and tokens."""
    by_name = {c["name"]: c for c in cases if "error" not in c}
    lines = []
    for c in by_name.values():
        base = by_name.get(c.get("baseline") or "")
        if base is None:
            continue
        lines.append(
            f"{c['name']} vs {base['name']}: tokens x{c['tokens'] / base['tokens']:.2f} "
            f"({base['tokens']:,} -> {c['tokens']:,}), requests "
            f"x{c['requests'] / base['requests']:.2f}, events x{c['events'] / base['events']:.3f} "
            f"({base['events']:,} -> {c['events']:,}; "
            f"{base['events_per_request']:.2f} -> {c['events_per_request']:.2f} per request)"
        )
    return lines


def _change(old: float | None, new: float | None, digits: int = 0) -> str:
    if old is None or new is None:
        return "-"
    pct = f" ({(new - old) / old:+.1%})" if old else ""
    return f"{_num(old, digits)} -> {_num(new, digits)}{pct}"


def compare_table(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Per case present in both: wall time, throughput, events and memory, old -> new."""
    old_cases = {c["name"]: c for c in old.get("cases", []) if "error" not in c}
    header = ["case", "wall s", "req/s", "tokens/s", "events", "peak RSS MiB"]
    rows = []
    for c in new["cases"]:
        o = old_cases.get(c["name"])
        if o is None or "error" in c:
            continue
        rows.append(
            [
                c["name"],
                _change(o["wall_seconds"], c["wall_seconds"], 2),
                _change(o["requests_per_second"], c["requests_per_second"]),
                _change(o["tokens_per_second"], c["tokens_per_second"]),
                _change(o["events"], c["events"]),
                _change(o["peak_rss_mib"], c["peak_rss_mib"]),
            ]
        )
    if not rows:
        return "(no case in common)"
    return _markdown(header, rows)


def describe_machine(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cpu_model']} ({machine['cpus_available']} of {machine['cpu_count']} CPUs "
        f"available, {machine['memory_gib']} GiB), {machine['platform']}, "
        f"{machine['python']}, numpy {machine['numpy']}, numba {machine['numba']}, "
        f"simpy {machine['simpy']}, servesim {machine['servesim']} "
        f"@ {machine['git_revision']}{' (src modified)' if machine['git_src_dirty'] else ''}"
    )


def print_report(results: dict[str, Any], file: Any = sys.stdout) -> None:
    print(results_table(results["cases"]), file=file)
    extra = baseline_lines(results["cases"])
    if extra:
        print(file=file)
        for line in extra:
            print(line, file=file)
    for section in families.family_sections(results["cases"]):
        print(f"\n{section}", file=file)
    targets = families.targets_table(results["cases"], results["quick"])
    if targets:
        print(f"\n### targets\n\n{targets}", file=file)
    print(f"\nmachine: {describe_machine(results['machine'])}", file=file)
    load = results.get("load_average_before_after")
    if load and None not in load:
        print(
            f"load average (1 min) before/after: {load[0]} / {load[1]}; "
            f"fastest of {results.get('repeat', 1)} run(s) per case",
            file=file,
        )
