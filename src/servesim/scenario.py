"""Scenarios: frozen dataclasses, YAML loading, ``--set`` overrides and validation.

A scenario is YAML loaded into :class:`Scenario`. Every field has a default and a docstring
(``docs/scenario-reference.md`` is generated from them). Validation happens at load time and
names the field path, the bad value and what is allowed::

    >>> load_scenario("scenarios/quickstart.yaml", overrides={"workload.rate": 0.5})
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from servesim.config import _short, build, fld, to_plain
from servesim.errors import ScenarioError, ServesimError, did_you_mean
from servesim.hardware import get_gpu, get_model
from servesim.policies import get_policy
from servesim.workload.spec import WorkloadSpec

MAX_TIMELINE_WINDOWS = 1_000_000
"""Most windows of ``outputs.timeline_interval`` over the scenario's duration (each is a row of
the timeline table per tenant; the run's drain adds more)."""


@dataclass(frozen=True)
class InstanceGroup:
    """A group of identical instances (one GPU, or a tensor-parallel group of GPUs, each)."""

    gpu: str = fld("H800", "GPU type: H800, H100, H20, A100, A10, A10G (case-insensitive)")
    count: int = fld(1, "number of instances in the group", ge=1, le=100_000)
    role: Literal["both", "prefill", "decode"] = fld(
        "both", "what the instances do (disaggregating policies use prefill/decode pools)"
    )
    tp: int = fld(1, "GPUs per instance (tensor parallelism)", ge=1, le=64)

    def validate(self, path: str) -> None:
        try:
            get_gpu(self.gpu)
        except ServesimError as exc:
            raise ScenarioError(f"{path}.gpu: {exc}") from None


@dataclass(frozen=True)
class ModelSpec:
    """Deployed model(s): a catalog model, optionally with inline shape overrides."""

    name: str = fld(doc="deployed name (requests and traces refer to it)")
    base: str | None = fld(None, "catalog model; null: `name` itself is a catalog model")
    count: int = fld(1, "deploy this many copies, named <name>-0, <name>-1, ...", ge=1,
                     le=100_000)
    layers: int | None = fld(None, "inline shape: transformer layers", ge=1)
    hidden: int | None = fld(None, "inline shape: hidden size", ge=1)
    ffn: int | None = fld(None, "inline shape: FFN size", ge=1)
    heads: int | None = fld(None, "inline shape: attention heads", ge=1)
    kv_heads: int | None = fld(None, "inline shape: KV heads", ge=1)
    head_dim: int | None = fld(None, "inline shape: head dimension", ge=1)
    params: float | None = fld(None, "inline shape: parameter count", gt=0)
    max_context: int | None = fld(None, "longest context in tokens", ge=2)

    def validate(self, path: str) -> None:
        base = self.base if self.base is not None else self.name
        inline = self.shape_overrides()
        try:
            get_model(base)
        except ServesimError as exc:
            if self.base is not None or len(inline) < 7:
                raise ScenarioError(f"{path}.{'base' if self.base else 'name'}: {exc}") from None

    def shape_overrides(self) -> dict[str, Any]:
        keys = ("layers", "hidden", "ffn", "heads", "kv_heads", "head_dim", "params",
                "max_context")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class PolicySpec:
    """``policy:`` in YAML: ``name`` plus the policy's own parameters, side by side."""

    name: str = "fcfs"
    params: Any = None

    @classmethod
    def from_config(cls, value: Any, path: str) -> PolicySpec:
        if value is None:
            value = {}
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ScenarioError(f"{path}: expected a mapping with a name, got {_short(value)}")
        raw = dict(value)
        name = raw.pop("name", "fcfs")
        if not isinstance(name, str):
            raise ScenarioError(f"{path}.name: expected a string, got {_short(name)}")
        try:
            policy_cls = get_policy(name)
        except ServesimError as exc:
            msg = str(exc).removeprefix("policy.name: ")
            raise ScenarioError(f"{path}.name: {msg}") from None
        params = build(policy_cls.Params, raw, path)
        return cls(name=policy_cls.name if ":" not in name else name, params=params)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **(to_plain(self.params) or {})}


