"""Fit reduced latency profiles from measurements (``specs/latency-model.md`` section 1).

Input: a directory of vLLM ``benchmark_latency``-style JSON files, one per grid point, named
``i{input_len}b{batch}.json`` and holding ``avg_prefill_latency``, ``avg_decode_latency``,
``prefill_latencies[]`` and ``decode_latencies[]`` (all in seconds).

Recipe (the spec's, step by step):

- prefill point: ``t = input_len * batch``, ``t2 = input_len**2 * batch``, latency = trimmed
  mean of ``prefill_latencies`` (min and max dropped; ``avg_prefill_latency`` when fewer than
  three repeats);
- decode point: context per request ``input_len + 5`` (the profiler decoded 10 tokens),
  ``t = (input_len + 5) * batch``, ``B = batch``, latency = trimmed mean of ``decode_latencies``;
- points with ``input_len * batch > token_cap`` are dropped: vLLM capped a scheduler step at
  4,096 batched tokens, so their prefill measured only the first chunk and their decode
  includes the remaining chunks;
- non-negative least squares per phase, rows scaled by ``1/latency`` (``weighting="inverse"``,
  i.e. relative error) or not (``"none"``);
- held-out R^2: fit on the kept points minus every ``holdout_every``-th point in sorted
  ``(input_len, batch)`` order, score on those held-out points; the stored coefficients are then
  refitted on all kept points, and their MAPE over the kept points is stored too.

The per-context-token decode coefficient is weakly determined by the grid (at most 4,096
context tokens per batch); it is reported next to its memory-bandwidth bound
(:func:`servesim.latency.roofline_decode_b`) and ``decode_context="roofline"`` fixes it there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from scipy.optimize import nnls

from servesim.errors import ServesimError
from servesim.hardware import get_gpu, get_model
from servesim.latency import Coefficients, Profile, roofline_decode_b

Weighting = Literal["inverse", "none"]
DecodeContext = Literal["fit", "roofline"]

#: Quality bar of the spec: MAPE over the kept grid points, per phase (fractions).
MAPE_BAR: dict[str, float] = {"prefill": 0.10, "decode": 0.05}

#: The profiler decoded 10 tokens per request, so a decode step sees ``input_len + 5`` tokens
#: of context per request on average.
DECODE_CONTEXT_OFFSET = 5

#: Significant digits kept for stored coefficients (far below the measurement noise).
COEFFICIENT_DIGITS = 5

DEFAULT_SOURCE_TEMPLATE = (
    "aegaeon artifact profiles/{model_dir}/{gpu_dir} (vLLM benchmark_latency, Apache-2.0)"
)

_FILE_NAME = re.compile(r"i(\d+)b(\d+)\.json")
_PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class Point:
    """One measured grid point.

    Attributes:
        input_len: prompt length of every request, in tokens.
        batch: requests in the batch.
        prefill_seconds: prefill latency of the batch (trimmed mean of the repeats), seconds.
        decode_seconds: one decode step of the batch (trimmed mean of the repeats), seconds.
        prefill_cv: coefficient of variation of the trimmed prefill repeats (None if < 3).
        decode_cv: coefficient of variation of the trimmed decode repeats (None if < 3).
        path: the file the point was read from.
    """

    input_len: int
    batch: int
    prefill_seconds: float
    decode_seconds: float
    prefill_cv: float | None
    decode_cv: float | None
    path: Path

    @property
    def tokens(self) -> int:
        """Batched prompt tokens ``input_len * batch`` (what the token cap limits)."""
        return self.input_len * self.batch

    @property
    def label(self) -> str:
        """``i{input_len}b{batch}``, the grid point's file stem."""
        return f"i{self.input_len}b{self.batch}"


@dataclass(frozen=True)
class FitReport:
    """Result of :func:`fit_profile`.

    Attributes:
        profile: the fitted profile (coefficients, held-out R^2, MAPE, source, meta).
        warnings: human-readable warnings; the same strings are in ``profile.meta["caveats"]``.
        points: every point read (kept and excluded), sorted by ``(input_len, batch)``.
    """

    profile: Profile
    warnings: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading measurements


