"""Workload generation: arrival processes, length distributions, trace readers."""
