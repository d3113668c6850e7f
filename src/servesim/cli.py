"""The ``servesim`` command line: argument parsing and file output only.

Every user mistake (bad scenario, trace, profile, flag) is printed as one line on stderr,
``servesim: error: ...``, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from servesim.engine.checks import InvariantError
from servesim.engine.instance import EngineError
from servesim.errors import ServesimError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"servesim: error: {message} (see '{self.prog} --help')\n")


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ServesimError(f"--set {pair!r}: expected path.to.field=value")
        out[key.strip()] = value
    return out


def _tp(text: str) -> int:
    """``--tp``: GPUs per instance, 1..64 (the bounds of ``cluster[].tp``)."""
    try:
        tp = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= tp <= 64:
        raise argparse.ArgumentTypeError(f"must be >= 1 and <= 64, got {tp}")
    return tp


def _prepare_out(out: str) -> None:
    """Create the ``--out`` folder before the run, so an unusable path fails fast."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServesimError(f"--out {out}: cannot create folder ({exc.strerror or exc})") from None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """The summary as an aligned two-column table."""
    width = max(len(k) for k in summary)
    lines = [title] if title else []
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in summary.items()]
    return "\n".join(lines)


class _Progress:
    """Progress on stderr for long runs (only when stderr is a terminal, or forced)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.5 and done < total):
            return
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / done * (total - done) if done else 0.0
        sys.stderr.write(f"\r  arrivals {done}/{total} ({100 * done / total:.0f} %), "
                         f"{elapsed:.1f} s elapsed, ~{eta:.0f} s to go   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")


def cmd_run(args: argparse.Namespace) -> int:
    from servesim.scenario import load_scenario
    from servesim.simulate import simulate

    overrides = _parse_sets(args.set)
    if args.check:
        overrides["engine.check"] = True
    if args.engine:
        overrides["engine.mode"] = args.engine
    scenario = load_scenario(args.scenario, overrides=overrides, seed=args.seed)
    if args.out:
        _prepare_out(args.out)
    progress = _Progress(enabled=(not args.quiet) and (args.progress or sys.stderr.isatty()))
    result = simulate(scenario, progress=progress)
    progress.close()
    if args.out:
        try:
            result.save(args.out)
        except OSError as exc:
            raise ServesimError(f"--out {args.out}: cannot write ({exc})") from None
    if args.json:
        print(json.dumps(result.summary, indent=2))
    elif not args.quiet:
        print(format_summary(result.summary, f"servesim: {scenario.name} "
                             f"(policy {scenario.policy.name}, seed {scenario.seed})"))
        if result.stop_reason != "drained":
            print(f"  note: run stopped early ({result.stop_reason}); open requests counted "
                  "as unfinished/failed")
        if args.out:
            print(f"  wrote {args.out}/summary.json, requests/instances/tenants/timeline.parquet,"
                  " scenario.yaml")
    return 0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