def _latency(doc: dict[str, Any], phase: str, path: Path) -> tuple[float, float | None]:
    """Trimmed mean (seconds) and CV of a phase's repeats, else its ``avg_*`` fallback."""
    repeats = doc.get(f"{phase}_latencies")
    if repeats is not None and not isinstance(repeats, list):
        raise ServesimError(f"{path}: {phase}_latencies must be a list of seconds")
    if repeats is not None and len(repeats) >= 3:
        try:
            values = np.sort(np.asarray(repeats, dtype=float))[1:-1]
        except (TypeError, ValueError):
            raise ServesimError(f"{path}: {phase}_latencies must be numbers (seconds)") from None
        mean = float(values.mean())
        cv = float(values.std() / mean) if mean > 0 else None
    else:
        key = f"avg_{phase}_latency"
        if key not in doc:
            raise ServesimError(
                f"{path}: needs {phase}_latencies (>= 3 repeats) or {key} (seconds)"
            )
        try:
            mean = float(doc[key])
        except (TypeError, ValueError):
            raise ServesimError(f"{path}: {key} must be a number, got {doc[key]!r}") from None
        cv = None
    if not (math.isfinite(mean) and mean > 0):
        raise ServesimError(f"{path}: {phase} latency must be finite and > 0 s, got {mean}")
    return mean, cv


def load_point(path: Path) -> Point:
    """Read one ``i{input_len}b{batch}.json`` file; errors are one line naming the file."""
    match = _FILE_NAME.fullmatch(path.name)
    if match is None:
        raise ServesimError(f"{path}: file name must be i{{input_len}}b{{batch}}.json")
    input_len, batch = int(match[1]), int(match[2])
    if input_len < 1 or batch < 1:
        raise ServesimError(f"{path}: input_len and batch must be >= 1")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ServesimError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServesimError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise ServesimError(f"{path}: expected a JSON object with *_latency fields")
    prefill, prefill_cv = _latency(doc, "prefill", path)
    decode, decode_cv = _latency(doc, "decode", path)
    return Point(input_len, batch, prefill, decode, prefill_cv, decode_cv, path)


