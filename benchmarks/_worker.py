"""Run one benchmark case in this (fresh) process and write its measurements as JSON.

Invoked by the runner as ``python -m benchmarks._worker CASE OUT.json [--quick]``. The process
imports servesim, runs a short warm-up of the case's scenario (numba compiles or loads its
cache then), and only then times :func:`servesim.simulate` on the full scenario, so that peak
RSS and wall time belong to this case alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

_T_START = time.perf_counter()


def _current_rss_mib() -> float | None:
    """Resident set size now, MiB (psutil if installed, else /proc; None if neither)."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/self/statm", encoding="ascii") as fh:
                pages = int(fh.read().split()[1])
        except OSError:
            return None
        return pages * resource.getpagesize() / 2**20
    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _plain(value: Any) -> Any:
    """JSON-ready: NumPy scalars to Python, NaN/inf to None."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_case(name: str, quick: bool, repeat: int = 1) -> dict[str, Any]:
    """Warm up, run case ``name`` ``repeat`` times and return its measurements.

    Wall time is the fastest of the repeats (the least disturbed by other load); peak RSS is
    taken after the first, so it is one run's.
    """
    import servesim
    from benchmarks.cases import CASES, QUICK_SCALE, WARMUP_DURATION

    import_seconds = time.perf_counter() - _T_START
    case = CASES[name]
    path = case.scenario_path
    base = servesim.load_scenario(path, overrides=dict(case.overrides))
    overrides = dict(case.overrides)
    if quick:
        overrides["duration"] = base.duration * QUICK_SCALE
    scenario = servesim.load_scenario(path, overrides=overrides)
    warm = servesim.load_scenario(
        path,
        overrides={
            **case.overrides,
            "duration": min(WARMUP_DURATION, scenario.duration),
            **case.warmup_overrides,
        },
    )

    t0 = time.perf_counter()
    warm_result = servesim.simulate(warm)
    warmup_seconds = time.perf_counter() - t0
    warmup_requests = int(warm_result.summary["requests_total"])
    del warm_result
    gc.collect()
    rss_before = _current_rss_mib()

    t0 = time.perf_counter()
    result = servesim.simulate(scenario)
    walls = [time.perf_counter() - t0]
    peak = _peak_rss_mib()
    deterministic = True
    for _ in range(repeat - 1):
        events_before = result.summary["events"]
        del result
        gc.collect()
        t0 = time.perf_counter()
        result = servesim.simulate(scenario)
        walls.append(time.perf_counter() - t0)
        deterministic &= result.summary["events"] == events_before
    wall = min(walls)

    summary = result.summary
    requests = int(summary["requests_total"])
    events = int(summary["events"])
    tokens = int(result.requests["generated"].sum())
    return {
        "name": name,
        **case.describe(),
        "quick": quick,
        "duration": float(scenario.duration),
        "requests": requests,
        "requests_finished": int(summary["requests_finished"]),
        "events": events,
        "tokens": tokens,
        "wall_seconds": wall,
        "wall_seconds_runs": walls,
        "same_events_every_run": deterministic,
        "requests_per_second": requests / wall if wall > 0 else None,
        "tokens_per_second": tokens / wall if wall > 0 else None,
        "events_per_request": events / requests if requests else None,
        "peak_rss_mib": peak,
        "rss_before_run_mib": rss_before,
        "import_seconds": import_seconds,
        "warmup_seconds": warmup_seconds,
        "warmup_requests": warmup_requests,
        "sim_seconds": _plain(summary["sim_seconds"]),
        "slo_attainment": _plain(summary["slo_attainment"]),
        "summary_wall_seconds": _plain(summary["wall_seconds"]),
        "stop_reason": result.stop_reason,
        "cpu_affinity": sorted(_affinity()),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    parser.add_argument("case")
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="measured runs (fastest counts)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    record = run_case(args.case, args.quick, max(1, args.repeat))
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
