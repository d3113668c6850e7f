"""Length distributions: turn a :class:`~servesim.workload.spec.LengthSpec` into token counts.

Order of operations in :func:`sample_lengths`: draw (input, output) pairs from the kind's law
(for ``sharegpt`` presets, clipped to :data:`PRESET_MAX_CONTEXT` tokens or the spec's
``max_context``), multiply by ``input_scale``/``output_scale`` (rounded, >= 1), then apply the
spec's ``max_context`` with :func:`apply_context_cap`. The workload-level cap (a model's
context) is the caller's job, with the same function.

Draws use only the ``rng`` passed in: inputs first, then outputs (``empirical``: one row index
per request), so the same generator state gives the same arrays.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from servesim.errors import TraceError
from servesim.workload.spec import LengthSpec
from servesim.workload.traces import parse_counts, read_csv_columns

__all__ = [
    "PRESET_MAX_CONTEXT",
    "SHAREGPT_PRESETS",
    "LognormalPreset",
    "apply_context_cap",
    "read_length_table",
    "sample_lengths",
]


class LognormalPreset(NamedTuple):
    """Lognormal laws of input and output lengths: medians in tokens, sigmas of log(tokens)."""

    input_median: float
    input_sigma: float
    output_median: float
    output_sigma: float


# Lognormal (median, sigma) of ShareGPT lengths, printed by scripts/fit_sharegpt_lengths.py.
# Estimator: median = sample median, sigma = sqrt(2 ln(mean / median)), i.e. the lognormal
# with the data's median and mean (the data are not lognormal; a maximum-likelihood fit would
# miss both).
# - vllm: ../shared/data/sharegpt_lengths.csv, rows with vllm_filter_ok == 1 (15,822 rows,
#   Llama-3 tokens): input mean 220.06 / median 107, output mean 197.92 / median 129.
# - aegaeon: the Aegaeon paper's published summaries (input mean 685 / median 543, output
#   mean 298 / median 267); the CSV has no whole-history samples. Cross-check, pooled lengths
#   of the Aegaeon workload files synth-*-1.0-1.0.csv: input median 585 / sigma 0.598, output
#   median 265 / sigma 0.457.
SHAREGPT_PRESETS: dict[str, LognormalPreset] = {
    "vllm": LognormalPreset(107.0, 1.2009, 129.0, 0.9252),
    "aegaeon": LognormalPreset(543.0, 0.6816, 267.0, 0.4687),
}

PRESET_MAX_CONTEXT = 4096
"""Tokens: ``sharegpt`` draws are capped at input + output <= this (before scaling) unless the
spec sets ``max_context``, so the unbounded lognormal tail stays within a common context window."""

# A lognormal draw can be astronomically large; clip before casting to int64.
_LARGEST_LENGTH = 1 << 40


def apply_context_cap(
    inputs: np.ndarray, outputs: np.ndarray, max_context: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Cap input + output at ``max_context`` tokens; returns new int64 arrays.

    The input is shortened first, down to ``max_context - 1`` (so one output token always
    fits); then the output is shortened to what is left. Lengths below 1 are raised to 1.
    ``None`` leaves the lengths as they are (still copied, >= 1).
    """
    inputs = np.maximum(np.asarray(inputs, dtype=np.int64), 1)
    outputs = np.maximum(np.asarray(outputs, dtype=np.int64), 1)
    if max_context is None:
        return inputs, outputs
    if max_context < 2:
        raise ValueError(f"max_context must be >= 2 tokens, got {max_context}")
    inputs = np.minimum(inputs, max_context - 1)
    outputs = np.minimum(outputs, max_context - inputs)
    return inputs, outputs


