"""Print the lognormal parameters of servesim's ``sharegpt`` length presets.

Usage::

    python scripts/fit_sharegpt_lengths.py [SHAREGPT_LENGTHS_CSV] [--aegaeon-workloads DIR]

Defaults: ``../shared/data/sharegpt_lengths.csv`` and ``../shared/data/aegaeon/workloads``
next to the repository. Nothing is written; copy the printed numbers into
``src/servesim/workload/lengths.py`` (``SHAREGPT_PRESETS``).

Estimator (the same for both presets): ``median`` = the sample median, ``sigma`` =
``sqrt(2 ln(mean / median))``, i.e. the lognormal whose median and mean equal the data's.
The lengths are not lognormal (their log-space spread is wider, with a heavy short tail), so
a full maximum-likelihood fit would match neither the median nor the mean; matching those two
is what the published summaries allow for the Aegaeon preset too.

- ``vllm``: rows with ``vllm_filter_ok == 1``, columns ``input_tokens``/``output_tokens``
  (Llama-3 token counts, vLLM benchmark_serving's first-two-turns sampling and filters).
- ``aegaeon``: the CSV has no whole-history samples, so the preset comes from the Aegaeon
  paper's published summaries (input mean 685 / median 543, output mean 298 / median 267).
  When the Aegaeon workload files are present, the same estimator is applied to their pooled
  ``synth-*-1.0-1.0.csv`` lengths as a cross-check.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AEGAEON_PUBLISHED = {"input": (685.0, 543.0), "output": (298.0, 267.0)}  # (mean, median)


def fit(mean: float, median: float) -> tuple[float, float]:
    """(median, sigma) of the lognormal with this mean and median."""
    return median, math.sqrt(2.0 * math.log(mean / median))


def describe(label: str, values: np.ndarray) -> str:
    median, sigma = fit(float(values.mean()), float(np.median(values)))
    return (
        f"{label:>7}: n={values.size} mean={values.mean():.2f} median={np.median(values):.1f} "
        f"-> median={median:.1f} sigma={sigma:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DATA / "sharegpt_lengths.csv")
    parser.add_argument("--aegaeon-workloads", type=Path, default=DATA / "aegaeon" / "workloads")
    args = parser.parse_args()

    table = pd.read_csv(args.csv)
    kept = table[table["vllm_filter_ok"] == 1]
    print(f"preset vllm (from {args.csv}, vllm_filter_ok == 1)")
    print(describe("input", kept["input_tokens"].to_numpy()))
    print(describe("output", kept["output_tokens"].to_numpy()))

    print("preset aegaeon (from the published summaries)")
    for side, (mean, median) in AEGAEON_PUBLISHED.items():
        m, s = fit(mean, median)
        print(f"{side:>7}: mean={mean} median={median} -> median={m:.1f} sigma={s:.4f}")

    files = sorted(args.aegaeon_workloads.glob("synth-*-1.0-1.0.csv"))
    if files:
        pooled = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
        print(f"cross-check: {len(files)} Aegaeon workload files synth-*-1.0-1.0.csv, pooled")
        print(describe("input", pooled["Input Length"].to_numpy()))
        print(describe("output", pooled["Output Length"].to_numpy()))


if __name__ == "__main__":
    main()
