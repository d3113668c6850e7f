"""Figures from sweep results: mean lines with 95 % confidence bands across seeds.

    >>> from servesim import plots
    >>> table = plots.load_results("sweeps/quickstart")      # results.parquet or its folder
    >>> fig = plots.plot_results(table, x="workload.rate", y="slo_attainment",
    ...                          hue="policy.name", target=0.9)             # doctest: +SKIP
    >>> fig.savefig("fig.png")                                                # doctest: +SKIP

The band is the 95 % confidence interval of the mean over seeds, from the t distribution with
``n - 1`` degrees of freedom (``mean +- t(0.975, n-1) * sd / sqrt(n)``); a point with one
seed has no band. Failed rows are left out. Figures are built without pyplot, so nothing needs
a display.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.errors import ServesimError, did_you_mean

#: Axis labels (with units) of summary keys and common grid keys; others show the key itself.
LABELS = {
    "requests_total": "requests",
    "requests_finished": "finished requests",
    "requests_failed": "failed requests",
    "slo_attainment": "SLO attainment (fraction)",
    "slo_met_fraction": "requests meeting every deadline (fraction)",
    "throughput_tokens_per_s": "throughput (output tokens/s)",
    "goodput_rps": "goodput (requests/s meeting the SLO)",
    "gpu_utilization": "GPU utilization (fraction)",
    "switches": "model switches",
    "switch_seconds": "time switching models (s)",
    "jain_index": "Jain fairness index",
    "service_diff_max": "max service difference (weighted tokens)",
    "service_diff_avg": "mean service difference (weighted tokens)",
    "sim_seconds": "simulated time (s)",
    "events": "simulation events",
    "wall_seconds": "wall time (s)",
    "workload.rate": "request rate per model (req/s)",
    "workload.models": "models",
    "policy.name": "policy",
    "slo.scale": "SLO scale (x)",
    "slo.ttft": "TTFT SLO (s)",
    "slo.tbt": "TBT SLO (s)",
    "duration": "arrival window (s)",
    "seed": "seed",
}
_PERCENTILE = re.compile(r"^(ttft|tbt|e2e)_p(\d+)$")
_GROUP = re.compile(r"^cluster\.(\d+)\.(count|gpu|tp)$")


def label(key: str) -> str:
    """A readable axis label with units for a column name."""
    if key in LABELS:
        return LABELS[key]
    if m := _PERCENTILE.match(key):
        return f"{m.group(1).upper()} p{m.group(2)} (s)"
    if m := _GROUP.match(key):
        what = {"count": "instances", "gpu": "GPU", "tp": "GPUs per instance"}[m.group(2)]
        return f"{what} (cluster group {m.group(1)})"
    return key


def load_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a sweep's ``results.parquet`` (or the folder holding it).

    The grid keys recorded in the file are in ``table.attrs["grid_keys"]``.
    """
    import json

    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / "results.parquet"
    if not p.is_file():
        raise ServesimError(f"{path}: no results file (expected a sweep's results.parquet or "
                            "its folder)")
    try:
        table = pq.read_table(p)
    except Exception as exc:
        raise ServesimError(f"{p}: cannot read Parquet ({' '.join(str(exc).split())})") from None
    frame = table.to_pandas()
    meta = (table.schema.metadata or {}).get(b"servesim.sweep")
    frame.attrs["grid_keys"] = list(json.loads(meta)["grid"]) if meta else []
    return frame


def _check_column(table: pd.DataFrame, flag: str, key: str) -> None:
    if key not in table.columns:
        cols = [c for c in table.columns if c != "point_key"]
        raise ServesimError(f"{flag} {key}: not a column of the results"
                            f"{did_you_mean(key, cols)}; columns: {', '.join(cols)}")


