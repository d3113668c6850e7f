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
from servesim.workload.popularity import PopularitySpec


def check_file_name(name: str | None, path: str) -> None:
    """Refuse a file name that no file can have: empty, or with a NUL character."""
    if name is not None and (not name.strip() or "\x00" in name):
        text = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
        raise ScenarioError(f"{path}: {text} is not a file name (empty or with a NUL character)")


@dataclass(frozen=True)
class ArrivalSpec:
    """An arrival process. Rates are requests per second."""

    kind: Literal["poisson", "gamma", "deterministic", "onoff", "ramp", "piecewise"] = fld(
        "poisson",
        "poisson: exponential gaps; gamma: gamma gaps with coefficient of variation `cv`; "
        "deterministic: constant gap 1/rate with a random phase; onoff: `process` arrivals at "
        "`rate` during `on` seconds, none during `off` seconds, repeating; ramp: `process` "
        "arrivals whose rate goes linearly from `rate` at the source's start to `rate_end` at "
        "its end; piecewise: `process` arrivals at `rates[i]` from `times[i]` seconds after the "
        "source's start",
    )
    rate: float | None = fld(
        None, "requests/s of this process; null takes the source's (or workload's) rate", gt=0
    )
    cv: float = fld(1.0, "gamma: coefficient of variation of the inter-arrival gaps", gt=0)
    on: float = fld(60.0, "onoff: seconds of each on period", gt=0)
    off: float = fld(60.0, "onoff: seconds of each off period", ge=0)
    process: Literal["poisson", "deterministic"] = fld(
        "poisson",
        "onoff, ramp, piecewise: the arrival process (run on the clock of the integrated rate)",
    )
    rate_end: float | None = fld(None, "ramp: requests/s at the end of the source", gt=0)
    times: list[float] = fld(
        factory=lambda: (0.0,),
        doc="piecewise: seconds after the source's start at which each rate begins (from 0, "
            "increasing)",
    )
    rates: list[float] = fld(factory=tuple, doc="piecewise: requests/s of each piece")

    def validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        if self.kind == "ramp" and self.rate_end is None:
            raise ScenarioError(f"{p}rate_end: required when kind is 'ramp'")
        if self.kind == "piecewise":
            if not self.rates or len(self.rates) != len(self.times):
                raise ScenarioError(
                    f"{p}rates: piecewise needs one rate per entry of times ({len(self.times)}),"
                    f" got {len(self.rates)}"
                )
            if self.times[0] != 0 or any(b <= a for a, b in zip(self.times, self.times[1:],
                                                                strict=False)):
                raise ScenarioError(f"{p}times: must start at 0 and increase, got "
                                    f"{list(self.times)}")
            if min(self.rates) <= 0:
                raise ScenarioError(f"{p}rates: every rate must be > 0, got {list(self.rates)}")


@dataclass(frozen=True)
class LengthSpec:
    """A distribution of (input, output) token lengths."""

    kind: Literal["fixed", "uniform", "lognormal", "empirical", "sharegpt"] = fld(
        "sharegpt",
        "fixed: `input`/`output`; uniform: integers in [min, max]; lognormal: by median and "
        "sigma (log-space std); empirical: (input, output) pairs drawn from the CSV `file`; "
        "sharegpt: ShareGPT lengths of convention `preset`, from the committed token-count "
        "table (`source: table`) or its lognormal fit (`source: lognormal`)",
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
    source: Literal["table", "lognormal"] = fld(
        "table",
        "sharegpt: table draws whole (input, output) rows of traces/sharegpt-vllm-llama3.csv "
        "(vllm) or traces/sharegpt-aegaeon-qwen.csv (aegaeon); lognormal draws from the "
        "lognormal preset fitted to them, capped at 4096 tokens unless `max_context` is set",
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
        check_file_name(self.file, f"{p}file")


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
    gives 60/20/20 by ``i mod 10``), each with its own source at ``rate`` req/s, or at the
    per-model rates of ``popularity`` (whose mean is ``rate``; model 0 the most popular).
    """

    models: int | None = fld(
        None, "many-models form: number of models to deploy (null: use top-level `models`)", ge=1,
        le=100_000,
    )
    rate: float = fld(
        0.1, "requests/s per source (per model in the many-models form; the mean per-model rate "
        "with `popularity`)", gt=0,
    )
    mix: dict[str, int] = fld(
        factory=lambda: {"qwen2.5-7b": 1},
        doc="many-models form: catalog model -> integer weight; model i takes entry i mod total",
    )
    arrival: ArrivalSpec = fld(factory=ArrivalSpec, doc="default arrival process of sources")
    lengths: LengthSpec = fld(factory=LengthSpec, doc="default length distribution of sources")
    sources: list[SourceSpec] = fld(
        factory=tuple, doc="explicit sources; empty = one source per deployed model ('*')"
    )
    popularity: PopularitySpec = fld(
        factory=PopularitySpec,
        doc="spread of the per-model rate over models (equal, power law, lognormal long tail)",
    )
    trace: str | None = fld(
        None,
        "replay this trace file (or ServeGen folder) instead of generating arrivals (relative "
        "paths: scenario folder, then working directory); models named in it are deployed by "
        "name",
    )
    trace_format: Literal["auto", "aegaeon", "azure", "mooncake", "vtc", "burstgpt",
                          "servegen"] = fld(
        "auto",
        "format of `trace` (docs/workloads.md); auto: detected from the file name and first "
        "line; servegen: per-tenant rate windows regenerated as arrivals, lengths from "
        "`lengths`",
    )
    trace_sort: bool = fld(False, "trace: sort rows by time instead of refusing unsorted input")
    trace_start: float = fld(
        0.0, "trace: skip this many seconds of the trace (trace time, before scaling)", ge=0
    )
    time_scale: float = fld(1.0, "trace: multiply every timestamp (2 = half the rate)", gt=0)
    trace_rate: float | None = fld(
        None,
        "trace: rescale to this mean rate in req/s (replayed traces are compressed or "
        "stretched in time; ServeGen rates are multiplied); excludes time_scale",
        gt=0,
    )
    trace_model: str | None = fld(
        None,
        "trace without a model column (azure, mooncake, vtc, servegen): the deployed model its "
        "requests go to; null: the only deployed model, or a uniformly random one per request "
        "when several are deployed (one named 'model' when none is)",
    )
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
            if weight > 1_000_000:  # the mix is expanded by its weights
                raise ScenarioError(f"{p}mix.{name}: weight must be <= 1000000, got {weight}")
        if not self.mix:
            raise ScenarioError(f"{p}mix: needs at least one model")
        if self.trace_rate is not None and self.time_scale != 1.0:
            raise ScenarioError(f"{p}trace_rate: set either trace_rate or time_scale, not both")
        check_file_name(self.trace, f"{p}trace")
