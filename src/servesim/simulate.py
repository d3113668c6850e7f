"""Assembly: a validated scenario -> deployed models, request table, policy, world -> Result.

This is the one module that knows everything. Every error a user can cause is raised by
:func:`prepare` (before the run starts) as a one-line :class:`ServesimError`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim import metrics
from servesim.engine.requests import RequestTable
from servesim.engine.world import ClusterLatency, InstanceSpec, World
from servesim.errors import ScenarioError, ServesimError, TraceError, did_you_mean
from servesim.hardware import ModelShape, custom_model, get_gpu, get_model
from servesim.latency import load_profile, switch_model_for
from servesim.policies import get_policy
from servesim.scenario import MAX_TIMELINE_WINDOWS, Scenario
from servesim.workload.arrivals import MAX_ARRIVALS, generate_arrivals, peak_rate
from servesim.workload.lengths import sample_lengths
from servesim.workload.popularity import model_rates
from servesim.workload.replay import DEFAULT_TRACE_MODEL, assign_models, replay_trace
from servesim.workload.spec import ArrivalSpec, LengthSpec

_LARGEST_LENGTH = 1 << 40
"""Tokens: lengths are clipped to this before the cast to int64 (the context cap follows)."""


@dataclass
class Deployment:
    """Resolved deployed models: names (request table codes) and shapes."""

    names: list[str]
    shapes: list[ModelShape]


def _mix_cycle(scenario: Scenario) -> list[ModelShape]:
    cycle: list[ModelShape] = []
    for name, weight in scenario.workload.mix.items():
        cycle += [get_model(name)] * weight
    return cycle


def _shape_for(spec_name: str, base: str | None, overrides: dict[str, Any]) -> ModelShape:
    if base is None:
        try:
            shape = get_model(spec_name)
        except ServesimError:
            return custom_model(spec_name, None, **overrides)
        return custom_model(spec_name, shape, **overrides) if overrides else shape
    return custom_model(spec_name, get_model(base), **overrides)


def deploy_models(scenario: Scenario, trace_models: list[str] | None = None) -> Deployment:
    """The deployed model set of a scenario (see WorkloadSpec's docstring)."""
    names: list[str] = []
    shapes: list[ModelShape] = []
    for i, spec in enumerate(scenario.models):
        overrides = spec.shape_overrides()
        try:
            shape = _shape_for(spec.name, spec.base, overrides)
        except TypeError as exc:
            raise ScenarioError(f"models[{i}]: incomplete inline shape ({exc})") from None
        for k in range(spec.count):
            name = spec.name if spec.count == 1 else f"{spec.name}-{k}"
            names.append(name)
            shapes.append(shape if spec.count == 1 else custom_model(name, shape))
    cycle = _mix_cycle(scenario)
    if trace_models is not None:
        known = set(names)
        for pos, tm in enumerate(trace_models):
            if tm in known:
                continue
            digits = re.search(r"(\d+)$", tm)
            idx = int(digits.group(1)) if digits else pos
            names.append(tm)
            shapes.append(cycle[idx % len(cycle)])
    elif not names:
        count = scenario.workload.models
        if count is None:
            raise ScenarioError("workload.models: no models deployed")
        width = max(2, len(str(count - 1)))
        for i in range(count):
            names.append(f"synth_model_{i:0{width}d}")
            shapes.append(cycle[i % len(cycle)])
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ScenarioError(f"models: deployed name {dup!r} appears twice")
    return Deployment(names, shapes)


@dataclass
class Prepared:
    """Everything a run needs, built and validated before it starts."""

    scenario: Scenario
    deployment: Deployment
    tenants: list[str]
    requests: RequestTable
    instances: list[InstanceSpec]
    latency: ClusterLatency
    n_sources: int = 0
    notes: list[str] = field(default_factory=list)


def _generate(scenario: Scenario, dep: Deployment) -> tuple[dict[str, np.ndarray], list[str], int]:
    wl = scenario.workload
    sources = list(wl.sources)
    expanded: list[tuple[int, str, float, ArrivalSpec, LengthSpec, float, float]] = []
    index = {n: i for i, n in enumerate(dep.names)}
    if not sources:  # one source per model, at the popularity's per-model rates
        rates = model_rates(wl.popularity, len(dep.names), wl.rate).tolist()
        for m in range(len(dep.names)):
            expanded.append((m, "default", rates[m], wl.arrival, wl.lengths, 0.0,
                             scenario.duration))
    for s_i, src in enumerate(sources):
        if src.model == "*":
            targets = list(range(len(dep.names)))
        elif src.model in index:
            targets = [index[src.model]]
        else:
            from servesim.errors import did_you_mean

            raise ScenarioError(
                f"workload.sources[{s_i}].model: {src.model!r} is not a deployed model"
                f"{did_you_mean(src.model, dep.names)}; deployed: {', '.join(dep.names[:10])}"
                + (" ..." if len(dep.names) > 10 else "")
            )
        end = min(src.end if src.end is not None else scenario.duration, scenario.duration)
        src_rate = src.rate if src.rate is not None else wl.rate
        rates = [src_rate] * len(targets)
        if src.model == "*":  # '*' spreads the source's rate by popularity (mean = src_rate)
            rates = model_rates(wl.popularity, len(targets), src_rate).tolist()
        for m, rate in zip(targets, rates, strict=True):
            expanded.append((m, src.tenant, rate,
                             src.arrival or wl.arrival, src.lengths or wl.lengths,
                             src.start, end))
    expected = sum(peak_rate(arr, rate) * max(0.0, end - start)
                   for _, _, rate, arr, _, start, end in expanded)
    if expected > MAX_ARRIVALS:
        raise ScenarioError(
            f"workload: up to {expected:.3g} requests would arrive (rates x duration); at most "
            f"{MAX_ARRIVALS:,} per run: lower workload.rate, the sources' rates or duration"
        )
    children = np.random.SeedSequence(scenario.seed).spawn(len(expanded))
    tenants: list[str] = []
    tenant_idx: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("time", "model", "tenant", "source", "input", "output")}
    for s, (m, tenant, rate, arr, lens, start, end) in enumerate(expanded):
        if tenant not in tenant_idx:
            tenant_idx[tenant] = len(tenants)
            tenants.append(tenant)
        rng = np.random.default_rng(children[s])
        times = generate_arrivals(arr, rate, start, end, rng) if end > start else np.zeros(0)
        try:
            inp, out = sample_lengths(lens, int(times.shape[0]), rng, base_dir=_base(scenario))
        except TraceError as exc:
            raise TraceError(f"workload.lengths.file: {exc}") from None
        except OSError as exc:  # e.g. a file name too long for the file system
            raise TraceError(f"workload.lengths.file: {lens.file}: cannot read "
                             f"({exc.strerror or exc})") from None
        n = times.shape[0]
        parts["time"].append(times)
        parts["model"].append(np.full(n, m, dtype=np.int32))
        parts["tenant"].append(np.full(n, tenant_idx[tenant], dtype=np.int32))
        parts["source"].append(np.full(n, s, dtype=np.int32))
        parts["input"].append(inp)
        parts["output"].append(out)
    cols = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    return cols, tenants or ["default"], len(expanded)


