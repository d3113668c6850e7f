"""The ``servesim`` command line: argument parsing and file output only.

Every user mistake (bad scenario, trace, profile, flag) is printed as one line on stderr,
``servesim: error: ...``, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
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
