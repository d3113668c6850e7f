"""``python -m benchmarks [--only NAME[,NAME]] [--compare [FILE]] [--quick] [--out FILE]
[--repeat N]``.

Runs each selected case in a fresh subprocess pinned to one CPU, one after another, writes
``benchmarks/results/<YYYY-MM-DD>.json`` (``<YYYY-MM-DD>-quick.json`` with ``--quick``; cases
not rerun are kept from an existing file of that name) and prints the results table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cases as registry
from benchmarks import report

#: Thread pools a child could start; one core means one thread.
_SINGLE_THREAD_ENV = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="servesim speed and scale benchmarks (one fresh process per case).",
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these cases or families (families: "
        f"{', '.join(registry.FAMILIES)}; --list shows the cases)",
    )
    parser.add_argument(
        "--compare",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="print the change against FILE (default: the newest earlier "
        "results file of the same kind)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: durations x{registry.QUICK_SCALE:g}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="results file (default: benchmarks/results/<date>[-quick].json)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin each case's process to one CPU"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on a case after this many wall-seconds",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="measured runs per case, in the same process; the fastest counts (default 1)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def run_one(
    case: registry.Case, quick: bool, cpu: int | None, timeout: float | None, repeat: int = 1
) -> dict[str, Any]:
    """Run ``case`` in a fresh interpreter and return its record (``error`` on failure)."""
    with tempfile.TemporaryDirectory(prefix="servesim-bench-") as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, "-m", "benchmarks._worker", case.name, str(out)]
        if quick:
            cmd.append("--quick")
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if repeat > 1:
            cmd += ["--repeat", str(repeat)]
        env = {**os.environ, **_SINGLE_THREAD_ENV}
        try:
            proc = subprocess.run(
                cmd,
                cwd=registry.ROOT,
                env=env,
                timeout=timeout,
                capture_output=True,
                text=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {
                "name": case.name,
                **case.describe(),
                "quick": quick,
                "error": f"timed out after {timeout:g} s",
            }
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            sys.stderr.write(proc.stderr)
            return {
                "name": case.name,
                **case.describe(),
                "quick": quick,
                "error": tail[-1] if tail else f"exit status {proc.returncode}",
            }
        return report.load_results(out)


def _load_average() -> float | None:
    """1-minute load average (other work on the machine makes timings noisy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.list:
        for case in registry.CASES.values():
            print(f"{case.name}: {case.notes}")
        print()
        for family in registry.FAMILIES.values():
            names = ", ".join(c.name for c in registry.members(family.name))
            print(f"family {family.name}: {family.notes}\n  cases: {names}")
        return 0
    selected = registry.select(args.only)
    cpus = report.available_cpus()
    cpu = None if args.no_pin else cpus[-1]
    out = args.out or report.default_results_path(dt.date.today().isoformat(), args.quick)

    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    machine = report.machine_description()  # before the runs: the code they load
    load_before = _load_average()
    records = []
    for case in selected:
        revision = report.source_revision()
        print(
            f"running {case.name}{' (quick)' if args.quick else ''} ...",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.perf_counter()
        load = _load_average()
        record = run_one(case, args.quick, cpu, args.timeout, args.repeat)
        record.update(revision)  # cases kept from an earlier run of the day keep their own
        record["load_average_at_start"] = load  # other work on the machine: timing noise
        record["run_command"] = command
        status = record.get("error") or f"{record['wall_seconds']:.2f} s simulate"
        print(
            f"  {case.name}: {status} ({time.perf_counter() - t0:.1f} s with start-up)",
            file=sys.stderr,
            flush=True,
        )
        records.append(record)

    results = {
        "schema": report.SCHEMA,
        "date": dt.date.today().isoformat(),
        "command": command,
        "quick": args.quick,
        "pinned_cpu": cpu,
        "repeat": args.repeat,
        "load_average_before_after": [load_before, _load_average()],
        "machine": machine,
        "cases": records,
    }
    merged = report.merge_results(out, results)
    report.write_results(out, merged)

    print()
    report.print_report(results)
    print(f"results: {os.path.relpath(out)}")

    if args.compare is not None:
        previous = Path(args.compare) if args.compare else report.previous_results(out, args.quick)
        print()
        if previous is None or not previous.exists():
            print("compare: no earlier results file")
        else:
            earlier = report.load_results(previous)
            print(f"change against {os.path.relpath(previous)} ({earlier.get('date')}):")
            if bool(earlier.get("quick")) != args.quick:
                print("note: one of the two is a --quick run; sizes differ")
            print(report.compare_table(earlier, results))
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
