"""ServeGen per-tenant rate traces, regenerated as arrivals.

ServeGen (Alibaba Bailian) publishes, per client ("tenant") and per fixed window (600 s), the
request rate, the coefficient of variation of the inter-arrival gaps and the family fitted to
them. A trace file ``chunk-{N}-trace.csv`` has no header; each line is::

    window_start_s,rate_rps,cv,family,param1,param2

``family`` is ``Gamma``, ``Weibull`` or ``Exponential``, or empty for a window without traffic
(rate 0). A folder of such files is a pool of tenants (tenant ``chunk-N``); all files must list
the same windows.

Regeneration (:func:`generate_arrivals`): in each window every tenant is a stationary renewal
process whose gaps have mean ``1 / rate`` and the window's CV, with the window's family:
gamma (shape ``1/cv^2``), Weibull (shape solved from the CV), exponential (CV 1). The fitted
``param1, param2`` columns are not used: rate and CV define the law, the family its shape.
Each window starts in equilibrium (the first gap is a size-biased gap times a uniform), so the
expected count of a window is exactly ``rate * length``.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servesim.errors import TraceError

__all__ = ["RateTrace", "generate_arrivals", "read_servegen", "weibull_shape_for_cv"]

FAMILIES = ("", "Exponential", "Gamma", "Weibull")
"""Family codes of :attr:`RateTrace.family`: index into this tuple ("" = no traffic)."""
_NONE, _EXPONENTIAL, _GAMMA, _WEIBULL = range(4)
_CHUNK_NAME = re.compile(r"^chunk-(\d+)-trace\.csv$")
_LARGEST_CV = 1e15  # as weibull_shape_for_cv; larger CVs are taken as this one


@dataclass(frozen=True, eq=False)
class RateTrace:
    """Per-tenant, per-window arrival laws. Arrays are ``(tenants, windows)``."""

    tenants: tuple[str, ...]
    window_start: np.ndarray
    """float64 seconds, increasing, one per window."""
    window_length: np.ndarray
    """float64 seconds; the last window is as long as the one before it."""
    rate: np.ndarray
    """float64 requests/s."""
    cv: np.ndarray
    """float64 coefficient of variation of the gaps."""
    family: np.ndarray
    """int8 index into :data:`FAMILIES`."""

    @property
    def end(self) -> float:
        """Seconds: end of the last window."""
        return float(self.window_start[-1] + self.window_length[-1])

    def expected_count(self, start: float, end: float) -> float:
        """Expected number of arrivals of all tenants in ``[start, end)`` (trace seconds)."""
        lo = np.clip(self.window_start, start, end)
        hi = np.clip(self.window_start + self.window_length, start, end)
        return float((self.rate * (hi - lo)).sum())


def read_servegen(path: str | Path) -> RateTrace:
    """Read one ``chunk-N-trace.csv`` or a folder of them (tenants sorted by N)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if _CHUNK_NAME.match(p.name)),
            key=lambda p: int(_CHUNK_NAME.match(p.name).group(1)),  # type: ignore[union-attr]
        )
        if not files:
            raise TraceError(f"{path}: no chunk-N-trace.csv files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise TraceError(f"{path}: file not found")
    starts: np.ndarray | None = None
    rates, cvs, families, tenants = [], [], [], []
    for file in files:
        window_start, rate, cv, family = _read_file(file)
        if starts is None:
            starts = window_start
        elif window_start.shape != starts.shape or not np.array_equal(window_start, starts):
            raise TraceError(f"{file}: windows differ from those of {files[0].name}; every "
                             "tenant of a folder must list the same windows")
        rates.append(rate)
        cvs.append(cv)
        families.append(family)
        tenants.append(file.name.removesuffix("-trace.csv"))
    assert starts is not None
    lengths = np.diff(starts)
    lengths = np.append(lengths, lengths[-1] if lengths.size else 600.0)
    return RateTrace(tuple(tenants), starts, lengths, np.array(rates), np.array(cvs),
                     np.array(families, dtype=np.int8))


def _read_file(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    starts: list[float] = []
    rates: list[float] = []
    cvs: list[float] = []
    families: list[int] = []
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                where = f"{file}:{reader.line_num}"
                if len(row) != 6:
                    raise TraceError(f"{where}: expected 6 fields (window_start,rate,cv,family,"
                                     f"param1,param2), got {len(row)}")
                start, rate, cv = (_number(row[k], name, where) for k, name in
                                   ((0, "window start"), (1, "rate"), (2, "cv")))
                family = row[3].strip()
                if family not in FAMILIES:
                    raise TraceError(f"{where}: family {family!r} is not one of Gamma, Weibull, "
                                     "Exponential (or empty for no traffic)")
                if starts and start <= starts[-1]:
                    raise TraceError(f"{where}: window start {row[0].strip()} is not after the "
                                     f"previous window's {starts[-1]:g}")
                code = FAMILIES.index(family)
                if code == _NONE:
                    rate = 0.0
                starts.append(start)
                rates.append(rate)
                cvs.append(cv)
                families.append(code)
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{file}: cannot read: {exc}") from None
    if not starts:
        raise TraceError(f"{file}:1: empty trace, no window")
    return (np.array(starts), np.array(rates), np.array(cvs),
            np.array(families, dtype=np.int8))


def _number(text: str, name: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {name} {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {name} {text.strip()!r} must be a finite number >= 0")
    return value


@functools.lru_cache(maxsize=4096)
def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape ``k`` whose coefficient of variation is ``cv`` (bisection on log k).

    ``cv^2 = Gamma(1 + 2/k) / Gamma(1 + 1/k)^2 - 1`` decreases in ``k``; the result is kept
    in ``[0.05, 50]`` (CV from about 1e15 down to 0.03).
    """
    def cv_of(k: float) -> float:
        log_ratio = math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)
        return math.sqrt(max(math.expm1(log_ratio), 0.0))

    lo, hi = math.log(0.05), math.log(50.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if cv_of(math.exp(mid)) > cv:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def _window(family: int, rate: float, cv: float, start: float, end: float,
            rng: np.random.Generator) -> np.ndarray:
    """Equilibrium renewal arrivals in ``[start, end)`` (see the module docstring)."""
    if family == _EXPONENTIAL or (family == _GAMMA and cv == 1.0):
        family, cv = _GAMMA, 1.0
    if not cv * cv > 1e-300:  # constant gaps: the gamma shape 1/cv^2 would overflow
        cv = 0.0
    cv = min(cv, _LARGEST_CV)
    if cv == 0.0:
        gap = 1.0 / rate
        times = start + gap * (rng.random() + np.arange(math.ceil((end - start) * rate) + 1))
        return times[times < end]
    if family == _GAMMA:
        shape = 1.0 / (cv * cv)
        scale = 1.0 / (rate * shape)

        def gaps(n: int) -> np.ndarray:
            return rng.gamma(shape, scale, size=n)

        biased = float(rng.gamma(shape + 1.0, scale))
    else:
        shape = weibull_shape_for_cv(cv)
        scale = 1.0 / (rate * math.gamma(1.0 + 1.0 / shape))

        def gaps(n: int) -> np.ndarray:
            return scale * rng.weibull(shape, size=n)

        # Size-biased Weibull: (X/scale)^k ~ Gamma(1 + 1/k).
        biased = scale * float(rng.gamma(1.0 + 1.0 / shape)) ** (1.0 / shape)
    now = start + biased * float(rng.random())
    if now >= end:
        return np.empty(0)
    pieces = [np.array([now])]
    while True:
        expected = rate * (end - now)
        # the chunk size only saves rounds; 1e4 bounds its memory (real CVs reach ~1e3)
        chunk = gaps(int(expected + 6.0 * min(max(cv, 1.0), 1e4) * math.sqrt(expected) + 64))
        times = now + np.cumsum(chunk)
        inside = int(np.searchsorted(times, end, side="left"))
        pieces.append(times[:inside])
        if inside < times.size:
            return np.concatenate(pieces)
        now = float(times[-1])


def generate_arrivals(
    trace: RateTrace, start: float, end: float, rng: np.random.Generator,
    rate_factor: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (trace seconds, sorted) in ``[start, end)`` and the tenant index of each.

    Every rate is multiplied by ``rate_factor``. Draws go tenant by tenant, window by window,
    from ``rng`` only, so the same generator state gives the same arrays.
    """
    if not (rate_factor > 0 and math.isfinite(rate_factor)):
        raise ValueError(f"rate_factor must be a finite number > 0, got {rate_factor}")
    times: list[np.ndarray] = []
    tenant: list[np.ndarray] = []
    window_end = trace.window_start + trace.window_length
    active = np.flatnonzero((window_end > start) & (trace.window_start < end))
    for t in range(len(trace.tenants)):
        for w in active.tolist():
            rate = float(trace.rate[t, w]) * rate_factor
            if rate <= 0.0 or trace.family[t, w] == _NONE:
                continue
            lo = max(start, float(trace.window_start[w]))
            hi = min(end, float(window_end[w]))
            got = _window(int(trace.family[t, w]), rate, float(trace.cv[t, w]), lo, hi, rng)
            times.append(got)
            tenant.append(np.full(got.size, t, dtype=np.int32))
    if not times:
        return np.empty(0), np.empty(0, dtype=np.int32)
    all_times = np.concatenate(times)
    all_tenants = np.concatenate(tenant)
    order = np.argsort(all_times, kind="stable")
    return all_times[order], all_tenants[order]
