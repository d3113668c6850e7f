"""Regenerate the committed latency profiles from the Aegaeon artifact measurements.

Usage (from the repository root)::

    python scripts/fit_profiles.py [--data ../shared/data/aegaeon/profiles] [--out profiles]

Fits every ``<model>/<GPU>`` folder of vLLM ``benchmark_latency`` JSON files with
:func:`servesim.fitting.fit_all` (recipe of ``specs/latency-model.md`` section 1), writes
``<out>/<gpu>/<model>.yaml`` and prints one row per profile: points kept/total, held-out R^2
and MAPE per phase (``*`` marks a MAPE above the spec's bar), then the warnings. Only fitted
numbers and their provenance are written, never the raw measurements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from servesim.errors import ServesimError
from servesim.fitting import MAPE_BAR, FitReport, fit_all

REPO = Path(__file__).resolve().parents[1]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(reports: list[FitReport]) -> str:
    """One row per profile, then the warnings of each profile."""
    header = (
        f"{'gpu':<5} {'model':<18} {'kept/total':>10} {'R2 pre':>7} {'R2 dec':>7} "
        f"{'MAPE pre':>9} {'MAPE dec':>9} {'warn':>4}"
    )
    lines = [header, "-" * len(header)]
    notes: list[str] = []
    for report in reports:
        p, meta = report.profile, report.profile.meta
        mapes = []
        for phase in ("prefill", "decode"):
            value = p.mape.get(phase)
            flag = "*" if value is not None and value > MAPE_BAR[phase] else " "
            mapes.append(f"{_fmt(value, '.1%'):>8}{flag}")
        lines.append(
            f"{p.gpu:<5} {p.model:<18} {meta['points_kept']:>4}/{meta['points_total']:<5} "
            f"{_fmt(p.r2.get('prefill'), '.4f'):>7} {_fmt(p.r2.get('decode'), '.4f'):>7} "
            f"{mapes[0]} {mapes[1]} {len(report.warnings):>4}"
        )
        notes += [f"{p.gpu} {p.model}: {w}" for w in report.warnings]
    bars = ", ".join(f"{k} {v:.0%}" for k, v in MAPE_BAR.items())
    lines.append(f"* MAPE above the spec's bar ({bars})")
    if notes:
        lines += ["", "warnings:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "aegaeon" / "profiles",
        help="root of <model>/<GPU>/i*b*.json folders",
    )
    parser.add_argument("--out", type=Path, default=REPO / "profiles", help="output folder")
    parser.add_argument("--token-cap", type=int, default=4096, help="max input*batch tokens")
    parser.add_argument("--holdout-every", type=int, default=4, help="R^2 hold-out stride")
    parser.add_argument("--weighting", choices=("inverse", "none"), default="inverse")
    parser.add_argument("--decode-context", choices=("fit", "roofline"), default="fit")
    parser.add_argument("--today", default=None, help="fit date to record (ISO, default today)")
    args = parser.parse_args(argv)
    try:
        written = fit_all(
            args.data,
            args.out,
            token_cap=args.token_cap,
            holdout_every=args.holdout_every,
            weighting=args.weighting,
            decode_context=args.decode_context,
            today=args.today,
        )
    except ServesimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(list(written.values())))
    print(f"\nwrote {len(written)} profiles under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
