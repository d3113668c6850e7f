"""Scheduling policies, registered by name (see :mod:`servesim.policies.base`)."""

from servesim.policies import aegaeon, equinox, fcfs, muxserve, rpm, serverlessllm, vtc
from servesim.policies.base import REGISTRY, Policy, get_policy, policy_names, register

__all__ = [
    "REGISTRY",
    "Policy",
    "get_policy",
    "policy_names",
    "register",
    "aegaeon",
    "equinox",
    "fcfs",
    "muxserve",
    "rpm",
    "serverlessllm",
    "vtc",
]
