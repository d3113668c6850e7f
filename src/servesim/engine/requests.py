"""The request table: every request of a run as struct-of-arrays NumPy columns.

Request ids are row numbers; rows are sorted by arrival time (ties by source order), so id
order is arrival order. Kernels update the columns in place; result tables are built from
the columns without per-request Python objects.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from servesim import kernels


class Status(IntEnum):
    """Life cycle of a request. Each request ends in exactly one terminal state."""

    PENDING = 0  # not arrived yet
    WAITING = 1  # arrived, not running (queued, or preempted and waiting to be recomputed)
    RUNNING = 2  # holds KV on an instance (prefilled)
    SWAPPED = 3  # KV moved to host memory (auto-scaling policies)
    FINISHED = 4
    FAILED = 5  # never started within the start timeout, or cannot ever fit
    REJECTED = 6  # refused at arrival (rate limits)
    UNFINISHED = 7  # still in the system when the run stopped (engine.max_time)


TERMINAL = (Status.FINISHED, Status.FAILED, Status.REJECTED, Status.UNFINISHED)

#: Why a request failed (``fail_reason`` column).
FAIL_REASONS = {0: "", 1: "start_timeout", 2: "too_long", 3: "stalled", 4: "unplaceable"}


class RequestTable:
    """Columns (all length ``n``; times in seconds since the start of the run).

    Static: ``arrival``, ``model`` (deployed model index), ``tenant`` (tenant index),
    ``source`` (source index), ``input_len``, ``output_len`` (tokens), ``ttft_slo``,
    ``tbt_slo`` (seconds).

    Dynamic: ``status`` (:class:`Status`), ``generated`` (tokens emitted), ``first_token``,
    ``last_token``, ``finish``, ``first_scheduled`` (start of the first prefill),
    ``instance`` (last instance, -1 none), ``kv_blocks`` (blocks held now), ``preemptions``,
    ``switch_wait`` (seconds spent waiting on model switches), ``fail_reason``; SLO scan state
    ``slo_start``, ``slo_accum``, ``slo_target``, ``slo_qos`` and gap statistics
    ``gap_sum``, ``gap_max``, ``late_gaps`` (see :mod:`servesim.kernels`).
    """

    def __init__(
        self,
        arrival: np.ndarray,
        model: np.ndarray,
        tenant: np.ndarray,
        source: np.ndarray,
        input_len: np.ndarray,
        output_len: np.ndarray,
        ttft_slo: np.ndarray,
        tbt_slo: np.ndarray,
    ) -> None:
        n = int(arrival.shape[0])
        self.n = n
        # The columns of one dtype are the rows of one 2-D block (``f64``, ``i64``, ``i32``;
        # row numbers in :mod:`servesim.kernels`); the named attributes are views of those
        # rows. The engine's kernels then take a handful of arrays instead of twenty: numba's
        # dispatch costs about 0.1 us per array argument, several times per request.
        self.f64 = f64 = np.zeros((kernels.F64_ROWS, n), dtype=np.float64)
        self.i64 = i64 = np.zeros((kernels.I64_ROWS, n), dtype=np.int64)
        self.i32 = i32 = np.zeros((kernels.I32_ROWS, n), dtype=np.int32)
        f64[kernels.ARRIVAL] = np.asarray(arrival, dtype=np.float64)
        f64[kernels.TTFT_SLO] = np.asarray(ttft_slo, dtype=np.float64)
        f64[kernels.TBT_SLO] = np.asarray(tbt_slo, dtype=np.float64)
        for row in (kernels.FIRST_TOKEN, kernels.LAST_TOKEN, kernels.FINISH,
                    kernels.FIRST_SCHEDULED):
            f64[row] = np.nan
        i64[kernels.INPUT_LEN] = np.asarray(input_len, dtype=np.int64)
        i64[kernels.OUTPUT_LEN] = np.asarray(output_len, dtype=np.int64)
        i32[kernels.MODEL] = np.asarray(model, dtype=np.int32)
        i32[kernels.TENANT] = np.asarray(tenant, dtype=np.int32)
        i32[kernels.SOURCE] = np.asarray(source, dtype=np.int32)
        i32[kernels.INSTANCE] = -1
        self.arrival = f64[kernels.ARRIVAL]
        self.model = i32[kernels.MODEL]
        self.tenant = i32[kernels.TENANT]
        self.source = i32[kernels.SOURCE]
        self.input_len = i64[kernels.INPUT_LEN]
        self.output_len = i64[kernels.OUTPUT_LEN]
        self.ttft_slo = f64[kernels.TTFT_SLO]
        self.tbt_slo = f64[kernels.TBT_SLO]
        self.status = np.zeros(n, dtype=np.int8)
        self.generated = i64[kernels.GENERATED]
        self.first_token = f64[kernels.FIRST_TOKEN]
        self.last_token = f64[kernels.LAST_TOKEN]
        self.finish = f64[kernels.FINISH]
        self.first_scheduled = f64[kernels.FIRST_SCHEDULED]
        self.instance = i32[kernels.INSTANCE]
        self.kv_blocks = i64[kernels.KV_BLOCKS]
        self.preemptions = i32[kernels.PREEMPTIONS]
        self.switch_wait = f64[kernels.SWITCH_WAIT]
        self.fail_reason = np.zeros(n, dtype=np.int8)
        self.slo_start = f64[kernels.SLO_START]
        self.slo_accum = f64[kernels.SLO_ACCUM]
        self.slo_target = f64[kernels.SLO_TARGET]
        self.slo_qos = f64[kernels.SLO_QOS]
        self.gap_sum = f64[kernels.GAP_SUM]
        self.gap_max = f64[kernels.GAP_MAX]
        self.late_gaps = i64[kernels.LATE_GAPS]

    def __len__(self) -> int:
        return self.n

    def held_tokens(self, rid: int) -> int:
        """Tokens whose KV slot request ``rid`` holds while running: input + generated."""
        return int(self.input_len[rid] + self.generated[rid])