@dataclass(frozen=True)
class SLOSpec:
    """Service-level objectives (token-level deadlines, ``specs/metrics-and-workloads.md``)."""

    ttft: float | None = fld(
        None, "seconds to first token; null: 10 s (5 s when every GPU is an A10/A10G)", gt=0
    )
    tbt: float = fld(0.1, "seconds between tokens", gt=0)
    scale: float = fld(1.0, "multiply ttft and tbt (strictness: 0.5, 0.3, 0.2)", gt=0)
    start_timeout: float = fld(
        15.0, "seconds: a request not started this long after arrival fails (attainment 0)", gt=0
    )


@dataclass(frozen=True)
class EngineSpec:
    """How the world is simulated."""

    mode: Literal["fast", "stepwise"] = fld(
        "fast",
        "fast: fast-forward decoding in closed form; stepwise: the reference engine, one event "
        "per decode step (slow; the oracle the fast engine is tested against); CLI: --engine",
    )
    block_size: int = fld(16, "tokens per KV block", ge=1, le=4096)
    lookahead: int = fld(0, "extra KV slots a request reserves beyond its tokens", ge=0)
    usable_fraction: float = fld(
        0.9, "share of GPU memory usable for weights + KV (vLLM gpu_memory_utilization)",
        gt=0, le=1,
    )
    max_time: float | None = fld(
        None, "stop at this simulated time (s) even if requests remain; null: drain", gt=0
    )
    check: bool = fld(
        False,
        "invariant mode: assert the laws of the world after every event (slow; for testing "
        "policies); CLI: --check",
    )
    kv_tokens: int | None = fld(
        None,
        "fixed KV pool per instance in tokens, instead of the memory-derived capacity (the VTC "
        "paper's engine uses 10,000); the model must still fit the GPU's memory",
        ge=1,
    )


@dataclass(frozen=True)
class SwitchingSpec:
    """Cost of switching the resident model of an instance (``specs/latency-model.md`` §3)."""

    stage: Literal["T0", "T1", "T2", "T3"] = fld(
        "T3", "optimisation stage of the switching path (T0 vanilla restart .. T3 Aegaeon)"
    )
    tier: Literal["dram", "ssd", "remote"] = fld("dram", "where weights are loaded from")
    efficiency: float | None = fld(
        None, "fraction of the tier bandwidth reached; null: the stage's default", gt=0, le=1
    )
    fixed_seconds: float | None = fld(
        None, "fixed part of a switch in seconds; null: the stage's default", ge=0
    )
    bandwidth: float | None = fld(
        None, "tier bandwidth in bytes/s; null: the GPU profile's", gt=0
    )
    kv_seconds_per_token: float | None = fld(
        None, "seconds per context token to move KV to/from host; null: bytes / host link", ge=0
    )
    prefetch: bool | None = fld(
        None,
        "may policies that prefetch (aegaeon) load the next model in the background? It "
        "reserves memory for a second model; null: only where two models fit the GPU (never "
        "on 24 GB cards such as the A10); true: error where they do not fit",
    )
    prefetch_floor_seconds: float = fld(
        0.010, "least cost of a switch whose load was prefetched, seconds", ge=0
    )


@dataclass(frozen=True)
class OutputsSpec:
    """What the run records."""

    token_times: bool = fld(
        False, "keep every token's emission time (memory grows with tokens)"
    )
    timeline_interval: float = fld(10.0, "seconds per row of the timeline table", gt=0)


