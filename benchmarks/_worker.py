"""Run one benchmark case in this (fresh) process and write its measurements as JSON.

Invoked by the runner as ``python -m benchmarks._worker CASE OUT.json [--quick]``. The process
imports servesim, runs a short warm-up of the case's scenario (numba compiles or loads its
cache then), and only then times :func:`servesim.simulate` on the full scenario, so that peak
RSS and wall time belong to this case alone. Cases that ask for it then run the stepwise
engine on the same scenario, and time fresh ``servesim run`` processes (pinned to the same CPU:
a child inherits the affinity).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_T_START = time.perf_counter()

#: What a fresh process spends before simulating: imports, then the first kernel call (numba
#: initialises its typing and target contexts and loads the kernel from its on-disk cache).
_STARTUP_PROBE = """
import time
t0 = time.perf_counter()
import servesim.cli
import numpy as np
from servesim import kernels
t1 = time.perf_counter()
ids = np.zeros(1, dtype=np.int64)
column = np.zeros(1, dtype=np.int64)
kernels.decode_batch(ids, column, column, column)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


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


def _timed(simulate: Any, scenario: Any) -> tuple[Any, float, float]:
    """``(result, wall seconds, CPU seconds of this process)`` of one ``simulate`` call."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    result = simulate(scenario)
    return result, time.perf_counter() - t0, time.process_time() - c0


def _summaries_agree(fast: dict[str, Any], step: dict[str, Any]) -> list[str]:
    """Summary keys on which the two engines differ (beyond 1e-9 relative; events and wall
    time excepted): the stepwise test's criterion."""
    differ = []
    for key, value in fast.items():
        if key in ("events", "wall_seconds"):
            continue
        other = step.get(key)
        if isinstance(value, float) and isinstance(other, float):
            if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12) and not (
                math.isnan(value) and math.isnan(other)
            ):
                differ.append(key)
        elif value != other:
            differ.append(key)
    return differ


def _cli_command(case: Any, overrides: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "servesim.cli", "run", case.scenario, "--quiet"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def _cli_runs(case: Any, overrides: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Wall seconds of fresh ``servesim run`` processes (``repeat`` with the numba cache as
    the measured runs left it; with ``cli_cold`` one more with an empty cache), and the
    start-up probe: import seconds and first-kernel-call seconds of a fresh process."""
    from benchmarks.cases import ROOT

    out: dict[str, Any] = {}
    cmd = _cli_command(case, overrides)
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"servesim run failed: {(proc.stderr or proc.stdout)[-300:]}")
    out["cli_command"] = " ".join(["servesim", *cmd[3:]])
    out["cli_wall_seconds"] = min(walls)
    out["cli_wall_seconds_runs"] = walls
    if case.cli_cold:
        with tempfile.TemporaryDirectory(prefix="servesim-numba-cold-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=True)
            out["cli_cold_wall_seconds"] = time.perf_counter() - t0
    probes = []
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", _STARTUP_PROBE], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        probes.append([float(x) for x in proc.stdout.split()])
    out["startup_import_seconds"] = min(p[0] for p in probes)
    out["startup_first_kernel_seconds"] = min(p[1] for p in probes)
    return out


def run_case(name: str, quick: bool, repeat: int = 1) -> dict[str, Any]:
    """Warm up, run case ``name`` ``repeat`` times and return its measurements.

    Wall time is the fastest of the repeats (the least disturbed by other load); peak RSS is
    taken after the first, so it is one run's.
    """
    import servesim
    from benchmarks.cases import CASES, QUICK_SCALE, ROOT, WARMUP_DURATION

    import_seconds = time.perf_counter() - _T_START
    case = CASES[name]
    missing = [p for p in case.requires if not (ROOT / p).exists()]
    if missing:
        raise FileNotFoundError(f"case {name} needs {', '.join(missing)} (the shared data)")
    if case.max_repeat is not None:
        repeat = max(1, min(repeat, case.max_repeat))
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

    result, wall, cpu = _timed(servesim.simulate, scenario)
    walls, cpus = [wall], [cpu]
    peak = _peak_rss_mib()
    deterministic = True
    for _ in range(repeat - 1):
        events_before = result.summary["events"]
        del result
        gc.collect()
        result, wall, cpu = _timed(servesim.simulate, scenario)
        walls.append(wall)
        cpus.append(cpu)
        deterministic &= result.summary["events"] == events_before
    wall = min(walls)

    summary = result.summary
    requests = int(summary["requests_total"])
    events = int(summary["events"])
    tokens = int(result.requests["generated"].sum())
    record: dict[str, Any] = {
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
        "cpu_seconds": min(cpus),
        "cpu_seconds_runs": cpus,
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
        "jain_index": _plain(summary["jain_index"]),
        "service_diff_max": _plain(summary["service_diff_max"]),
        "summary_wall_seconds": _plain(summary["wall_seconds"]),
        "stop_reason": result.stop_reason,
    }
    fast_summary = dict(summary)
    del result
    gc.collect()

    if case.stepwise:
        stepwise = scenario.replace({"engine.mode": "stepwise"})
        step_walls, step_cpus = [], []
        for _ in range(repeat):
            step, wall_s, cpu_s = _timed(servesim.simulate, stepwise)
            step_walls.append(wall_s)
            step_cpus.append(cpu_s)
        differ = _summaries_agree(fast_summary, step.summary)
        record.update({
            "stepwise_events": int(step.summary["events"]),
            "stepwise_wall_seconds": min(step_walls),
            "stepwise_wall_seconds_runs": step_walls,
            "stepwise_cpu_seconds": min(step_cpus),
            "stepwise_event_ratio": int(step.summary["events"]) / events if events else None,
            "stepwise_speed_ratio": min(step_walls) / record["wall_seconds"],
            "stepwise_same_summary": not differ,
            "stepwise_summary_differs": differ,
            "stepwise_slo_attainment": _plain(step.summary["slo_attainment"]),
        })
        del step
        gc.collect()

    if case.cli:
        record.update(_cli_runs(case, overrides if quick else dict(case.overrides), repeat))

    record.update({
        "cpu_affinity": sorted(_affinity()),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return record


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
