"""Write scenarios/vtc/real.yaml: the VTC paper's real-trace experiment.

    python scenarios/vtc/fit_real.py ../shared/data/vtc/real_trace.csv > scenarios/vtc/real.yaml

The scenario replays the 27-tenant Chatbot-Arena trace when ``--set workload.trace=PATH``
points at it (``arrival_s, tenant, input_len, output_len``). Without it, it generates an
equivalent synthetic trace: one Poisson source per tenant at the tenant's mean rate over the
600 s, with lognormal input and output lengths matching the median and the mean of the
tenant's requests (tenants with fewer than 5 requests take the pooled fit), capped at 2,048
tokens of context. Only these fitted parameters are
written, never the trace's rows.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

DURATION = 600.0
HEADER = """\
# VTC paper real-trace experiment (Sheng et al., OSDI '24, section 5.3): 27 tenants of a
# 600-s Chatbot-Arena trace (1,500 requests, 150 req/min), Llama-2-7B on one A10G.
#   servesim run scenarios/vtc/real.yaml --set workload.trace=../shared/data/vtc/real_trace.csv
#   servesim run scenarios/vtc/real.yaml --set policy.name=fcfs   # synthetic twin, FCFS
# Without workload.trace, the sources below generate an equivalent synthetic trace: the same
# per-tenant rates (Poisson) and lognormal length laws fitted per tenant by
# scenarios/vtc/fit_real.py (which wrote this file; do not edit by hand).
name: vtc-real
seed: 42
duration: 600
cluster:
  - gpu: A10G
    count: 1
models:
  - name: llama-2-7b
engine:
  kv_tokens: 10000
  block_size: 1
slo:
  start_timeout: 1.0e+6
policy:
  name: vtc
  engine: vtc-paper
workload:
  trace: null          # --set workload.trace=../shared/data/vtc/real_trace.csv to replay it
  trace_format: vtc
  trace_model: llama-2-7b
  arrival: {kind: poisson}
  sources:
"""


def _fit(values: np.ndarray) -> tuple[float, float]:
    """Lognormal ``(median, sigma)`` with the sample's median and mean
    (``mean = median * exp(sigma^2 / 2)``): the load matches, the tail stays light."""
    x = np.maximum(values.astype(np.float64), 1.0)
    median = float(np.median(x))
    ratio = float(x.mean()) / median
    return median, float(np.sqrt(2.0 * np.log(ratio))) if ratio > 1.0 else 0.0


def main(path: str) -> str:
    frame = pd.read_csv(path)
    pooled_in = _fit(frame["input_len"].to_numpy())
    pooled_out = _fit(frame["output_len"].to_numpy())
    lines = [HEADER]
    counts = frame.groupby("tenant").size().sort_values(ascending=False)
    for tenant, count in counts.items():
        mine = frame[frame["tenant"] == tenant]
        in_med, in_sig = _fit(mine["input_len"].to_numpy())
        out_med, out_sig = _fit(mine["output_len"].to_numpy())
        if count < 5:
            (in_med, in_sig), (out_med, out_sig) = pooled_in, pooled_out
        lines.append(
            f'    - {{tenant: "{tenant}", rate: {count / DURATION:.6g}, '
            f"lengths: {{kind: lognormal, "
            f"input_median: {in_med:.4g}, input_sigma: {in_sig:.4g}, "
            f"output_median: {out_med:.4g}, output_sigma: {out_sig:.4g}, max_context: 2048}}}}\n"
        )
    return "".join(lines)


if __name__ == "__main__":
    sys.stdout.write(main(sys.argv[1] if len(sys.argv) > 1 else
                          "../shared/data/vtc/real_trace.csv"))
