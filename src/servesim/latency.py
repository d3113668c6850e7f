"""Latency, memory and switching model (``specs/latency-model.md``).

Every duration of the simulated world comes from here:

- step times of the reduced C1–C5 model, per (GPU, model) profile::

      prefill:     T = a_p + b_p * t + c_p * t2     t = sum L_i, t2 = sum L_i^2  (seconds)
      decode step: T = a_d + b_d * t + c_d * B      t = sum of contexts, B = batch size

- the closed form of ``k`` decode steps of a fixed batch (fast-forward decoding);
- KV capacity in 16-token blocks from GPU memory, weights and KV bytes per token;
- the cost of switching the resident model of an instance.

Profiles are YAML files under ``profiles/<gpu>/<model>.yaml`` (fitted by
``servesim profiles fit``, see :mod:`servesim.fitting`). A (GPU, model, TP) triple with no
fitted profile is *derived* from the per-layer C1–C5 constants of the profiles fitted on the
same GPU and the model's shape, and says so in its ``source``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from servesim.errors import ServesimError
from servesim.hardware import GPU, ModelShape, get_gpu, get_model


@dataclass(frozen=True)
class Coefficients:
    """Three non-negative coefficients of one phase, in seconds (see module docstring)."""

    a: float
    b: float
    c: float

    def as_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}


@dataclass(frozen=True)
class Profile:
    """A fitted (or derived) latency profile of one model on one GPU (or TP group).

    Attributes:
        gpu: GPU name.
        model: model name.
        tp: tensor-parallel degree the coefficients describe.
        prefill: ``a_p`` (s), ``b_p`` (s/token), ``c_p`` (s/token^2).
        decode: ``a_d`` (s), ``b_d`` (s per context token), ``c_d`` (s per request in batch).
        r2: held-out R^2 per phase (``None`` for derived profiles).
        mape: mean absolute percentage error over the kept grid points per phase.
        source: where the numbers come from.
        meta: provenance: fit date, grid, cap, points kept, caveats.
    """

    gpu: str
    model: str
    prefill: Coefficients
    decode: Coefficients
    tp: int = 1
    r2: dict[str, float | None] = field(default_factory=dict)
    mape: dict[str, float | None] = field(default_factory=dict)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def c_constants(self, shape: ModelShape, block: int = 16) -> dict[str, float]:
        """DistServe's C1..C5 derived from the reduced coefficients and the model shape."""
        f = shape.flops_per_token_factor
        h = shape.hidden
        return {
            "C1": self.prefill.b / f,
            "C2": self.prefill.c * block / (3 * h),
            "C3": self.prefill.a,
            "C4": self.decode.a / f,
            "C5": self.decode.b / (3 * h),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the ``profiles show --json`` contract and the YAML file layout)."""
        return {
            "gpu": self.gpu,
            "model": self.model,
            "tp": self.tp,
            "prefill": self.prefill.as_dict(),
            "decode": self.decode.as_dict(),
            "r2": dict(self.r2),
            "mape": dict(self.mape),
            "source": self.source,
            **({"meta": self.meta} if self.meta else {}),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], origin: str = "<profile>") -> Profile:
        """Build a profile from its YAML/JSON form; errors name ``origin`` and the field."""
        try:
            pre = doc["prefill"]
            dec = doc["decode"]
            prefill = Coefficients(float(pre["a"]), float(pre["b"]), float(pre["c"]))
            decode = Coefficients(float(dec["a"]), float(dec["b"]), float(dec["c"]))
            gpu = str(doc["gpu"])
            model = str(doc["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServesimError(
                f"{origin}: profile needs gpu, model, prefill {{a, b, c}} and decode {{a, b, c}}"
                f" ({type(exc).__name__}: {exc})"
            ) from None
        for phase, co in (("prefill", prefill), ("decode", decode)):
            for k, v in co.as_dict().items():
                if not (v >= 0 and math.isfinite(v)):
                    raise ServesimError(f"{origin}: {phase}.{k} must be finite and >= 0, got {v}")
        r2 = doc.get("r2") or {}
        if not isinstance(r2, dict):
            r2 = {"prefill": r2, "decode": r2}
        return cls(
            gpu=gpu,
            model=model,
            tp=int(doc.get("tp", 1)),
            prefill=prefill,
            decode=decode,
            r2=r2,
            mape=doc.get("mape") or {},
            source=str(doc.get("source", "")),
            meta=doc.get("meta") or {},
        )


# ---------------------------------------------------------------------------------------------
# Profile files


def profile_dirs() -> list[Path]:
    """Directories searched for profiles, first match wins.

    ``SERVESIM_PROFILES`` (os.pathsep-separated) first, then the package's bundled copy
    (wheel installs), then the repository's ``profiles/`` (editable installs).
    """
    dirs: list[Path] = []
    env = os.environ.get("SERVESIM_PROFILES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs += [here / "_data" / "profiles", here.parents[1] / "profiles"]
    return [d for d in dirs if d.is_dir()]


def _profile_file_name(gpu: str, model: str, tp: int) -> str:
    suffix = f"-tp{tp}" if tp != 1 else ""
    return f"{gpu.lower()}/{model}{suffix}.yaml"


@cache
def _read_profile_file(path: str) -> Profile:
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict):
        raise ServesimError(f"{path}: not a profile document")
    return Profile.from_dict(doc, origin=path)


def list_profiles() -> list[Profile]:
    """Every fitted profile found in :func:`profile_dirs` (first directory wins per pair)."""
    seen: dict[tuple[str, str, int], Profile] = {}
    for d in profile_dirs():
        for path in sorted(d.glob("*/*.yaml")):
            prof = _read_profile_file(str(path))
            seen.setdefault((prof.gpu.lower(), prof.model, prof.tp), prof)
    return sorted(seen.values(), key=lambda p: (p.gpu, p.model, p.tp))


def find_profile_file(gpu: str, model: str, tp: int = 1) -> Path | None:
    """Path of the fitted profile for this triple, or None."""
    name = _profile_file_name(gpu, model, tp)
    for d in profile_dirs():
        if (d / name).is_file():
            return d / name
    return None


def load_profile(gpu: str | GPU, model: str | ModelShape, tp: int = 1) -> Profile:
    """The fitted profile of ``model`` on ``gpu`` at TP degree ``tp``, else a derived one."""
    g = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    m = model if isinstance(model, ModelShape) else get_model(model)
    path = find_profile_file(g.profile_name, m.name, tp)
    if path is not None:
        return _read_profile_file(str(path))
    return derive_profile(g, m, tp)


def derive_profile(gpu: GPU, model: ModelShape, tp: int = 1) -> Profile:
    """Derive a profile from the per-layer C1–C5 constants fitted on the same GPU.

    Each fitted profile on ``gpu`` gives per-layer constants (the reduced coefficients divided
    by ``layers * (4h^2 + 2hm)`` for linear work, by ``layers * h`` for context/attention work);
    their median is applied to ``model``'s shape and divided by ``tp`` (tensor parallelism
    splits every layer). Fixed per-step overheads (``a``) are taken as the median unchanged.
    """
    fitted = [
        p for p in list_profiles() if p.gpu.lower() == gpu.profile_name.lower() and p.tp == 1
    ]
    if not fitted:
        raise ServesimError(
            f"no fitted profile on GPU {gpu.name} to derive {model.name} from; "
            "fit one with 'servesim profiles fit'"
        )
    rows: list[tuple[float, ...]] = []
    for p in fitted:
        s = get_model(p.model)
        s_lin = s.layers * s.flops_per_token_factor
        s_att = float(s.layers * s.hidden)
        s_kvb = float(s.kv_bytes_per_token)
        rows.append(
            (p.prefill.a, p.prefill.b / s_lin, p.prefill.c / s_att, p.decode.a / s_lin,
             p.decode.b / s_kvb, p.decode.c / s_lin)
        )
    med = [sorted(col)[len(col) // 2] for col in zip(*rows, strict=True)]
    lin = model.layers * model.flops_per_token_factor / tp
    att = model.layers * model.hidden / tp
    kvb = model.kv_bytes_per_token / tp
    return Profile(
        gpu=gpu.name,
        model=model.name,
        tp=tp,
        prefill=Coefficients(med[0], med[1] * lin, med[2] * att),
        decode=Coefficients(med[3] * lin, med[4] * kvb, med[5] * lin),
        r2={"prefill": None, "decode": None},
        mape={"prefill": None, "decode": None},
        source=(
            f"derived: per-layer medians of {len(fitted)} fitted {gpu.name} profiles "
            f"({', '.join(sorted(p.model for p in fitted))}) applied to the {model.name} shape"
            + (f", divided by TP={tp}" if tp > 1 else "")
        ),
    )


# ---------------------------------------------------------------------------------------------
# Step times


@dataclass(frozen=True)
class StepModel:
    """Step-time evaluation for one (GPU, model, TP) instance; all times in seconds."""

    a_p: float
    b_p: float
    c_p: float
    a_d: float
    b_d: float
    c_d: float

    @classmethod
    def from_profile(cls, profile: Profile) -> StepModel:
        p, d = profile.prefill, profile.decode
        return cls(p.a, p.b, p.c, d.a, d.b, d.c)

    def prefill_time(self, tokens: float, tokens_sq: float) -> float:
        """Prefill of a batch with ``tokens = sum L_i`` and ``tokens_sq = sum L_i^2``."""
        return self.a_p + self.b_p * tokens + self.c_p * tokens_sq

    def decode_step_time(self, context: float, batch: int) -> float:
        """One decode step of ``batch`` requests holding ``context`` tokens in total."""
        return self.a_d + self.b_d * context + self.c_d * batch

    def decode_time(self, steps: int, context: float, batch: int) -> float:
        """``k`` steps from total context ``C0``: ``k*(a+c*B+b*C0) + b*B*k*(k-1)/2``."""
        k = steps
        return k * (self.a_d + self.c_d * batch + self.b_d * context) + (
            self.b_d * batch * k * (k - 1) / 2.0
        )

    def decode_steps_within(self, elapsed: float, context: float, batch: int) -> int:
        """Largest ``k`` with ``decode_time(k) <= elapsed`` (quadratic root, corrected by one)."""
        if elapsed <= 0:
            return 0
        s0 = self.a_d + self.c_d * batch + self.b_d * context
        q = self.b_d * batch / 2.0
        # q k^2 + (s0 - q) k - elapsed <= 0
        lin = s0 - q
        if q <= 0:
            k = int(elapsed / s0) if s0 > 0 else 1 << 40
        else:
            k = int((-lin + math.sqrt(lin * lin + 4 * q * elapsed)) / (2 * q))
        while k > 0 and self.decode_time(k, context, batch) > elapsed:
            k -= 1
        while self.decode_time(k + 1, context, batch) <= elapsed:
            k += 1
        return k


# ---------------------------------------------------------------------------------------------
# Memory


def kv_capacity_blocks(
    gpu: GPU,
    model: ModelShape,
    tp: int = 1,
    usable_fraction: float = 0.9,
    reserved_bytes: float = 0.0,
    block_size: int = 16,
) -> int:
    """KV capacity in blocks: ``(mem * usable - weights - reserved) / kv_bytes / block``.

    Memory and KV bytes are those of the whole TP group (weights are split, not copied).
    Raises a :class:`ServesimError` naming both sizes when the model does not fit.
    """
    usable = gpu.memory_bytes * tp * usable_fraction - reserved_bytes
    free = usable - model.weight_bytes
    tokens = free / model.kv_bytes_per_token
    if tokens < block_size:
        gib = 1024**3
        where = f"{tp} x {gpu.name}" if tp > 1 else gpu.name
        raise ServesimError(
            f"model {model.name} ({model.weight_bytes / gib:.1f} GiB of weights"
            + (f" + {reserved_bytes / gib:.1f} GiB reserved" if reserved_bytes else "")
            + f") does not fit {where} ({usable / gib:.1f} GiB usable of "
            f"{gpu.memory_bytes * tp / gib:.0f} GiB at usable_fraction={usable_fraction})"
        )
    return int(tokens // block_size)


# ---------------------------------------------------------------------------------------------
# Switching

#: Fixed (non-weight-loading) part of a model switch per optimisation stage, in seconds, and
#: the weight-loading efficiency at that stage (fraction of the tier's nominal bandwidth).
#: T0: vanilla vLLM restart (26.9 s for a 13B model; weights at ~2.83 GB/s of 32 GB/s).
#: T1: component reuse (engine init removed); T2: explicit memory management (loading at the
#: profiled PCIe efficiency); T3: fine-grained KV synchronisation (~0.8 s for 13B on H800).
SWITCH_STAGES: dict[str, tuple[float, float]] = {
    "T0": (17.7, 2.83 / 34.36),
    "T1": (0.9, 2.83 / 34.36),
    "T2": (0.35, 0.625),
    "T3": (0.15, 0.625),
}


@dataclass(frozen=True)
class SwitchModel:
    """Cost of loading a model onto an instance: ``fixed + weights / (bandwidth * eff)``.

    Attributes:
        fixed_seconds: the stage's fixed part (engine re-initialisation, KV set-up), seconds.
        bandwidth: nominal bandwidth of the weight source tier, bytes/s.
        efficiency: fraction of ``bandwidth`` reached (Aegaeon's PCIe correction: 0.625).
        floor_seconds: least cost of a switch whose load was prefetched (10 ms).

    Worked example (T3, host DRAM on an H800: 64 GiB/s x 0.625): Llama-2-13B's 26.0 GB load
    in 0.61 s, plus 0.15 s fixed = 0.76 s; after 0.5 s of overlapped compute, 0.26 s; after
    2 s, the 10 ms floor.
    """

    fixed_seconds: float
    bandwidth: float
    efficiency: float
    floor_seconds: float = 0.010

    def switch_time(self, model: ModelShape, tp: int = 1) -> float:
        """Seconds to switch to ``model`` (TP groups load their shards in parallel)."""
        return self.fixed_seconds + model.weight_bytes / tp / (self.bandwidth * self.efficiency)

    def with_prefetch(self, full: float, overlapped: float) -> float:
        """Switch cost after ``overlapped`` seconds of background prefetch."""
        return max(self.floor_seconds, full - overlapped)


def switch_model_for(
    gpu: GPU, stage: str = "T3", tier: str = "dram", efficiency: float | None = None,
    fixed_seconds: float | None = None, bandwidth: float | None = None,
    floor_seconds: float = 0.010,
) -> SwitchModel:
    """Build the switch cost model of ``gpu`` at ``stage`` loading from ``tier``.

    ``tier`` picks the GPU profile's bandwidth (``dram``: the host link, ``ssd``, ``remote``);
    ``efficiency`` and ``fixed_seconds`` default to the stage's (:data:`SWITCH_STAGES`);
    ``bandwidth`` overrides the tier's. ``floor_seconds`` bounds a prefetched switch below.
    """
    fixed, eff = SWITCH_STAGES[stage]
    bw = {
        "dram": gpu.host_link_bandwidth,
        "ssd": gpu.ssd_bandwidth,
        "remote": gpu.remote_bandwidth,
    }[tier]
    return SwitchModel(
        fixed_seconds=fixed if fixed_seconds is None else fixed_seconds,
        bandwidth=bw if bandwidth is None else bandwidth,
        efficiency=eff if efficiency is None else efficiency,
        floor_seconds=floor_seconds,
    )


def roofline_decode_b(gpu: GPU, model: ModelShape, tp: int = 1) -> float:
    """Memory-bandwidth bound of the per-context-token decode coefficient (s/token)."""
    return model.kv_bytes_per_token / (gpu.hbm_bandwidth * tp)


def with_decode_b(profile: Profile, b: float) -> Profile:
    """A copy of ``profile`` with the per-context-token decode coefficient replaced."""
    return replace(profile, decode=replace(profile.decode, b=b))