def _base(scenario: Scenario) -> Path | None:
    return Path(scenario.base_dir) if scenario.base_dir else None


def prepare(scenario: Scenario) -> Prepared:
    """Resolve models, instances, profiles and requests; validate what needs the catalog."""
    wl = scenario.workload
    replay = None
    if wl.trace is not None:
        try:
            replay = replay_trace(wl, scenario.resolve_path(wl.trace), scenario.duration,
                                  scenario.seed, _base(scenario))
        except TraceError as exc:
            raise TraceError(f"workload.trace: {exc}") from None
        except OSError as exc:  # e.g. a file name too long for the file system
            raise TraceError(f"workload.trace: {wl.trace}: cannot read ({exc.strerror or exc})"
                             ) from None
        if replay.model_names is not None and wl.trace_model is None:
            dep = deploy_models(scenario, list(replay.model_names))
        elif scenario.models or wl.models is not None:
            dep = deploy_models(scenario)
        else:  # a trace without model names and nothing deployed: one model
            dep = deploy_models(scenario, [wl.trace_model or DEFAULT_TRACE_MODEL])
    else:
        dep = deploy_models(scenario)

    # instances
    instances: list[InstanceSpec] = []
    for g_i, group in enumerate(scenario.cluster):
        gpu = get_gpu(group.gpu)
        for _ in range(group.count):
            instances.append(InstanceSpec(gpu=gpu, tp=group.tp, role=group.role, group=g_i))
    sw = scenario.switching
    latency = ClusterLatency(
        dep.shapes,
        profile_for=lambda gpu, shape, tp: load_profile(gpu, shape, tp),
        switch_for=lambda gpu: switch_model_for(
            gpu, sw.stage, sw.tier, sw.efficiency, sw.fixed_seconds, sw.bandwidth,
            sw.prefetch_floor_seconds),
        usable_fraction=scenario.engine.usable_fraction,
        block_size=scenario.engine.block_size,
        kv_transfer_seconds_per_token=sw.kv_seconds_per_token,
        kv_tokens=scenario.engine.kv_tokens,
        prefetch=sw.prefetch,
    )
    # every model must fit at least one instance group; profiles must exist or be derivable
    groups = {(s.gpu.name, s.tp): s.gpu for s in instances}
    for m in range(len(dep.shapes)):
        errors = []
        for (_gpu_name, tp), gpu in groups.items():
            try:
                latency.capacity_of(gpu, tp, m)
                latency.profile(gpu, tp, m)
                break
            except ServesimError as exc:
                errors.append(str(exc))
        else:
            raise ScenarioError(f"models: {dep.names[m]}: {errors[0]}")

    # requests
    if replay is not None:
        if replay.model_names is not None and wl.trace_model is None:
            name_to_idx = {n: i for i, n in enumerate(dep.names)}
            model_codes = np.array([name_to_idx[n] for n in replay.model_names], dtype=np.int32)
            trace_model = model_codes[replay.model_index]
        else:
            trace_model = assign_models(replay, dep.names, wl.trace_model, scenario.seed)
        cols = {
            "time": replay.time,
            "model": trace_model,
            "tenant": replay.tenant_index.astype(np.int32),
            "source": np.zeros(replay.time.size, dtype=np.int32),
            "input": replay.input,
            "output": replay.output,
        }
        tenants = list(replay.tenants)
        n_sources = 1
    else:
        cols, tenants, n_sources = _generate(scenario, dep)
    # clipped before the cast: a huge scale must not wrap around int64
    inp = np.clip(np.rint(cols["input"] * wl.input_scale), 1, _LARGEST_LENGTH).astype(np.int64)
    out = np.clip(np.rint(cols["output"] * wl.output_scale), 1, _LARGEST_LENGTH).astype(np.int64)
    caps = np.array([wl.max_context or s.max_context for s in dep.shapes], dtype=np.int64)
    model = cols["model"].astype(np.int32)
    if inp.size:  # the cap differs per model: input first, then output (as apply_context_cap)
        cap = caps[model]
        inp = np.minimum(inp, cap - 1)
        out = np.maximum(1, np.minimum(out, cap - inp))
    order = np.argsort(cols["time"], kind="stable")
    n = int(order.shape[0])
    table = RequestTable(
        arrival=cols["time"][order],
        model=model[order],
        tenant=cols["tenant"][order],
        source=cols["source"][order],
        input_len=inp[order],
        output_len=out[order],
        ttft_slo=np.full(n, scenario.ttft),
        tbt_slo=np.full(n, scenario.tbt),
    )
    for name in scenario.tenants:
        if name not in tenants:  # a trace's tenants are known only now
            raise ScenarioError(f"tenants.{name}: no request of the workload has this tenant"
                                f"{did_you_mean(name, tenants)}")
    return Prepared(scenario, dep, tenants, table, instances, latency, n_sources)


