"""The policy protocol, and the registry of policies by name.

A policy decides; the engine executes. It is handed the world once (``attach``), told about
arrivals (``on_arrival``), asked what an instance does next (``next_job``, returning a frozen
job) and told when a job ended (``on_done``). It never reads a clock or sleeps.

Registry: a dict filled by the :func:`register` decorator, which refuses duplicates, keyed by
the name used in YAML (``policy.name``). Third-party policies register through the
``servesim.policies`` entry-point group or are named by dotted path ``package.module:Class``.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from servesim.errors import ServesimError, did_you_mean

if TYPE_CHECKING:
    from servesim.engine.instance import Instance
    from servesim.engine.jobs import Job
    from servesim.engine.world import World


@dataclass(frozen=True)
class NoParams:
    """A policy without parameters."""


class Policy:
    """Base class of every policy (see module docstring).

    Class attributes:
        name: the registry key used in YAML.
        Params: frozen dataclass of the policy's parameters (fields declared with
            :func:`servesim.config.fld`, validated at scenario load time).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        self.world: World

    def attach(self, world: World) -> None:
        """Called once before the run: set up per-instance state, place models."""
        self.world = world

    def on_arrival(self, rid: int, now: float) -> None:
        """Request ``rid`` arrived: enqueue or dispatch it, wake or poke instances."""
        raise NotImplementedError

    def next_job(self, inst: Instance, now: float) -> Job:
        """What ``inst`` does next."""
        raise NotImplementedError

    def on_done(self, inst: Instance, job: Job, now: float) -> None:
        """``job`` ended on ``inst`` (the request table is already updated)."""


REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: register ``cls`` under ``cls.name``; duplicates are refused."""
    key = cls.name.lower()
    if not key:
        raise ValueError(f"{cls.__qualname__} has no name")
    if key in REGISTRY and REGISTRY[key] is not cls:
        raise ValueError(f"policy name {cls.name!r} is already registered by {REGISTRY[key]!r}")
    REGISTRY[key] = cls
    return cls


def _entry_point_names() -> dict[str, metadata.EntryPoint]:
    try:
        eps = metadata.entry_points(group="servesim.policies")
    except Exception:  # pragma: no cover - broken metadata of a third-party package
        return {}
    return {ep.name.lower(): ep for ep in eps}


def policy_names() -> list[str]:
    """Every policy name known: built-in and entry points."""
    return sorted(set(REGISTRY) | set(_entry_point_names()))


def get_policy(name: str) -> type[Policy]:
    """The policy class for ``name``: registry, entry point, or ``package.module:Class``."""
    key = str(name).lower()
    if key in REGISTRY:
        return REGISTRY[key]
    eps = _entry_point_names()
    if key in eps:
        cls = eps[key].load()
        return register(cls) if cls.name.lower() not in REGISTRY else REGISTRY[cls.name.lower()]
    if ":" in str(name):
        module, _, attr = str(name).partition(":")
        if os.getcwd() not in sys.path:  # like `python -m`: modules in the working directory
            sys.path.append(os.getcwd())
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ServesimError(f"policy.name: cannot import {name!r}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise ServesimError(f"policy.name: {name!r} is not a servesim Policy subclass")
        return cls
    names = policy_names()
    raise ServesimError(
        f"policy.name: unknown policy '{name}'{did_you_mean(name, names)}; "
        f"known: {', '.join(names)}"
    )
