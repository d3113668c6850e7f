"""Configuration of workloads: arrival processes, length distributions, sources.

These frozen dataclasses are part of the scenario schema (``workload:`` in YAML). The
generators that turn them into arrays live in :mod:`servesim.workload.arrivals`,
:mod:`servesim.workload.lengths` and :mod:`servesim.workload.traces`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servesim.config import fld
from servesim.errors import ScenarioError


@dataclass(frozen=True)
class ArrivalSpec:
    """An arrival process. Rates are requests per second."""

    kind: Literal["poisson", "gamma", "deterministic", "onoff"] = fld(
        "poisson",
        "poisson: exponential gaps; gamma: gamma gaps with coefficient of variation `cv`; "
        "deterministic: constant gap 1/rate with a random phase; onoff: `process` arrivals at "
        "`rate` during `on` seconds, none during `off` seconds, repeating",
    )
    rate: float | None = fld(
        None, "requests/s of this process; null takes the source's (or workload's) rate", gt=0
    )
    cv: float = fld(1.0, "gamma: coefficient of variation of the inter-arrival gaps", gt=0)
    on: float = fld(60.0, "onoff: seconds of each on period", gt=0)
    off: float = fld(60.0, "onoff: seconds of each off period", ge=0)
    process: Literal["poisson", "deterministic"] = fld(
        "poisson", "onoff: the arrival process inside on periods"
    )


@dataclass(frozen=True)
class LengthSpec:
    """A distribution of (input, output) token lengths."""

    kind: Literal["fixed", "uniform", "lognormal", "empirical", "sharegpt"] = fld(
        "sharegpt",
        "fixed: `input`/`output`; uniform: integers in [min, max]; lognormal: by median and "
        "sigma (log-space std); empirical: (input, output) pairs drawn from the CSV `file`; "
        "sharegpt: lognormal fitted to ShareGPT, convention `preset`",
    )
    input: int = fld(256, "fixed: input tokens", ge=1)
    output: int = fld(256, "fixed: output tokens", ge=1)
    input_min: int = fld(16, "uniform: smallest input", ge=1)
    input_max: int = fld(1024, "uniform: largest input", ge=1)
    output_min: int = fld(16, "uniform: smallest output", ge=1)
    output_max: int = fld(512, "uniform: largest output", ge=1)
    input_median: float = fld(512.0, "lognormal: median input tokens", gt=0)
    input_sigma: float = fld(0.7, "lognormal: sigma of log(input)", ge=0)
    output_median: float = fld(256.0, "lognormal: median output tokens", gt=0)
    output_sigma: float = fld(0.5, "lognormal: sigma of log(output)", ge=0)
    file: str | None = fld(
        None,
        "empirical: CSV with columns input,output (or input_tokens,output_tokens); a relative "
        "path is resolved against the scenario file's folder, then the working directory",
    )
    preset: Literal["aegaeon", "vllm"] = fld(
        "aegaeon",
        "sharegpt: aegaeon (one sample per assistant turn, whole history as input) or vllm "
        "(benchmark_serving's first-two-turns sampling and length filters)",
    )
    input_scale: float = fld(1.0, "multiply every input length (ShareGPT-ix2 = 2)", gt=0)
    output_scale: float = fld(1.0, "multiply every output length (ShareGPT-ox2 = 2)", gt=0)
    max_context: int | None = fld(
        None, "cap input + output tokens (input first, then output are shortened)", ge=2
    )

    def validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        if self.input_min > self.input_max:
            raise ScenarioError(f"{p}input_min: must be <= input_max ({self.input_max})")
        if self.output_min > self.output_max:
            raise ScenarioError(f"{p}output_min: must be <= output_max ({self.output_max})")
        if self.kind == "empirical" and not self.file:
            raise ScenarioError(f"{p}file: required when kind is 'empirical'")


@dataclass(frozen=True)
class SourceSpec:
    """One stream of requests: one model, one tenant, one arrival process, one length law."""

    model: str = fld(
        "*", "deployed model name the requests go to; '*' = every deployed model (one source each)"
    )
    tenant: str = fld("default", "tenant (client) the requests belong to")
    rate: float | None = fld(None, "requests/s; null takes workload.rate", gt=0)
    arrival: ArrivalSpec | None = fld(None, "arrival process; null takes workload.arrival")
    lengths: LengthSpec | None = fld(None, "length distribution; null takes workload.lengths")
    start: float = fld(0.0, "seconds: first possible arrival", ge=0)
    end: float | None = fld(None, "seconds: no arrival at or after this; null = duration", gt=0)


@dataclass(frozen=True)
class WorkloadSpec:
    """What arrives. Either generated sources or the replay of a trace file.

    The many-models form (used by the quickstart and the paper scenarios) deploys
    ``models`` models named ``synth_model_00``, ``synth_model_01``, ... whose base models
    cycle through ``mix`` (model ``i`` takes the entry at position ``i mod sum(weights)`` of
    the mix expanded by its integer weights: ``{qwen2.5-7b: 6, yi-1.5-9b: 2, llama-2-13b: 2}``
    gives 60/20/20 by ``i mod 10``), each with its own source at ``rate`` req/s.
    """

    models: int | None = fld(
        None, "many-models form: number of models to deploy (null: use top-level `models`)", ge=1
    )
    rate: float = fld(0.1, "requests/s per source (per model in the many-models form)", gt=0)
    mix: dict[str, int] = fld(
        factory=lambda: {"qwen2.5-7b": 1},
        doc="many-models form: catalog model -> integer weight; model i takes entry i mod total",
    )
    arrival: ArrivalSpec = fld(factory=ArrivalSpec, doc="default arrival process of sources")
    lengths: LengthSpec = fld(factory=LengthSpec, doc="default length distribution of sources")
    sources: list[SourceSpec] = fld(
        factory=tuple, doc="explicit sources; empty = one source per deployed model ('*')"
    )
    trace: str | None = fld(
        None,
        "replay this trace file instead of generating arrivals (relative paths: scenario "
        "folder, then working directory); models named in it are deployed by name",
    )
    trace_format: Literal["aegaeon"] = fld("aegaeon", "format of `trace`")
    time_scale: float = fld(1.0, "trace: multiply every timestamp (2 = half the rate)", gt=0)
    input_scale: float = fld(1.0, "multiply every input length (generated or replayed)", gt=0)
    output_scale: float = fld(1.0, "multiply every output length (generated or replayed)", gt=0)
    max_context: int | None = fld(
        None, "cap input + output tokens; null = the model's max_context", ge=2
    )

    def validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        for name, weight in self.mix.items():
            if weight < 1:
                raise ScenarioError(f"{p}mix.{name}: weight must be an integer >= 1, got {weight}")
        if not self.mix:
            raise ScenarioError(f"{p}mix: needs at least one model")
