"""Reproduce Aegaeon's comparison (SOSP '25, Figures 11-13) with servesim.

    python scripts/reproduce_aegaeon.py                 # every grid, 3 seeds, all cores
    python scripts/reproduce_aegaeon.py --quick         # 1 seed, coarse grid (a smoke test)
    python scripts/reproduce_aegaeon.py --traces ../shared/data/aegaeon/workloads

Runs ``scenarios/aegaeon/fig11.yaml`` over policies x model counts x rates x seeds (and the
ShareGPT-ox2 / ix2 and SLO-strictness variants), writes every run to
``docs/reproductions/aegaeon-runs.csv``, the attainment curves to
``docs/reproductions/aegaeon-fig11.png`` and rewrites the generated block of
``docs/reproductions/aegaeon.md`` (between its ``results`` markers) with the tables: SLO
attainment per model count and the goodput points (the largest model count whose mean
attainment, and that of every smaller count, is >= 90 %). With ``--traces`` the Aegaeon
artifact's own workload files (``synth-{models}-{rate}-{in}-{out}.csv``) are also replayed, one
run per point.

Durations follow the artifact's workloads: 120 s of arrivals at 0.1 req/s, 60 s at 0.5 req/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "aegaeon" / "fig11.yaml"
OUT = ROOT / "docs" / "reproductions"
POLICIES = ("aegaeon", "serverlessllm", "serverlessllm+", "muxserve", "fcfs")
GOAL = 0.9

#: (name, rate, input scale, output scale, SLO scale, {policy: model counts})
Grid = tuple[str, float, float, float, float, dict[str, list[int]]]


def grids(quick: bool) -> list[Grid]:
    """The paper's grids (16-80 models at 0.1 req/s, 8-48 at 0.5), extended for aegaeon until
    it falls below the goal (so that its goodput point, and the ratio, are measured)."""
    step = 16 if quick else 4

    def span(lo: int, hi: int) -> list[int]:
        return list(range(lo, hi + 1, step))

    lo, lo_ext = span(16, 80), span(16, 120)
    hi, hi_ext = span(8, 48), span(8, 80)
    strict, strict_ext = span(4, 80), span(4, 120)
    three = ("serverlessllm", "serverlessllm+")
    out: list[Grid] = []
    for rate, base, ext in ((0.1, lo, lo_ext), (0.5, hi, hi_ext)):
        main = {"aegaeon": ext, **dict.fromkeys(("serverlessllm", "serverlessllm+",
                                                 "muxserve", "fcfs"), base)}
        out.append(("sharegpt", rate, 1.0, 1.0, 1.0, main))
        variant = {"aegaeon": ext, **dict.fromkeys(three, base)}
        out.append(("sharegpt-ox2", rate, 1.0, 2.0, 1.0, variant))
        out.append(("sharegpt-ix2", rate, 2.0, 1.0, 1.0, variant))
    for scale in (0.5, 0.3, 0.2):
        out.append((f"slo-{scale:g}x", 0.1, 1.0, 1.0, scale,
                    {"aegaeon": strict_ext, "serverlessllm": strict, "muxserve": strict}))
    return out


#: One-knob departures from the defaults at 0.1 req/s (generated arrivals): label, policy,
#: overrides, model counts. They show how far the conclusions move with the uncertain inputs.
SENSITIVITY: list[tuple[str, str, dict[str, Any], list[int]]] = [
    ("default", "aegaeon", {}, [64, 80, 96]),
    ("KV moves at 0.03125 ms/token (Aegaeon's simulator)", "aegaeon",
     {"switching.kv_seconds_per_token": 3.125e-5}, [64, 80, 96]),
    ("dispatch: artifact", "aegaeon", {"policy.dispatch": "artifact"}, [64, 80, 96]),
    ("no prefetch", "aegaeon", {"switching.prefetch": False}, [64, 80, 96]),
    ("stage T2 (0.35 s fixed)", "aegaeon", {"switching.stage": "T2"}, [64, 80, 96]),
    ("default", "serverlessllm", {}, [32, 48, 64]),
    ("loader + 0.9 s engine start (T1 fixed part)", "serverlessllm",
     {"policy.loader_fixed_seconds": 0.9}, [32, 48, 64]),
    ("scenario switching model (T3 over PCIe, no loader)", "serverlessllm",
     {"policy.loader_bandwidth": None}, [32, 48, 64]),
    ("default", "serverlessllm+", {}, [48, 64, 80]),
    ("preempt: true", "serverlessllm+", {"policy.preempt": True}, [48, 64, 80]),
]


def runnable(policy: str, models: int) -> bool:
    """fcfs pins a model per GPU (<= 16 models), muxserve places <= 2 per GPU (<= 32)."""
    return not ((policy == "fcfs" and models > 16) or (policy == "muxserve" and models > 32))


def run_point(point: dict[str, Any]) -> dict[str, Any]:
    from servesim import load_scenario, simulate

    overrides: dict[str, Any] = {
        "policy.name": point["policy"],
        "workload.rate": point["rate"],
        "workload.input_scale": point["input_scale"],
        "workload.output_scale": point["output_scale"],
        "slo.scale": point["slo_scale"],
        "duration": 120.0 if point["rate"] <= 0.1 else 60.0,
    }
    overrides.update(point.get("extra") or {})
    if point.get("trace"):
        overrides["workload.trace"] = point["trace"]
        overrides["duration"] = 1e6
        overrides["workload.input_scale"] = 1.0  # the trace file is already scaled
        overrides["workload.output_scale"] = 1.0
    else:
        overrides["workload.models"] = point["models"]
    scenario = load_scenario(SCENARIO, overrides=overrides, seed=point["seed"])
    wall = time.perf_counter()
    res = simulate(scenario)
    s = res.summary
    return {
        **point,
        "requests": s["requests_total"],
        "failed": s["requests_failed"],
        "slo_attainment": round(float(s["slo_attainment"]), 5),
        "slo_met_fraction": round(float(s["slo_met_fraction"]), 5),
        "ttft_p99": s["ttft_p99"],
        "switches": s["switches"],
        "switch_seconds": round(float(s["switch_seconds"]), 3),
        "wall_seconds": round(time.perf_counter() - wall, 3),
    }


FIELDS = ["variant", "label", "extra", "policy", "rate", "models", "input_scale",
          "output_scale", "slo_scale", "seed", "trace", "requests", "failed", "slo_attainment",
          "slo_met_fraction", "ttft_p99", "switches", "switch_seconds", "wall_seconds"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier aegaeon-runs.csv (to rerun one part only)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = dict(r)
            for key in ("rate", "input_scale", "output_scale", "slo_scale", "slo_attainment",
                        "slo_met_fraction"):
                row[key] = float(row[key])
            for key in ("models", "seed"):
                row[key] = int(row[key])
            row["extra"] = json.loads(row["extra"]) if row.get("extra") else None
            row["trace"] = row.get("trace") or None
            rows.append(row)
    return rows


def goodput(curve: dict[int, float]) -> int:
    """Largest model count whose attainment, and that of every smaller count, is >= GOAL."""
    best = 0
    for n in sorted(curve):
        if curve[n] < GOAL:
            break
        best = n
    return best


def trace_file(traces: Path, models: int, rate: float, ins: float, outs: float) -> Path | None:
    path = traces / f"synth-{models}-{rate:g}-{ins:.1f}-{outs:.1f}.csv"
    return path if path.is_file() else None


def markdown(rows: list[dict[str, Any]], with_traces: bool) -> str:
    """The generated block of docs/reproductions/aegaeon.md."""
    curves: dict[tuple[str, float, str, str], dict[int, list[float]]] = defaultdict(
        lambda: defaultdict(list))
    for r in rows:
        if r["variant"] == "sensitivity":
            continue
        src = "trace" if r.get("trace") else "generated"
        curves[(r["variant"], float(r["rate"]), src, r["policy"])][int(r["models"])].append(
            float(r["slo_attainment"]))
    lines: list[str] = []
    sources = ("generated", "trace") if with_traces else ("generated",)
    lines.append("### Goodput points (largest model count with SLO attainment >= 90 %)\n")
    lines.append("| workload | rate (req/s per model) | source | "
                 + " | ".join(POLICIES) + " | aegaeon / serverlessllm |")
    lines.append("|---|---|---|" + "---|" * (len(POLICIES) + 1))
    keys = sorted({(k[0], k[1], k[2]) for k in curves},
                  key=lambda k: (k[0] != "sharegpt", k[0], k[1], k[2]))
    for variant, rate, src in keys:
        if src not in sources:
            continue
        cells = []
        gp: dict[str, int] = {}
        for pol in POLICIES:
            curve = curves.get((variant, rate, src, pol))
            if not curve:
                cells.append("–")
                continue
            mean = {n: sum(v) / len(v) for n, v in curve.items()}
            gp[pol] = goodput(mean)
            top = max(mean)
            mark = "+" if gp[pol] == top else ""  # never fell below the goal in the grid
            cells.append(f"{gp[pol]}{mark}")
        ratio = "–"
        if gp.get("serverlessllm"):
            ratio = f"{gp.get('aegaeon', 0) / gp['serverlessllm']:.2f}x"
        lines.append(f"| {variant} | {rate:g} | {src} | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    lines.append("`N+`: attainment stayed >= 90 % up to the largest count run (the policy's "
                 "limit: 16 for fcfs, 32 for muxserve, or the end of the grid).\n")
    for variant, rate, src in keys:
        if src not in sources:
            continue
        counts = sorted({n for pol in POLICIES
                         for n in curves.get((variant, rate, src, pol), {})})
        lines.append(f"#### {variant}, {rate:g} req/s per model ({src} arrivals): mean SLO "
                     "attainment\n")
        lines.append("| models | " + " | ".join(POLICIES) + " |")
        lines.append("|---|" + "---|" * len(POLICIES))
        for n in counts:
            cells = []
            for pol in POLICIES:
                v = curves.get((variant, rate, src, pol), {}).get(n)
                cells.append(f"{sum(v) / len(v):.3f}" if v else "–")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    sens: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["variant"] == "sensitivity":
            sens[(r["policy"], r["label"])][int(r["models"])].append(float(r["slo_attainment"]))
    if sens:
        lines.append("#### Sensitivity: one knob changed, 0.1 req/s per model (generated "
                     "arrivals), mean SLO attainment\n")
        lines.append("| policy | change | attainment at N models |")
        lines.append("|---|---|---|")
        for label, pol, _extra, _counts in SENSITIVITY:
            curve = sens.get((pol, label))
            if not curve:
                continue
            cells = ", ".join(f"{n}: {sum(v) / len(v):.3f}" for n, v in sorted(curve.items()))
            lines.append(f"| {pol} | {label} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("sharegpt", 0.1), ("sharegpt", 0.5), ("sharegpt-ox2", 0.1),
              ("sharegpt-ix2", 0.1), ("slo-0.5x", 0.1), ("slo-0.2x", 0.1)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=True)
    colors = {pol: f"C{k}" for k, pol in enumerate(POLICIES)}
    for ax, (variant, rate) in zip(axes.flat, panels, strict=True):
        for pol in POLICIES:
            pts: dict[int, list[float]] = defaultdict(list)
            for r in rows:
                if (r["variant"], float(r["rate"]), r["policy"]) == (variant, rate, pol) \
                        and not r.get("trace"):
                    pts[int(r["models"])].append(float(r["slo_attainment"]))
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", ms=3,
                        label=pol, color=colors[pol])
        ax.axhline(GOAL, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{variant}, {rate:g} req/s per model")
        ax.set_xlabel("models")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("SLO attainment")
    axes[1][0].set_ylabel("SLO attainment")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("servesim: Aegaeon Fig. 11-13 setting (16 x H800, TTFT 10 s, TBT 100 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, coarse grids")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--traces", type=Path, help="folder of the artifact's synth-*.csv files")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", choices=("grids", "sensitivity"),
                    help="rerun one part, keeping the other's rows from the existing CSV")
    ap.add_argument("--from-csv", action="store_true",
                    help="run nothing: redraw the figure and tables from the existing CSV")
    args = ap.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    points: list[dict[str, Any]] = []
    if args.only != "grids":
        for label, pol, extra, counts in SENSITIVITY:
            for n in counts:
                points += [{"variant": "sensitivity", "label": label, "extra": extra,
                            "policy": pol, "rate": 0.1, "models": n, "input_scale": 1.0,
                            "output_scale": 1.0, "slo_scale": 1.0, "seed": s}
                           for s in range(seeds)]
    for variant, rate, ins, outs, slo, per_policy in (
            grids(args.quick) if args.only != "sensitivity" else []):
        for pol, counts in per_policy.items():
            for n in counts:
                if not runnable(pol, n):
                    continue
                base = {"variant": variant, "policy": pol, "rate": rate, "models": n,
                        "input_scale": ins, "output_scale": outs, "slo_scale": slo}
                points += [{**base, "seed": s} for s in range(seeds)]
                if args.traces is not None and slo == 1.0:
                    path = trace_file(args.traces, n, rate, ins, outs)
                    if path is not None:
                        points.append({**base, "seed": 0, "trace": str(path.resolve())})
    # longest first keeps the pool busy to the end
    points.sort(key=lambda p: -p["models"] * p["rate"] * (1 + p["output_scale"]))
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.from_csv:
        points = []
        rows = read_rows(args.out / "aegaeon-runs.csv")
    elif args.only is not None:
        rows = [r for r in read_rows(args.out / "aegaeon-runs.csv")
                if (r["variant"] == "sensitivity") != (args.only == "sensitivity")]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for k, row in enumerate(pool.map(run_point, points, chunksize=1), 1):
            rows.append(row)
            if k % 25 == 0 or k == len(points):
                print(f"{k}/{len(points)} runs, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
    rows.sort(key=lambda r: (r["variant"], r["rate"], r["policy"], r.get("label") or "",
                             r["models"], bool(r.get("trace")), r["seed"]))
    args.out.mkdir(parents=True, exist_ok=True)
    fields = FIELDS
    with open(args.out / "aegaeon-runs.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "trace": Path(r["trace"]).name if r.get("trace") else "",
                             "label": r.get("label") or "",
                             "extra": json.dumps(r["extra"]) if r.get("extra") else ""})
    plot(rows, args.out / "aegaeon-fig11.png")
    block = markdown(rows, args.traces is not None)
    doc = args.out / "aegaeon.md"
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    generated = (f"{begin}\n<!-- generated by scripts/reproduce_aegaeon.py"
                 f"{' --quick' if args.quick else ''}; do not edit -->\n\n{block}\n{end}")
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _m: generated, text,
                      flags=re.S)
    else:
        text += "\n" + generated + "\n"
    doc.write_text(text, encoding="utf-8")
    print(block)
    print(f"{len(rows)} runs in {time.perf_counter() - t0:.0f} s; wrote {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