@dataclass
class Result:
    """The outcome of one run.

    Attributes:
        scenario: the resolved scenario that ran.
        summary: flat dict of the keys in :data:`servesim.metrics.SUMMARY_KEYS`.
        requests, instances, tenants, timeline: DataFrames (docs/outputs.md).
        token_times: per-request arrays of token emission times when
            ``outputs.token_times`` is true, else None.
    """

    scenario: Scenario
    summary: dict[str, Any]
    requests: pd.DataFrame
    instances: pd.DataFrame
    tenants: pd.DataFrame
    timeline: pd.DataFrame
    token_times: list[np.ndarray] | None = None
    stop_reason: str = "drained"

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write summary.json, the Parquet tables and scenario.yaml into ``out_dir``.

        Files are written into a temporary folder first and moved in place at the end,
        ``summary.json`` last, so a folder with a summary is always complete.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
        try:
            self.requests.to_parquet(tmp / "requests.parquet", index=False)
            self.instances.to_parquet(tmp / "instances.parquet", index=False)
            self.tenants.to_parquet(tmp / "tenants.parquet", index=False)
            self.timeline.to_parquet(tmp / "timeline.parquet", index=False)
            (tmp / "scenario.yaml").write_text(self.scenario.to_yaml(), encoding="utf-8")
            (tmp / "summary.json").write_text(
                json.dumps(_jsonable(self.summary), indent=2) + "\n", encoding="utf-8")
            (out / "summary.json").unlink(missing_ok=True)
            for name in ("requests.parquet", "instances.parquet", "tenants.parquet",
                         "timeline.parquet", "scenario.yaml", "summary.json"):
                os.replace(tmp / name, out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


def simulate(
    scenario: Scenario,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Run one simulation of ``scenario`` and return its :class:`Result`.

    Args:
        scenario: a validated scenario (see :func:`servesim.load_scenario`).
        progress: called as ``progress(arrived, total)`` about every 1 % of arrivals.
    """
    wall0 = time.perf_counter()
    prep = prepare(scenario)
    policy_cls = get_policy(scenario.policy.name)
    policy = policy_cls(scenario.policy.params)
    world = World(
        prep.requests,
        prep.instances,
        policy,
        prep.latency,
        block_size=scenario.engine.block_size,
        lookahead=scenario.engine.lookahead,
        start_timeout=scenario.slo.start_timeout,
        max_time=scenario.engine.max_time,
        record_token_times=scenario.outputs.token_times,
        check=scenario.engine.check,
        stepwise=scenario.engine.mode == "stepwise",
        tenant_weights=[scenario.tenants[t].weight if t in scenario.tenants else 1.0
                        for t in prep.tenants],
    )
    if progress is not None:
        world.progress = progress
    world.run()
    end = max(world.env.now, scenario.duration)
    interval = scenario.outputs.timeline_interval
    if not end / interval <= 10 * MAX_TIMELINE_WINDOWS:  # days-long switches, say
        raise ScenarioError(
            f"outputs.timeline_interval: the run lasted {end:.3g} s of simulated time, "
            f"{end / interval:.3g} timeline windows of {interval:g} s (at most "
            f"{10 * MAX_TIMELINE_WINDOWS:,}); use a longer interval or set engine.max_time"
        )
    frame = metrics.requests_frame(world, prep.deployment.names, prep.tenants)
    instances = metrics.instances_frame(world, prep.deployment.names)
    tenants = metrics.tenants_frame(frame, world.tenant_weights)
    timeline = metrics.timeline_frame(frame, interval, end)
    token_times = None
    if world.token_times is not None and world.token_offsets is not None:
        offs = world.token_offsets
        token_times = [world.token_times[offs[i]: offs[i] + prep.requests.generated[i]]
                       for i in range(prep.requests.n)]
        frame["tbt_p99"] = [float(np.percentile(np.diff(t), 99)) if t.shape[0] > 1 else np.nan
                            for t in token_times]
    summary = metrics.summary(world, frame, scenario.duration, time.perf_counter() - wall0)
    return Result(scenario, summary, frame, instances, tenants, timeline, token_times,
                  world.stop_reason)
