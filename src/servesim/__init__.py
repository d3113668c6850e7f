"""servesim: a discrete-event simulator of multi-tenant, multi-model LLM serving clusters.

>>> import servesim
>>> scenario = servesim.load_scenario("scenarios/quickstart.yaml", overrides={"duration": 30})
>>> result = servesim.simulate(scenario)
>>> result.summary["slo_attainment"]  # doctest: +SKIP
"""

from servesim.errors import ScenarioError, ServesimError, TraceError
from servesim.scenario import Scenario, load_scenario
from servesim.simulate import Result, simulate

__all__ = [
    "Result",
    "Scenario",
    "ScenarioError",
    "ServesimError",
    "TraceError",
    "load_scenario",
    "simulate",
    "sweep",
]

_LAZY_MODULES = ("sweep", "plots")  # imported on first use: Dask and matplotlib stay unloaded


def __getattr__(name: str) -> object:
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"servesim.{name}")
    raise AttributeError(f"module 'servesim' has no attribute {name!r}")