class _SweepBar:
    """Sweep progress on stderr: a bar on a terminal, a line every 10 s otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def __call__(self, p: Any) -> None:
        now = time.perf_counter()
        if not self.enabled or not p.total or (
                now - self.last < (0.2 if self.tty else 10.0) and 0 < p.done < p.total):
            return
        self.last = now
        filled = round(24 * p.done / p.total)
        eta = _duration(p.eta) if p.eta is not None else "--"
        text = (f"  [{'#' * filled}{'.' * (24 - filled)}] {p.done}/{p.total} done, "
                f"{p.failed} failed, {_duration(p.elapsed)} elapsed, ETA {eta}")
        sys.stderr.write(f"\r{text}   " if self.tty else text + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.enabled and self.tty and self.shown:
            sys.stderr.write("\n")
            self.shown = False


def _print_sweep_table(table: Any, grid_keys: list[str]) -> None:
    metrics = ["slo_attainment", "goodput_rps", "ttft_p99", "tbt_p99"]
    table = table.assign(ok=table["status"] == "ok")
    groups = table.groupby(grid_keys, sort=False, dropna=False)
    agg = groups[metrics].mean().join(groups["ok"].agg(["sum", "count"]))
    header = [*grid_keys, "seeds ok", *(f"mean {m}" for m in metrics)]
    lines = []
    for index, row in agg.head(60).iterrows():
        values = index if isinstance(index, tuple) else (index,)
        lines.append([*(_fmt(v) for v in values), f"{int(row['sum'])}/{int(row['count'])}",
                      *(_fmt(None if row[m] != row[m] else float(row[m])) for m in metrics)])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for line in lines:
        print("  " + "  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)))
    if len(agg) > 60:
        print(f"  ... {len(agg) - 60} more points")


def cmd_sweep(args: argparse.Namespace) -> int:
    from servesim.sweep import RESULTS_FILE, parse_axis, run_sweep

    grid: dict[str, list[Any]] = {}
    for text in args.grid:
        key, values = parse_axis(text)
        if key in grid:
            raise ServesimError(f"--grid {key}: given twice (list every value in one --grid)")
        grid[key] = values
    sets = _parse_sets(args.set)
    for key in grid:
        if key in sets:
            raise ServesimError(f"--grid {key}: also given with --set (use one of them)")
    if args.workers is not None and args.dask not in (None, "local"):
        raise ServesimError("--workers: only with --dask local (a Dask cluster has its own "
                            "workers)")
    out = args.out or str(Path("sweeps") / Path(args.scenario).stem)
    bar = _SweepBar(enabled=not args.quiet)
    started = [False]

    def progress(p: Any) -> None:
        if not started[0] and not args.quiet:
            started[0] = True
            skipped = f", {p.skipped} already done" if p.skipped else ""
            print(f"sweep: {p.total + p.skipped} runs ({len(grid)} grid keys, {args.seeds} "
                  f"seed{'s' if args.seeds > 1 else ''} per point){skipped} -> "
                  f"{out}/{RESULTS_FILE}", file=sys.stderr)
        bar(p)

    t0 = time.perf_counter()
    try:
        table = run_sweep(args.scenario, grid, seeds=args.seeds, sets=sets, out=out,
                          workers=args.workers, dask=args.dask, dask_timeout=args.dask_timeout,
                          resume=args.resume, overwrite=args.overwrite, progress=progress)
    except KeyboardInterrupt:
        bar.close()
        print(f"servesim: interrupted; finished runs are in {out}/{RESULTS_FILE} (continue "
              "with --resume)", file=sys.stderr)
        return 130
    bar.close()
    failed = table[table["status"] != "ok"]
    if not args.quiet:
        print(f"servesim sweep: {len(table)} rows ({len(table) - len(failed)} ok, "
              f"{len(failed)} failed) in {out}/{RESULTS_FILE}, "
              f"{_duration(time.perf_counter() - t0)}")
        _print_sweep_table(table, list(grid))
        for _, row in failed.head(5).iterrows():
            where = ", ".join(f"{k}={row[k]}" for k in grid)
            print(f"  failed: {where}, seed {row['seed']}: {row['error']}")
        if len(failed) > 5:
            print(f"  ... {len(failed) - 5} more failed rows (see the error column)")
    return 0


def _parse_vary(text: str) -> tuple[str, float, float]:
    key, sep, rest = text.partition("=")
    lo_text, colon, hi_text = rest.partition(":")
    try:
        if not sep or not key.strip() or not colon:
            raise ValueError
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise ServesimError(f"--vary {text!r}: expected KEY=LO:HI with numbers LO < HI, e.g. "
                            "workload.rate=0.5:16") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ServesimError(f"--vary {text}: LO must be < HI (finite numbers)")
    return key.strip(), lo, hi


def cmd_goodput(args: argparse.Namespace) -> int:
    from servesim.sweep import goodput

    key, lo, hi = _parse_vary(args.vary)
    count = [0]

    def show(point: Any) -> None:
        count[0] += 1
        seeds = ", ".join(f"{v:.4g}" for v in point.per_seed)
        if not args.json:
            print(f"  [{count[0]}] {key}={point.value:<8g} {args.metric}={point.metric:.4g}  "
                  f"{'meets' if point.meets else 'misses'}"
                  + (f"  (seeds: {seeds})" if len(point.per_seed) > 1 else ""), flush=True)

    if not args.json:
        print(f"goodput: largest {key} in [{lo:g}, {hi:g}] with {args.metric} >= "
              f"{args.target:g} (mean of {args.seeds} seed{'s' if args.seeds > 1 else ''})")
    result = goodput(args.scenario, key, lo, hi, target=args.target, metric=args.metric,
                     seeds=args.seeds, integer=True if args.integer else None, tol=args.tol,
                     sets=_parse_sets(args.set), workers=args.workers, dask=args.dask,
                     dask_timeout=args.dask_timeout, on_point=show)
    for warning in result.warnings:
        print(f"servesim: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"key": key, "metric": args.metric, "target": args.target,
                          "best": result.best, "bound": result.bound,
                          "points": [{"value": p.value, "metric": p.metric,
                                      "per_seed": list(p.per_seed), "meets": p.meets}
                                     for p in result.points],
                          "warnings": result.warnings}, indent=2))
    elif result.best is None:
        print(f"goodput: none: {args.metric} misses {args.target:g} already at {key}={lo:g} "
              "(lower LO)")
    elif result.bound is None:
        print(f"goodput: {key} >= {result.best:g}: the target is still met at HI (raise HI)")
    else:
        print(f"goodput: {key} = {result.best:g} ({result.bound:g} misses the target; "
              f"{len(result.points)} points evaluated)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from servesim.plots import load_results, plot_results
    from servesim.scenario import parse_value

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ServesimError(f"--out {args.out}: expected a .png, .svg or .pdf file name")
    where = {}
    for pair in args.where:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ServesimError(f"--where {pair!r}: expected KEY=VALUE")
        where[key.strip()] = parse_value(value)
    table = load_results(args.results)
    fig = plot_results(table, args.x, args.y, hue=args.hue, col=args.col, target=args.target,
                       where=where, title=args.title)
    if out is None:
        folder = Path(args.results) if Path(args.results).is_dir() else Path(args.results).parent
        out = folder / f"{args.y}-vs-{args.x}.png"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=args.dpi)
    except OSError as exc:
        raise ServesimError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}")
    return 0


def cmd_profiles_list(args: argparse.Namespace) -> int:
    from servesim.latency import list_profiles

    rows = list_profiles()
    print(f"{'gpu':<6} {'model':<20} {'tp':>2} {'r2 prefill':>10} {'r2 decode':>10}  source")
    for p in rows:
        r2p, r2d = p.r2.get("prefill"), p.r2.get("decode")
        print(f"{p.gpu:<6} {p.model:<20} {p.tp:>2} {_fmt(r2p):>10} {_fmt(r2d):>10}  {p.source}")
    return 0


def cmd_profiles_show(args: argparse.Namespace) -> int:
    from servesim.hardware import get_gpu, get_model
    from servesim.latency import load_profile, roofline_decode_b

    gpu = get_gpu(args.gpu)
    model = get_model(args.model)
    prof = load_profile(gpu, model, args.tp)
    doc = prof.to_dict()
    doc["C"] = prof.c_constants(model)
    doc["roofline_decode_b"] = roofline_decode_b(gpu, model, args.tp)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"{prof.gpu} / {prof.model} (TP={prof.tp})  source: {prof.source}")
    p, d = prof.prefill, prof.decode
    print(f"  prefill: T = {p.a * 1e3:.3f} ms + {p.b * 1e6:.3f} us * t + {p.c * 1e9:.4f} ns * t2"
          f"   (R2 {_fmt(prof.r2.get('prefill'))}, MAPE {_fmt(prof.mape.get('prefill'))})")
    print(f"  decode:  T = {d.a * 1e3:.3f} ms + {d.b * 1e9:.2f} ns * ctx + {d.c * 1e6:.2f} us * B"
          f"   (R2 {_fmt(prof.r2.get('decode'))}, MAPE {_fmt(prof.mape.get('decode'))})")
    print(f"  roofline decode b: {doc['roofline_decode_b'] * 1e9:.2f} ns/token")
    print("  " + "  ".join(f"{k}={v:.4g}" for k, v in doc["C"].items()))
    print(f"  prefill of 512 tokens: {(p.a + p.b * 512 + p.c * 512 ** 2) * 1e3:.1f} ms;"
          f" decode step B=32, ctx 1000: {(d.a + d.b * 32000 + d.c * 32) * 1e3:.1f} ms")
    return 0


def cmd_profiles_fit(args: argparse.Namespace) -> int:
    from servesim.fitting import fit_profile, save_profile

    report = fit_profile(args.dir, args.gpu, args.model, token_cap=args.token_cap,
                         decode_context=args.decode_context)
    for w in report.warnings:
        print(f"servesim: warning: {w}", file=sys.stderr)
    if args.out:
        save_profile(report.profile, args.out)
        print(f"wrote {args.out}")
    else:
        import yaml

        print(yaml.safe_dump(report.profile.to_dict(), sort_keys=False), end="")
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    from servesim.regress import format_report, run_suite

    if args.rtol < 0:
        raise ServesimError(f"--rtol {args.rtol}: must be >= 0")
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    report = run_suite(args.suite, args.golden, update=args.update, rtol=args.rtol, only=only)
    print(format_report(report, update=args.update))
    return 0 if (report.ok or args.update) else 1


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = _nonnegative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return value


def cmd_traces_stats(args: argparse.Namespace) -> int:
    from servesim.workload.stats import file_stats, format_stats, trace_stats

    path = Path(args.file)
    if args.format == "scenario" or (args.format == "auto" and path.suffix in (".yaml", ".yml")):
        from servesim.scenario import load_scenario
        from servesim.simulate import prepare

        prep = prepare(load_scenario(path, seed=args.seed))
        table = prep.requests
        stats = trace_stats(table.arrival, table.input_len, table.output_len, table.model,
                            len(prep.deployment.names), args.window)
        stats["format"] = "scenario"
    else:
        if not path.exists():
            raise ServesimError(f"{path}: file not found")
        stats = file_stats(path, args.format, sort=args.sort, window=args.window,
                           start=args.start, duration=args.duration, seed=args.seed or 0)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats, f"{path} ({stats['format']})"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="servesim", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run one simulation of a scenario")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                     help="override a scenario field, e.g. --set workload.rate=0.5")
    run.add_argument("--seed", type=int, help="override the scenario seed")
    run.add_argument("--out", help="write summary.json, Parquet tables and scenario.yaml here")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--engine", choices=("fast", "stepwise"),
                     help="fast-forward decoding (default) or the stepwise reference engine")
    run.add_argument("--check", action="store_true",
                     help="assert the world's invariants after every event (slow)")
    run.add_argument("--quiet", action="store_true", help="print nothing")
    run.add_argument("--progress", action="store_true",
                     help="show progress even when stderr is not a terminal")
    run.set_defaults(func=cmd_run)

    def positive_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
        return value

    def executor_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="override a scenario field for every point")
        p.add_argument("--seeds", type=positive_int, default=1, metavar="K",
                       help="seeds per point: scenario seed + 0 .. K-1 (default 1)")
        p.add_argument("--workers", type=positive_int, metavar="N",
                       help="worker processes (default: all cores; 1: in this process)")
        p.add_argument("--dask", metavar="ADDRESS",
                       help="run on Dask distributed: tcp://host:8786, or 'local' for a "
                            "LocalCluster (needs the dask extra)")
        p.add_argument("--dask-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="give up connecting to --dask after this long (default 10)")

    sw = sub.add_parser("sweep", help="run a grid of scenario variants x seeds in parallel")
    sw.add_argument("scenario", help="scenario YAML file")
    sw.add_argument("--grid", action="append", default=[], required=True,
                    metavar="KEY=V1,V2|START:STOP:STEP",
                    help="a grid axis: values, or a range with STOP included "
                         "(e.g. --grid workload.rate=1:4:1 --grid policy.name=fcfs)")
    executor_flags(sw)
    sw.add_argument("--out", help="folder of results.parquet (default: sweeps/<scenario>)")
    sw.add_argument("--resume", action="store_true",
                    help="continue the sweep in --out: skip runs already ok")
    sw.add_argument("--overwrite", action="store_true",
                    help="replace an existing results file of this sweep")
    sw.add_argument("--quiet", action="store_true", help="no progress and no table")
    sw.set_defaults(func=cmd_sweep)

    gp = sub.add_parser("goodput", help="largest load at which a metric stays above a target")
    gp.add_argument("scenario", help="scenario YAML file")
    gp.add_argument("--vary", required=True, metavar="KEY=LO:HI",
                    help="the knob to search, e.g. workload.rate=0.5:16")
    gp.add_argument("--target", type=float, default=0.9, help="metric threshold (default 0.9)")
    gp.add_argument("--metric", default="slo_attainment",
                    help="summary key, mean over seeds (default slo_attainment)")
    gp.add_argument("--integer", action="store_true",
                    help="integer values only (automatic for integer fields)")
    gp.add_argument("--tol", type=float,
                    help="stop when the bracket is this narrow (default: 1 %% of HI-LO; "
                         "integers: 1)")
    gp.add_argument("--json", action="store_true", help="print the result as JSON")
    executor_flags(gp)
    gp.set_defaults(func=cmd_goodput)

    pl_ = sub.add_parser("plot", help="plot a sweep's results: mean and 95 %% CI over seeds")
    pl_.add_argument("results", help="results.parquet or the sweep folder")
    pl_.add_argument("--x", required=True, help="column on the x axis (a grid key)")
    pl_.add_argument("--y", required=True, help="metric on the y axis (a summary key)")
    pl_.add_argument("--hue", help="one line per value of this column")
    pl_.add_argument("--col", help="one panel per value of this column")
    pl_.add_argument("--target", type=float, help="draw a horizontal target line")
    pl_.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="keep only rows with this value")
    pl_.add_argument("--title", help="figure title")
    pl_.add_argument("--dpi", type=positive_int, default=150, help="PNG resolution (150)")
    pl_.add_argument("--out", help="fig.png, .svg or .pdf (default: <results folder>/"
                                   "<y>-vs-<x>.png)")
    pl_.set_defaults(func=cmd_plot)

    prof = sub.add_parser("profiles", help="list, show or fit GPU x model latency profiles")
    psub = prof.add_subparsers(dest="profiles_command", required=True, parser_class=_Parser)
    pl = psub.add_parser("list", help="list the fitted profiles")
    pl.set_defaults(func=cmd_profiles_list)
    ps = psub.add_parser("show", help="show one profile (fitted or derived)")
    ps.add_argument("gpu")
    ps.add_argument("model")
    ps.add_argument("--tp", type=_tp, default=1, help="GPUs per instance (1..64)")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_profiles_show)
    pf = psub.add_parser("fit", help="fit a profile from vLLM benchmark_latency JSON files")
    pf.add_argument("dir", help="folder of i{input}b{batch}.json files")
    pf.add_argument("--gpu", required=True)
    pf.add_argument("--model", required=True)
    pf.add_argument("--out", help="write the profile YAML here (default: print it)")
    pf.add_argument("--token-cap", type=int, default=4096,
                    help="drop points with input*batch above this (vLLM's step cap)")
    pf.add_argument("--decode-context", choices=("fit", "roofline"), default="fit",
                    help="fit the per-context-token decode coefficient or use the roofline")
    pf.set_defaults(func=cmd_profiles_fit)

    tr = sub.add_parser("traces", help="inspect workload traces before simulating them")
    tsub = tr.add_subparsers(dest="traces_command", required=True, parser_class=_Parser)
    ts = tsub.add_parser(
        "stats", help="count, duration, rate, inter-arrival CV and length percentiles of a trace")
    ts.add_argument("file", help="trace file (a ServeGen folder, or a scenario YAML to check "
                                 "its generated workload)")
    ts.add_argument("--format", default="auto",
                    choices=("auto", "aegaeon", "azure", "mooncake", "vtc", "burstgpt",
                             "servegen", "scenario"),
                    help="trace format (default: detected from the file)")
    ts.add_argument("--json", action="store_true", help="print one JSON object")
    ts.add_argument("--sort", action="store_true", help="sort unsorted rows instead of failing")
    ts.add_argument("--window", type=_positive, metavar="SECONDS",
                    help="also count models active in windows of this length, observed vs "
                         "expected sum(1 - exp(-rate_i * T))")
    ts.add_argument("--start", type=_nonnegative, default=0.0, metavar="SECONDS",
                    help="only arrivals at or after this trace time")
    ts.add_argument("--duration", type=_positive, metavar="SECONDS",
                    help="only arrivals before start + this (ServeGen: span regenerated, "
                         "default 3600)")
    ts.add_argument("--seed", type=int,
                    help="seed of a regenerated ServeGen span or of a scenario (default: 0 / "
                         "the scenario's)")
    ts.set_defaults(func=cmd_traces_stats)

    reg = sub.add_parser("regress", help="compare a scenario suite's metrics with golden files")
    reg.add_argument("--suite", default="scenarios/ci", help="folder of scenario YAML files")
    reg.add_argument("--golden", help="folder of golden JSON files (default: SUITE/golden)")
    reg.add_argument("--update", action="store_true", help="rewrite the golden files")
    reg.add_argument("--rtol", type=float, default=1e-9,
                     help="relative tolerance of float metrics (integers compare exactly)")
    reg.add_argument("--only", help="comma-separated scenario names (file stems)")
    reg.set_defaults(func=cmd_regress)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"servesim {version('servesim')}"
    except Exception:  # pragma: no cover
        return "servesim (unknown version)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ServesimError as exc:
        msg = " ".join(str(exc).split())
        print(f"servesim: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("servesim: interrupted", file=sys.stderr)
        return 130
    except (InvariantError, EngineError) as exc:
        if os.environ.get("SERVESIM_DEBUG"):
            raise
        print(f"servesim: internal error (a policy or engine bug): {exc} "
              "(set SERVESIM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