def load_points(directory: str | Path) -> list[Point]:
    """Every ``*.json`` grid point in ``directory``, sorted by ``(input_len, batch)``.

    Raises :class:`ServesimError` (one line naming the file) for a malformed file or file
    name, a duplicated grid point, or a directory without JSON files.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ServesimError(f"{root}: not a directory of i{{input_len}}b{{batch}}.json files")
    points: dict[tuple[int, int], Point] = {}
    for path in sorted(root.glob("*.json")):
        point = load_point(path)
        key = (point.input_len, point.batch)
        if key in points:
            raise ServesimError(f"{path}: grid point {point.label} also in {points[key].path}")
        points[key] = point
    if not points:
        raise ServesimError(f"{root}: no i{{input_len}}b{{batch}}.json files")
    return [points[k] for k in sorted(points)]


# ---------------------------------------------------------------------------------------------
# Least squares


def _design(points: Sequence[Point], phase: str) -> tuple[np.ndarray, np.ndarray]:
    """Design matrix (columns a, b, c) and latencies (seconds) of one phase."""
    inp = np.array([p.input_len for p in points], dtype=float)
    bat = np.array([p.batch for p in points], dtype=float)
    if phase == "prefill":
        x = np.column_stack([np.ones_like(inp), inp * bat, inp * inp * bat])
        y = np.array([p.prefill_seconds for p in points])
    else:
        x = np.column_stack([np.ones_like(inp), (inp + DECODE_CONTEXT_OFFSET) * bat, bat])
        y = np.array([p.decode_seconds for p in points])
    return x, y


def _nnls(
    x: np.ndarray, y: np.ndarray, weighting: Weighting, fixed: dict[int, float]
) -> np.ndarray:
    """Non-negative least squares of ``y ~ x @ coef`` with some coefficients held fixed."""
    free = [j for j in range(x.shape[1]) if j not in fixed]
    target = y - sum((x[:, j] * v for j, v in fixed.items()), np.zeros_like(y))
    rows = 1.0 / y if weighting == "inverse" else np.ones_like(y)
    a = x[:, free] * rows[:, None]
    # Columns span ~1 to ~1e7 (t2); scale them to unit max so NNLS stays well conditioned.
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    rhs = target * rows
    solution, _ = nnls(a / scale, rhs)
    # Scaled columns peak at 1, so a solution entry is its column's largest contribution;
    # one below 1e-9 of the largest target is round-off at the 0 bound.
    solution[solution < 1e-9 * float(np.abs(rhs).max())] = 0.0
    coef = np.zeros(x.shape[1])
    coef[free] = solution / scale
    for j, v in fixed.items():
        coef[j] = v
    return coef


def _round_sig(value: float, digits: int = COEFFICIENT_DIGITS) -> float:
    return float(f"{value:.{digits}g}")


def _r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    total = float(((y - y.mean()) ** 2).sum())
    if len(y) < 2 or total <= 0:
        return None
    return 1.0 - float(((y - pred) ** 2).sum()) / total


def _mean_cv(points: Sequence[Point], phase: str) -> float | None:
    cvs = [p.prefill_cv if phase == "prefill" else p.decode_cv for p in points]
    known = [c for c in cvs if c is not None]
    return float(np.mean(known)) if known else None


def _explained_by(values: Sequence[int], rel_err: np.ndarray) -> float:
    """Share of the error variance explained by grouping points on ``values`` (eta^2)."""
    total = float(((rel_err - rel_err.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    groups: dict[int, list[float]] = {}
    for v, e in zip(values, rel_err, strict=True):
        groups.setdefault(v, []).append(float(e))
    within = sum(float(((np.array(g) - np.mean(g)) ** 2).sum()) for g in groups.values())
    return 1.0 - within / total


def _miss_caveat(
    phase: str, mape: float, noise: float | None, points: Sequence[Point], rel_err: np.ndarray
) -> str:
    """Explain a phase whose MAPE misses the bar: size, noise level, structure, worst points."""
    worst = np.argsort(-np.abs(rel_err))[:3]
    listed = ", ".join(f"{points[k].label} {rel_err[k]:+.0%}" for k in worst)
    text = f"{phase} MAPE {mape:.1%} misses the ~{MAPE_BAR[phase]:.0%} bar of the spec"
    if noise is not None:
        if noise >= 0.5 * mape:
            why = "mostly measurement noise"
        elif noise >= 0.2 * mape:
            why = "partly measurement noise, partly a misfit of the linear form"
        else:
            why = "a systematic misfit of the linear form"
        text += f"; repeats within a point vary by {noise:.1%} (mean CV), so this is {why}"
    # A misfit that depends on one variable alone means latency is not linear in it.
    for name, values in (
        ("batch size", [p.batch for p in points]),
        ("batched tokens", [p.tokens for p in points]),
    ):
        share = _explained_by(values, rel_err)
        if share >= 0.9:
            text += (
                f"; the error is a function of the {name} alone (explains {share:.0%} of its"
                f" variance): latency is not linear in the {name}"
            )
            break
    return text + f"; largest errors at {listed}"


# ---------------------------------------------------------------------------------------------
# Fitting


def fit_profile(
    directory: str | Path,
    gpu: str,
    model: str,
    *,
    token_cap: int = 4096,
    holdout_every: int = 4,
    weighting: Weighting = "inverse",
    decode_context: DecodeContext = "fit",
    source: str | None = None,
    today: str | None = None,
) -> FitReport:
    """Fit the reduced prefill and decode models of ``model`` on ``gpu`` from ``directory``.

    Args:
        directory: folder of ``i{input_len}b{batch}.json`` files.
        gpu: GPU name (catalog name or alias, stored canonical).
        model: model name (catalog name or alias such as ``qwen2_5_7b``, stored canonical).
        token_cap: points with ``input_len * batch`` above this many tokens are excluded.
        holdout_every: every n-th kept point (sorted by input, batch) is held out for R^2.
        weighting: ``"inverse"`` scales rows by 1/latency (relative error), ``"none"`` not.
        decode_context: ``"fit"`` fits ``b_d``; ``"roofline"`` fixes it to the bandwidth bound.
        source: provenance string stored in the profile (default: the directory).
        today: fit date stored in ``meta.fitted`` (ISO format; default: today).
    """
    if weighting not in ("inverse", "none"):
        raise ServesimError(f"weighting must be 'inverse' or 'none', got {weighting!r}")
    if decode_context not in ("fit", "roofline"):
        raise ServesimError(f"decode_context must be 'fit' or 'roofline', got {decode_context!r}")
    if token_cap < 1:
        raise ServesimError(f"token_cap must be >= 1 token, got {token_cap}")
    if holdout_every < 2:
        raise ServesimError(f"holdout_every must be >= 2, got {holdout_every}")
    gpu_spec, shape = get_gpu(gpu), get_model(model)
    points = load_points(directory)
    kept = [p for p in points if p.tokens <= token_cap]
    if len(kept) < 3:
        raise ServesimError(
            f"{directory}: {len(kept)} of {len(points)} points within token_cap={token_cap}; "
            "need at least 3 to fit three coefficients"
        )
    held = [k for k in range(len(kept)) if (k + 1) % holdout_every == 0]
    train = [k for k in range(len(kept)) if (k + 1) % holdout_every != 0]
    roofline_b = roofline_decode_b(gpu_spec, shape)
    warnings: list[str] = []

    coefficients: dict[str, Coefficients] = {}
    r2: dict[str, float | None] = {}
    mape: dict[str, float | None] = {}
    noise: dict[str, float | None] = {}
    decode_b_fit = 0.0
    for phase in _PHASES:
        x, y = _design(kept, phase)
        fixed: dict[int, float] = {}
        if phase == "decode":
            decode_b_fit = float(_nnls(x, y, weighting, {})[1])
            if decode_context == "roofline":
                fixed = {1: roofline_b}
        if len(train) >= 3 and len(held) >= 2:
            coef = _nnls(x[train], y[train], weighting, fixed)
            score = _r2(y[held], x[held] @ coef)
            r2[phase] = None if score is None else round(score, 4)
        else:
            r2[phase] = None
            warnings.append(f"{phase}: too few kept points to hold out every {holdout_every}th")
        coef = np.array([_round_sig(float(v)) for v in _nnls(x, y, weighting, fixed)])
        rel_err = (x @ coef - y) / y
        phase_mape = round(float(np.abs(rel_err).mean()), 4)
        mape[phase] = phase_mape
        noise[phase] = _mean_cv(kept, phase)
        coefficients[phase] = Coefficients(*(float(v) for v in coef))
        for name, value in zip("abc", coef, strict=True):
            if value == 0.0 and not (phase == "decode" and name == "b" and fixed):
                warnings.append(
                    f"{phase} {name} hit the 0 bound (the unconstrained fit is negative)"
                )
        if phase_mape > MAPE_BAR[phase]:
            warnings.append(_miss_caveat(phase, phase_mape, noise[phase], kept, rel_err))

    if decode_b_fit < 0.5 * roofline_b:
        action = (
            "fixed to the bound (decode_context='roofline')"
            if decode_context == "roofline"
            else "consider decode_context='roofline'"
        )
        warnings.append(
            f"fitted decode b {decode_b_fit:.3g} s/token is below half of the memory-bandwidth "
            f"bound {roofline_b:.3g} s/token (kv_bytes_per_token / HBM bandwidth); {action}"
        )

    excluded = len(points) - len(kept)
    meta: dict[str, Any] = {
        "fitted": today or date.today().isoformat(),
        "recipe": "specs/latency-model.md section 1 (trimmed means, NNLS, held-out R2)",
        "token_cap": int(token_cap),
        "points_total": len(points),
        "points_kept": len(kept),
        "points_excluded_above_cap": excluded,
        "points_held_out": len(held),
        "holdout_every": int(holdout_every),
        "weighting": weighting,
        "decode_context": decode_context,
        "decode_b_roofline": _round_sig(roofline_b),
        "decode_b_fit": _round_sig(decode_b_fit),
        "repeat_cv": {k: None if v is None else round(v, 4) for k, v in noise.items()},
        "caveats": list(warnings),
    }
    profile = Profile(
        gpu=gpu_spec.name,
        model=shape.name,
        prefill=coefficients["prefill"],
        decode=coefficients["decode"],
        r2=r2,
        mape=mape,
        source=source if source is not None else f"{directory} (vLLM benchmark_latency)",
        meta=meta,
    )
    return FitReport(profile=profile, warnings=warnings, points=points)


# ---------------------------------------------------------------------------------------------
# Writing profiles


def profile_yaml(profile: Profile) -> str:
    """The YAML text of a profile file (layout of :meth:`Profile.to_dict`, with a header)."""
    header = (
        f"# Latency profile of {profile.model} on {profile.gpu} (TP={profile.tp}).\n"
        "# Fitted by scripts/fit_profiles.py (servesim.fitting); regenerate, do not edit.\n"
        "# Times in seconds: prefill a + b*t + c*t2; decode step a + b*context + c*batch.\n"
    )
    return header + yaml.safe_dump(profile.to_dict(), sort_keys=False, width=100)


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as YAML to ``path`` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(profile_yaml(profile), encoding="utf-8")
    return out


def _catalog_key(name: str) -> str:
    """Directory name in catalog spelling (``qwen2_5_7b`` -> ``qwen2.5-7b``)."""
    return re.sub(r"(?<=\d)_(?=\d)", ".", name.lower()).replace("_", "-")


def fit_all(
    data_root: str | Path,
    out_dir: str | Path,
    *,
    source_template: str = DEFAULT_SOURCE_TEMPLATE,
    **kw: Any,
) -> dict[Path, FitReport]:
    """Fit every ``<model_dir>/<GPU>`` under ``data_root``; write ``<out>/<gpu>/<model>.yaml``.

    Model folders are mapped to catalog names (``qwen2_5_7b`` -> ``qwen2.5-7b``). When several
    folders map to the same catalog model on one GPU (``qwen_7b`` and ``qwen_7b_chat``), the
    folder spelled like the catalog name wins (else the first in sorted order) and the others
    are named in the profile's caveats. ``source_template`` is formatted with ``model_dir`` and
    ``gpu_dir``; other keyword arguments go to :func:`fit_profile`. Returns the written paths
    and their reports.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise ServesimError(f"{root}: data root not found (expected <model>/<GPU>/i*b*.json)")
    groups: dict[tuple[str, str], list[Path]] = {}
    for directory in sorted(root.glob("*/*")):
        if directory.is_dir() and any(directory.glob("*.json")):
            key = (get_gpu(directory.name).name, get_model(directory.parent.name).name)
            groups.setdefault(key, []).append(directory)
    if not groups:
        raise ServesimError(f"{root}: no <model>/<GPU>/i*b*.json folders")
    written: dict[Path, FitReport] = {}
    for (gpu_name, model_name), dirs in sorted(groups.items()):
        dirs.sort(key=lambda d: (_catalog_key(d.parent.name) != model_name, d.parent.name))
        chosen, others = dirs[0], dirs[1:]
        report = fit_profile(
            chosen,
            gpu_name,
            model_name,
            source=source_template.format(model_dir=chosen.parent.name, gpu_dir=chosen.name),
            **kw,
        )
        extra = [
            f"{d.parent.name}/{d.name} maps to the same catalog model {model_name} and was not"
            f" used (kept {chosen.parent.name}/{chosen.name})"
            for d in others
        ]
        meta = {"data_dir": f"{chosen.parent.name}/{chosen.name}", **report.profile.meta}
        meta["caveats"] = list(meta["caveats"]) + extra
        report = replace(
            report,
            profile=replace(report.profile, meta=meta),
            warnings=report.warnings + extra,
        )
        path = Path(out_dir) / gpu_name.lower() / f"{model_name}.yaml"
        written[save_profile(report.profile, path)] = report
    return written
