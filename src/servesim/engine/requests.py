"""The request table: every request of a run as struct-of-arrays NumPy columns.

Request ids are row numbers; rows are sorted by arrival time (ties by source order), so id
order is arrival order. Kernels update the columns in place; result tables are built from
the columns without per-request Python objects.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


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
        self.arrival = np.ascontiguousarray(arrival, dtype=np.float64)
        self.model = np.ascontiguousarray(model, dtype=np.int32)
        self.tenant = np.ascontiguousarray(tenant, dtype=np.int32)
        self.source = np.ascontiguousarray(source, dtype=np.int32)
        self.input_len = np.ascontiguousarray(input_len, dtype=np.int64)
        self.output_len = np.ascontiguousarray(output_len, dtype=np.int64)
        self.ttft_slo = np.ascontiguousarray(ttft_slo, dtype=np.float64)
        self.tbt_slo = np.ascontiguousarray(tbt_slo, dtype=np.float64)
        nan = np.full(n, np.nan)
        self.status = np.zeros(n, dtype=np.int8)
        self.generated = np.zeros(n, dtype=np.int64)
        self.first_token = nan.copy()
        self.last_token = nan.copy()
        self.finish = nan.copy()
        self.first_scheduled = nan.copy()
        self.instance = np.full(n, -1, dtype=np.int32)
        self.kv_blocks = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.switch_wait = np.zeros(n, dtype=np.float64)
        self.fail_reason = np.zeros(n, dtype=np.int8)
        self.slo_start = np.zeros(n, dtype=np.float64)
        self.slo_accum = np.zeros(n, dtype=np.float64)
        self.slo_target = np.zeros(n, dtype=np.float64)
        self.slo_qos = np.zeros(n, dtype=np.float64)
        self.gap_sum = np.zeros(n, dtype=np.float64)
        self.gap_max = np.zeros(n, dtype=np.float64)
        self.late_gaps = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def held_tokens(self, rid: int) -> int:
        """Tokens whose KV slot request ``rid`` holds while running: input + generated."""
        return int(self.input_len[rid] + self.generated[rid])