def summarize(table: pd.DataFrame, x: str, y: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean of ``y`` over rows (seeds) per ``by`` + ``x`` group, with its 95 % interval.

    Columns: ``*by, x, n, mean, low, high`` (``low``/``high`` NaN when ``n`` is 1), in the
    order groups first appear.
    """
    from scipy import stats

    keys = [*by, x]
    grouped = table.groupby(keys, sort=False, dropna=False)[y]
    out = grouped.agg(["count", "mean", "std"]).reset_index().rename(columns={"count": "n"})
    half = [
        float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        for n, sd in zip(out["n"], out["std"], strict=True)
    ]
    out["low"] = out["mean"] - half
    out["high"] = out["mean"] + half
    return out.drop(columns="std")


def plot_results(
    table: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    col: str | None = None,
    target: float | None = None,
    where: dict[str, Any] | None = None,
    title: str | None = None,
) -> Any:
    """Line plot of the mean of ``y`` against ``x`` with 95 % bands; returns a matplotlib
    ``Figure``. One line per ``hue`` value, one panel per ``col`` value, a dashed line at
    ``target``; ``where`` keeps the rows whose column equals the value.

    Any other grid key with several values must be fixed by ``where`` (or used as ``hue`` or
    ``col``), else its rows would be averaged together with the seeds.
    """
    from matplotlib.figure import Figure

    for flag, key in (("--x", x), ("--y", y), ("--hue", hue), ("--col", col)):
        if key is not None:
            _check_column(table, flag, key)
    rows = table
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    for key, value in (where or {}).items():
        _check_column(rows, "--where", key)
        rows = rows[rows[key].astype(str) == str(value)] if isinstance(value, str) else \
            rows[rows[key] == value]
    if not pd.api.types.is_numeric_dtype(rows[y]):
        raise ServesimError(f"--y {y}: not a numeric column")
    rows = rows[rows[y].notna()]
    if rows.empty:
        raise ServesimError(f"--y {y}: no finished row has a value (failed rows and filters "
                            "leave nothing to plot)")
    used = {x, hue, col, *(where or {})}
    for key in table.attrs.get("grid_keys", []):
        if key not in used and rows[key].nunique(dropna=False) > 1:
            values = ", ".join(str(v) for v in rows[key].unique()[:6])
            raise ServesimError(f"grid key {key} has several values ({values}); show it with "
                                f"--hue or --col, or pick one with --where {key}=VALUE")
    by = [k for k in (col, hue) if k is not None]
    stats_table = summarize(rows, x, y, by)
    panels = list(stats_table[col].unique()) if col else [None]
    hues = list(stats_table[hue].unique()) if hue else [None]
    numeric_x = pd.api.types.is_numeric_dtype(stats_table[x])
    categories = list(stats_table[x].unique())

    fig = Figure(figsize=(1.0 + 4.0 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(hues))]
    for ax, panel in zip(axes, panels, strict=True):
        part = stats_table if col is None else stats_table[stats_table[col] == panel]
        for color, hue_value in zip(colors, hues, strict=True):
            line = part if hue is None else part[part[hue] == hue_value]
            if line.empty:
                continue
            line = line.sort_values(x) if numeric_x else line
            xs = line[x] if numeric_x else [categories.index(v) for v in line[x]]
            ax.plot(xs, line["mean"], marker="o", color=color,
                    label=None if hue is None else str(hue_value))
            ax.fill_between(xs, line["low"], line["high"], color=color, alpha=0.2, lw=0)
        if target is not None:
            ax.axhline(target, ls="--", color="0.35", lw=1, label=f"target {target:g}")
        if not numeric_x:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        elif pd.api.types.is_integer_dtype(stats_table[x]):
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label(x))
        ax.grid(alpha=0.3)
        if col is not None:
            ax.set_title(f"{label(col)} = {panel}", fontsize="medium")
    axes[0].set_ylabel(label(y))
    if hue is not None or target is not None:
        axes[-1].legend(title=label(hue) if hue else None, fontsize="small")
    seeds = int(stats_table["n"].max())
    fig.suptitle(title or f"{label(y)}: mean of {seeds} seed{'s' if seeds > 1 else ''}"
                 + (", 95 % CI" if seeds > 1 else ""), fontsize="medium")
    return fig
