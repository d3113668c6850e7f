"""Bit-identity check for performance work: a hash of every result table of many scenarios.

    python -m benchmarks.fingerprint --out before.json    # before an optimisation
    python -m benchmarks.fingerprint --check before.json  # after: every hash must match
    python -m benchmarks.fingerprint --list               # the scenarios it runs

An optimisation of the hot path must not change any result, not even in the last bit. For each
scenario below (every bundled scenario cut to 60 s of arrivals, every policy of the Aegaeon and
VTC studies, the benchmark scenarios cut short, the stepwise engine and token times on some) it
hashes the raw bytes of every column of the ``requests``, ``instances``, ``tenants`` and
``timeline`` tables, the token times and the summary (all keys but ``wall_seconds``). The event
count is part of the summary, so a change in the event structure shows too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cases import ROOT, SHARED

#: ``(label, scenario path relative to the repository root, overrides)``.
Point = tuple[str, str, dict[str, Any]]

_FIG11 = "scenarios/aegaeon/fig11.yaml"
_VTC_REAL = "scenarios/vtc/real.yaml"
_VTC_TRACE = SHARED / "data" / "vtc" / "real_trace.csv"


def points() -> list[Point]:
    """Every scenario the fingerprint covers (deterministic order)."""
    out: list[Point] = []
    for path in sorted((ROOT / "scenarios").rglob("*.yaml")):
        if "golden" in path.parts:
            continue
        rel = str(path.relative_to(ROOT))
        out.append((rel, rel, {"duration": 60.0}))
    for models in (16, 48, 80):
        for policy in ("aegaeon", "serverlessllm", "serverlessllm+", "muxserve", "fcfs"):
            if policy == "muxserve" and models > 32 or policy == "fcfs" and models > 16:
                continue
            out.append((f"fig11/{policy}/{models}", _FIG11,
                        {"workload.models": models, "policy.name": policy}))
    fair = ("fcfs", "rpm", "vtc", "lcf", "vtc-oracle", "vtc-predict", "equinox")
    for policy in fair:
        over: dict[str, Any] = {"policy.name": policy}
        if _VTC_TRACE.exists():
            over["workload.trace"] = str(_VTC_TRACE)
        out.append((f"vtc-real/{policy}", _VTC_REAL, over))
    out += [
        ("fcfs-100k/200s", "benchmarks/scenarios/fcfs-100k.yaml", {"duration": 200.0}),
        ("fcfs-100k/200s/ox2", "benchmarks/scenarios/fcfs-100k.yaml",
         {"duration": 200.0, "workload.output_scale": 2}),
        ("scale-1m/20s", "benchmarks/scenarios/scale-1m.yaml", {"duration": 20.0}),
        ("fcfs-100k/60s/token-times", "benchmarks/scenarios/fcfs-100k.yaml",
         {"duration": 60.0, "outputs.token_times": True}),
        ("fig11/aegaeon/48/token-times", _FIG11,
         {"workload.models": 48, "outputs.token_times": True}),
        ("fig11/aegaeon/48/stepwise", _FIG11,
         {"workload.models": 48, "engine.mode": "stepwise", "duration": 60.0}),
        ("fig11/serverlessllm+/48/stepwise", _FIG11,
         {"workload.models": 48, "policy.name": "serverlessllm+", "engine.mode": "stepwise",
          "duration": 60.0}),
        ("fcfs-100k/30s/stepwise", "benchmarks/scenarios/fcfs-100k.yaml",
         {"duration": 30.0, "engine.mode": "stepwise", "outputs.token_times": True}),
    ]
    return out


def _hash_frame(frame: Any) -> str:
    h = hashlib.sha256()
    h.update(repr(list(frame.columns)).encode())
    for col in frame.columns:
        series = frame[col]
        h.update(str(series.dtype).encode())
        if hasattr(series, "cat"):
            h.update(repr(list(series.cat.categories)).encode())
            values = np.asarray(series.cat.codes)
        else:
            values = series.to_numpy()
        if values.dtype == object:
            h.update(repr(values.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def fingerprint(path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Hashes of one run's tables, token times and summary."""
    import servesim

    over = dict(overrides)
    if "duration" in over:
        full = servesim.load_scenario(ROOT / path, overrides={
            k: v for k, v in over.items() if k != "duration"})
        over["duration"] = min(float(over["duration"]), full.duration)
    result = servesim.simulate(servesim.load_scenario(ROOT / path, overrides=over))
    summary = {k: v for k, v in result.summary.items() if k != "wall_seconds"}
    out = {
        "summary": hashlib.sha256(repr(sorted(summary.items())).encode()).hexdigest()[:16],
        "requests": _hash_frame(result.requests),
        "instances": _hash_frame(result.instances),
        "tenants": _hash_frame(result.tenants),
        "timeline": _hash_frame(result.timeline),
        "events": int(result.summary["events"]),
        "requests_total": int(result.summary["requests_total"]),
    }
    if result.token_times is not None:
        h = hashlib.sha256()
        for t in result.token_times:
            h.update(np.ascontiguousarray(t).tobytes())
        out["token_times"] = h.hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fingerprint")
    parser.add_argument("--out", type=Path, help="write the fingerprints here (JSON)")
    parser.add_argument("--check", type=Path, help="compare with this earlier file")
    parser.add_argument("--only", help="labels containing this text")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    selected = [p for p in points() if not args.only or args.only in p[0]]
    if args.list:
        for label, path, over in selected:
            print(f"{label}: {path} {over}")
        return 0
    old = json.loads(args.check.read_text()) if args.check else None
    results: dict[str, Any] = {}
    bad = 0
    t0 = time.perf_counter()
    for label, path, over in selected:
        try:
            results[label] = fingerprint(path, over)
        except Exception as exc:  # noqa: BLE001 - a scenario that fails is a fingerprint too
            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
        if old is not None:
            before = old.get(label)
            same = before == results[label]
            if not same:
                bad += 1
                diff = [k for k in results[label] if before is None
                        or before.get(k) != results[label][k]]
                print(f"DIFFERENT {label}: {', '.join(diff)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"{len(results)} scenarios in {time.perf_counter() - t0:.0f} s"
          + (f"; {bad} differ" if old is not None else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