def sample_lengths(
    spec: LengthSpec, n: int, rng: np.random.Generator, base_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (input, output) token-count pairs as two int64 arrays, every value >= 1.

    ``base_dir`` (the scenario file's folder) resolves a relative ``spec.file`` before the
    working directory does.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if spec.kind == "fixed":
        inputs = np.full(n, spec.input, dtype=np.int64)
        outputs = np.full(n, spec.output, dtype=np.int64)
    elif spec.kind == "uniform":
        inputs = rng.integers(spec.input_min, spec.input_max, size=n, endpoint=True)
        outputs = rng.integers(spec.output_min, spec.output_max, size=n, endpoint=True)
    elif spec.kind == "lognormal":
        inputs = _lognormal(spec.input_median, spec.input_sigma, n, rng)
        outputs = _lognormal(spec.output_median, spec.output_sigma, n, rng)
    elif spec.kind == "sharegpt":
        in_median, in_sigma, out_median, out_sigma = SHAREGPT_PRESETS[spec.preset]
        inputs = _lognormal(in_median, in_sigma, n, rng)
        outputs = _lognormal(out_median, out_sigma, n, rng)
        preset_cap = spec.max_context if spec.max_context is not None else PRESET_MAX_CONTEXT
        inputs, outputs = apply_context_cap(inputs, outputs, preset_cap)
    elif spec.kind == "empirical":
        if not spec.file:
            raise TraceError("lengths.file: required when kind is 'empirical'")
        table_in, table_out = read_length_table(_resolve(spec.file, base_dir))
        rows = rng.integers(0, table_in.size, size=n)
        inputs, outputs = table_in[rows], table_out[rows]
    else:
        raise ValueError(f"unknown length kind {spec.kind!r}")

    inputs = _scale(inputs, spec.input_scale)
    outputs = _scale(outputs, spec.output_scale)
    return apply_context_cap(inputs, outputs, spec.max_context)


def _lognormal(median: float, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    draws = median * np.exp(sigma * rng.standard_normal(n))
    return np.clip(np.rint(draws), 1, _LARGEST_LENGTH).astype(np.int64)


def _scale(lengths: np.ndarray, factor: float) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if factor == 1.0:
        return lengths
    scaled = np.clip(np.rint(lengths * factor), 1, _LARGEST_LENGTH)
    return scaled.astype(np.int64)


def _resolve(file: str, base_dir: Path | None) -> Path:
    path = Path(file).expanduser()
    if path.is_absolute():
        return path
    if base_dir is not None and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    if path.exists():
        return path
    searched = [str(Path(base_dir) / path)] if base_dir is not None else []
    searched.append(str(Path.cwd() / path))
    raise TraceError(f"{file}: file not found (looked in {', '.join(searched)})")


def read_length_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The (input, output) columns of a length-table CSV as int64 arrays (read-only).

    Columns ``input,output`` or ``input_tokens,output_tokens``; other columns are ignored.
    Lengths must be whole numbers >= 0 (0 becomes 1 when sampled). The parsed table is cached
    per (resolved path, modification time), so editing the file is noticed.
    """
    resolved = Path(path).resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    return _cached_table(resolved, mtime)


@functools.lru_cache(maxsize=16)
def _cached_table(path: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    table = read_csv_columns(
        path, (), optional=("input", "output", "input_tokens", "output_tokens")
    )
    columns = table.columns
    for input_name, output_name in (("input", "output"), ("input_tokens", "output_tokens")):
        if input_name in columns and output_name in columns:
            break
    else:
        missing = [name for name in ("input", "output") if name not in columns]
        if "input_tokens" in columns or "output_tokens" in columns:
            missing = [n for n in ("input_tokens", "output_tokens") if n not in columns]
        raise TraceError(
            f"{path}:1: missing column '{missing[0]}'; a length table needs columns "
            "input,output or input_tokens,output_tokens"
        )
    if table.rows == 0:
        raise TraceError(f"{path}:1: empty length table, no row after the header")
    inputs = parse_counts(table, input_name, minimum=0)
    outputs = parse_counts(table, output_name, minimum=0)
    inputs.flags.writeable = False
    outputs.flags.writeable = False
    return inputs, outputs
