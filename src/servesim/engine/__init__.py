"""The simulated world: request table, instances, jobs."""
