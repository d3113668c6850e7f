"""Reproduce the VTC paper's fairness table on the scenarios of this folder.

    python scenarios/vtc/reproduce.py                       # every suite x fcfs, lcf, vtc
    python scenarios/vtc/reproduce.py --suites real --policies fcfs,lcf,vtc,rpm \\
        --set workload.trace=../shared/data/vtc/real_trace.csv
    python scenarios/vtc/reproduce.py --suites overload --policies vtc,equinox --jobs 2
    python scenarios/vtc/reproduce.py --figures docs/figures \
        --set workload.trace=../shared/data/vtc/real_trace.csv       # the docs' figures

Prints one Markdown row per (suite, policy): the VTC table metric (Max Diff, Avg Diff, Diff
Var; ``servesim.fairness.vtc_table_metric``), the paper's throughput (input + output tokens of
the requests that got a token, / time to the last finish), the output-token throughput of the
summary, Jain's index and the median TTFT. A policy given as ``rpm:5`` sets
``policy.limit=5``; ``name:k=v`` pairs (separated by ``;``) set other policy parameters
(``vtc-oracle:predict_range=0.5``, ``equinox:alpha=0.9;beta=0.1``).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUITES = ["overload", "overload-multi", "overload-weighted", "proportional", "on_off_less",
          "on_off_overload", "poisson_short_long", "poisson_short_long_2", "increase",
          "dist_shift"]


def _policy_overrides(policy: str) -> dict[str, Any]:
    name, _, rest = policy.partition(":")
    out: dict[str, Any] = {"policy.name": name}
    for item in filter(None, rest.split(",")):
        if "=" in item:
            key, value = item.split("=", 1)
            out[f"policy.{key}"] = value
        elif name == "rpm":
            out["policy.limit"] = item
    return out


def run_one(suite: str, policy: str, sets: dict[str, Any]) -> dict[str, Any]:
    """Simulate one suite with one policy; the row of the table."""
    from servesim import load_scenario, simulate
    from servesim.fairness import vtc_table_metric

    overrides = {**sets, **_policy_overrides(policy.replace(";", ","))}
    scenario = load_scenario(HERE / f"{suite}.yaml", overrides=overrides)
    result = simulate(scenario)
    frame = result.requests
    duration = scenario.duration
    table = vtc_table_metric(frame, duration, warmup=min(30.0, duration / 4.0))
    served = frame[frame["first_token"].notna()]
    span = float(result.summary["sim_seconds"])
    tokens = float((served["input_len"] + served["generated"]).sum())
    return {
        "suite": suite, "policy": policy, "max": table["max"], "avg": table["avg"],
        "var": table["var"], "throughput": tokens / span if span else 0.0,
        "output_tps": result.summary["throughput_tokens_per_s"],
        "jain": result.summary["jain_index"],
        "ttft_p50": result.summary["ttft_p50"],
        "rejected": int((frame["status"] == "rejected").sum()),
        "wall": result.summary["wall_seconds"],
    }


def figures(out: Path, sets: dict[str, Any]) -> int:
    """overload: service rates (FCFS, VTC); overload-multi: service difference; real: the
    table metric per tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from servesim import load_scenario, simulate
    from servesim.fairness import plot_service_difference, plot_service_rates, vtc_table_metric

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, policy in zip(axes, ("fcfs", "vtc"), strict=True):
        scenario = load_scenario(HERE / "overload.yaml", overrides={"policy.name": policy})
        plot_service_rates(simulate(scenario).requests, scenario.duration, ax=ax,
                           title=f"overload, {policy}")
    fig.tight_layout()
    fig.savefig(out / "vtc-overload-service-rate.png", dpi=110)
    frames = {}
    for policy in ("fcfs", "vtc", "vtc-predict", "equinox"):
        scenario = load_scenario(HERE / "overload-multi.yaml", overrides={"policy.name": policy})
        frames[policy] = simulate(scenario).requests
    ax = plot_service_difference(frames, 360.0, title="overload-multi: service difference")
    ax.figure.tight_layout()
    ax.figure.savefig(out / "vtc-overload-multi-service-difference.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for policy in ("fcfs", "lcf", "vtc", "rpm:5"):
        real_sets = {k: v for k, v in sets.items() if k == "workload.trace"}
        scenario = load_scenario(HERE / "real.yaml",
                                 overrides={**real_sets, **_policy_overrides(policy)})
        table = vtc_table_metric(simulate(scenario).requests, 600.0)
        ax.plot(table["ticks"], table["values"], marker="o", markersize=3, label=policy)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("service difference (VTC table metric)")
    ax.set_title("real trace" if "workload.trace" in sets else "real trace (synthetic twin)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "vtc-real-table-metric.png", dpi=110)
    print(f"wrote the figures into {out}")
    return 0


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--policies", default="fcfs,lcf,vtc")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--figures", metavar="DIR",
                        help="only write the figures of docs/fairness.md into DIR")
    args = parser.parse_args(argv)
    sets = dict(pair.split("=", 1) for pair in args.set)
    if args.figures:
        return figures(Path(args.figures), sets)
    runs = [(s, p, sets) for s in args.suites.split(",") for p in args.policies.split(",")]
    print("| suite | policy | max diff | avg diff | diff var | throughput (in+out tok/s) "
          "| output tok/s | Jain | TTFT p50 (s) | rejected |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(run_one, *zip(*runs, strict=True)):
            print(f"| {row['suite']} | {row['policy']} | {_fmt(row['max'])} | "
                  f"{_fmt(row['avg'])} | {_fmt(row['var'])} | {_fmt(row['throughput'])} | "
                  f"{_fmt(row['output_tps'])} | {_fmt(row['jain'], 4)} | "
                  f"{_fmt(row['ttft_p50'], 1)} | {row['rejected']} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