@dataclass(frozen=True)
class TenantSpec:
    """A tenant (client) of the workload, by name (``tenants.<name>``)."""

    weight: float = fld(
        1.0,
        "fair-share weight: weighted fairness policies (vtc, equinox, ...) divide the tenant's "
        "charges by it, and Jain's index divides its service by it (docs/fairness.md)",
        gt=0, le=1e6,
    )


@dataclass(frozen=True)
class Scenario:
    """One simulated world: cluster, models, workload, policy, SLOs."""

    name: str = fld("scenario", "a label for tables and plots")
    description: str = fld("", "free text")
    seed: int = fld(0, "seed of every random stream (numpy SeedSequence)", ge=0,
                    lt=2**63)
    duration: float = fld(300.0, "seconds of arrivals (the run then drains)", gt=0, le=1e8)
    cluster: list[InstanceGroup] = fld(factory=lambda: (InstanceGroup(),),
                                       doc="instance groups")
    models: list[ModelSpec] = fld(
        factory=tuple, doc="deployed models; empty: workload.models (many-models form) or trace"
    )
    workload: WorkloadSpec = fld(factory=WorkloadSpec, doc="what arrives")
    tenants: dict[str, TenantSpec] = fld(
        factory=dict,
        doc="per-tenant settings by tenant name (a source's `tenant`, or a trace's tenant "
            "column), e.g. {alice: {weight: 2}}; unlisted tenants have weight 1",
    )
    policy: PolicySpec = fld(factory=PolicySpec, doc="scheduling policy: name + parameters")
    slo: SLOSpec = fld(factory=SLOSpec, doc="service-level objectives")
    engine: EngineSpec = fld(factory=EngineSpec, doc="engine settings")
    switching: SwitchingSpec = fld(factory=SwitchingSpec, doc="model switching cost")
    outputs: OutputsSpec = fld(factory=OutputsSpec, doc="what is recorded")
    base_dir: str | None = dataclasses.field(
        default=None, compare=False, metadata={"internal": True}
    )

    def validate(self, path: str) -> None:
        if not self.cluster:
            raise ScenarioError("cluster: needs at least one instance group")
        for name, seconds in (("ttft", self.ttft), ("tbt", self.tbt)):
            if not seconds >= 1e-6:
                raise ScenarioError(f"slo.{name}: {seconds:g} s after slo.scale; an SLO must be "
                                    ">= 1e-06 s")
        windows = self.duration / self.outputs.timeline_interval
        if windows > MAX_TIMELINE_WINDOWS:
            raise ScenarioError(
                f"outputs.timeline_interval: {self.outputs.timeline_interval:g} s makes "
                f"{windows:.3g} timeline windows over duration {self.duration:g} s; at most "
                f"{MAX_TIMELINE_WINDOWS:,}: use a longer interval"
            )
        if not self.models and self.workload.models is None and self.workload.trace is None:
            raise ScenarioError(
                "models: no models deployed; set workload.models (many-models form), "
                "list models, or replay workload.trace"
            )
        for name in self.workload.mix:
            try:
                get_model(name)
            except ServesimError as exc:
                raise ScenarioError(f"workload.mix.{name}: {exc}") from None
        if self.tenants and self.workload.trace is None:
            known = [s.tenant for s in self.workload.sources] or ["default"]
            for name in self.tenants:
                if name not in known:
                    raise ScenarioError(
                        f"tenants.{name}: no workload source has this tenant"
                        f"{did_you_mean(name, known)}; tenants: {', '.join(dict.fromkeys(known))}"
                    )

    @property
    def ttft(self) -> float:
        """Resolved TTFT SLO in seconds (scale applied)."""
        ttft = self.slo.ttft
        if ttft is None:
            a10 = all(get_gpu(g.gpu).name in ("A10", "A10G") for g in self.cluster)
            ttft = 5.0 if a10 else 10.0
        return ttft * self.slo.scale

    @property
    def tbt(self) -> float:
        """Resolved TBT SLO in seconds (scale applied)."""
        return self.slo.tbt * self.slo.scale

    def resolve_path(self, path: str) -> Path:
        """A file path from the scenario: absolute, else scenario folder, else cwd."""
        p = Path(os.path.expanduser(path))
        if p.is_absolute():
            return p
        if self.base_dir is not None and (Path(self.base_dir) / p).exists():
            return Path(self.base_dir) / p
        return p

    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as plain data (what ``scenario.yaml`` in ``--out`` holds)."""
        return to_plain(self)  # type: ignore[no-any-return]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict[str, Any]) -> Scenario:
        """A copy with ``{"path.to.field": value}`` overrides applied and re-validated.

        Changing ``policy.name`` keeps only the parameters the new policy has."""
        raw = self.to_dict()
        name = overrides.get("policy.name")
        if isinstance(name, str):
            raw["policy"] = policy_params_for(name, raw["policy"])
        apply_overrides(raw, overrides)
        return scenario_from_dict(raw, base_dir=self.base_dir)


# What yaml.safe_load raises besides YAMLError: its constructors let ValueError (`2024-13-45`,
# `!!float abc`), AttributeError (`!!timestamp x`) through, and its composer recurses.
_YAML_LEAKS = (ValueError, TypeError, AttributeError, OverflowError, RecursionError)


def policy_params_for(name: str, policy: dict[str, Any]) -> dict[str, Any]:
    """Switching ``policy.name`` keeps only the parameters the new policy has."""
    if str(policy.get("name", "fcfs")).lower() == name.lower():
        return policy
    try:
        accepted = {f.name for f in dataclasses.fields(get_policy(name).Params)}
    except (ServesimError, TypeError):
        return policy  # validation names the unknown policy
    return {k: v for k, v in policy.items() if k == "name" or k in accepted}


def parse_value(value: Any) -> Any:
    """A ``--set``/``--grid`` value: YAML when it parses as YAML, else the text itself."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value) if value.strip() else value
        except (yaml.YAMLError, *_YAML_LEAKS):
            return value
    return value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set ``path.to.field`` keys in a raw scenario dict (list items by index: ``cluster.0``).

    String values are parsed as YAML scalars (``"0.5"`` -> 0.5, ``"[1, 2]"`` -> a list).
    """
    for key, value in overrides.items():
        parts = [p for p in str(key).split(".")]
        if not parts or any(not p for p in parts):
            raise ScenarioError(f"--set {key}: expected path.to.field=value")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            here = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(f"{here}: no list item {part!r} (list has {len(node)})")
                node = node[int(part)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise ScenarioError(f"{here}: is not a mapping, cannot set {key}")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ScenarioError(f"{key}: no list item {last!r} (list has {len(node)})")
            node[int(last)] = parse_value(value)
        elif isinstance(node, dict):
            node[last] = parse_value(value)
        else:
            raise ScenarioError(f"{key}: parent is not a mapping")


def scenario_from_dict(raw: Any, base_dir: str | None = None) -> Scenario:
    """Validate a raw scenario mapping into a :class:`Scenario`."""
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"scenario: expected a mapping at the top level, got {type(raw).__name__}"
        )
    scenario = build(Scenario, raw)
    return dataclasses.replace(scenario, base_dir=base_dir)


def load_scenario(
    path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Scenario:
    """Read a scenario YAML file, apply ``overrides`` (``{"path.to.field": value}``) and
    ``seed``, and validate it. Raises :class:`ServesimError` with a one-line message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServesimError(f"{p}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServesimError(f"{p}: cannot read scenario ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ScenarioError(f"{p}: invalid YAML: nested too deeply") from None
    except _YAML_LEAKS as exc:
        raise ScenarioError(f"{p}: invalid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}")
    if overrides:
        apply_overrides(raw, overrides)
    if seed is not None:
        raw["seed"] = seed
    try:
        return scenario_from_dict(raw, base_dir=str(p.resolve().parent))
    except ScenarioError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
