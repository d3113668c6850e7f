"""Readers of public request traces, format detection, and :func:`read_trace`.

Formats (``workload.trace_format`` in a scenario, ``--format`` of ``servesim traces stats``):

=========  ===========================================================================
aegaeon    Aegaeon workload CSV: ``Request Time`` (hh:mm:ss.mmm), ``Model Name``, ``Input
           Length``, ``Output Length`` (:func:`~servesim.workload.traces.read_aegaeon_trace`)
azure      Azure LLM inference 2023 CSV: ``TIMESTAMP`` (date and time), ``ContextTokens``,
           ``GeneratedTokens``; times are seconds after the earliest row
mooncake   Mooncake JSON lines: ``timestamp`` (milliseconds), ``input_length``,
           ``output_length``, ``hash_ids`` (512-token prefix blocks, not used)
vtc        VTC arena CSV: ``arrival_s``, ``tenant``, ``input_len``, ``output_len``
burstgpt   BurstGPT CSV: ``Timestamp`` (s), ``Model``, ``Request tokens``, ``Response tokens``,
           ``Total tokens``, ``Log Type``; rows with zero response tokens are failed requests,
           left out of the trace and counted in :attr:`Trace.failed`; ``Log Type`` is the tenant
servegen   ServeGen per-tenant *rate* traces, regenerated as arrivals
           (:mod:`servesim.workload.servegen`, not a :class:`Trace`)
=========  ===========================================================================

Every reader checks what it reads: a missing column, a non-numeric or negative length or time,
or a timestamp before the previous row's is a :class:`~servesim.errors.TraceError` with
``file:line`` (``sort=True`` sorts instead of refusing unsorted rows); an empty trace is an
error. Zero lengths are read as 1 token (an Azure or Mooncake row can have none).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from servesim.errors import TraceError
from servesim.workload.traces import (
    CsvColumns,
    Trace,
    check_order,
    parse_counts,
    read_aegaeon_trace,
    read_csv_columns,
)

__all__ = ["TRACE_FORMATS", "TraceFormat", "detect_format", "read_trace"]

TraceFormat = Literal["aegaeon", "azure", "mooncake", "vtc", "burstgpt", "servegen"]
TRACE_FORMATS: tuple[str, ...] = ("aegaeon", "azure", "mooncake", "vtc", "burstgpt", "servegen")

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
VTC_COLUMNS = ("arrival_s", "tenant", "input_len", "output_len")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
_LARGEST_COUNT = 1 << 53  # tokens; as the CSV readers (int64 arrays)


def detect_format(path: str | Path) -> str:
    """The format of a trace file from its name and first line (a folder is ServeGen).

    A CSV header matching no format is taken for the Aegaeon format (whose reader then names
    the missing columns), unless it shares two columns with another format's.
    """
    path = Path(path)
    if path.is_dir():
        return "servegen"
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline().strip()
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    if path.suffix == ".jsonl" or first.startswith("{"):
        return "mooncake"
    header = {cell.strip() for cell in first.split(",")}
    for name, columns in (
        ("aegaeon", ("Request Time", "Model Name")),
        ("azure", AZURE_COLUMNS),
        ("vtc", ("arrival_s", "input_len")),
        ("burstgpt", ("Timestamp", "Request tokens")),
    ):
        if header.issuperset(columns):
            return name
    cells = first.split(",")
    if len(cells) == 6 and _is_number(cells[0]) and _is_number(cells[1]):
        return "servegen"
    if not first:
        raise TraceError(f"{path}:1: empty file, cannot detect the trace format")
    # A header that is close to one format (two of its columns) is that format with a column
    # missing or misspelt, so its reader names what is missing; anything else is read as
    # Aegaeon, the format servesim replayed before detection existed.
    near: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("azure", AZURE_COLUMNS), ("vtc", VTC_COLUMNS), ("burstgpt", BURSTGPT_COLUMNS))
    for fmt, wanted in near:
        if len(header.intersection(wanted)) >= 2:
            return fmt
    return "aegaeon"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_trace(path: str | Path, format: str = "auto", sort: bool = False) -> Trace:
    """Read a request trace of ``format`` (``auto``: :func:`detect_format`)."""
    path = Path(path)
    if format == "auto":
        format = detect_format(path)
    if format == "aegaeon":
        return read_aegaeon_trace(path, sort=sort)
    if format == "azure":
        return read_azure_trace(path, sort=sort)
    if format == "mooncake":
        return read_mooncake_trace(path, sort=sort)
    if format == "vtc":
        return read_vtc_trace(path, sort=sort)
    if format == "burstgpt":
        return read_burstgpt_trace(path, sort=sort)
    if format == "servegen":
        raise TraceError(
            f"{path}: a ServeGen trace holds rates, not requests; it is regenerated as arrivals "
            "(servesim.workload.servegen)"
        )
    raise TraceError(f"{path}: unknown trace format {format!r}; known: {', '.join(TRACE_FORMATS)}")


def _nonempty(table: CsvColumns, path: Path) -> None:
    if table.rows == 0:
        raise TraceError(f"{path}:1: empty trace, no request after the header")


def parse_seconds(table: CsvColumns, column: str) -> np.ndarray:
    """A column of times in seconds (finite numbers >= 0) as float64, errors at file:line."""
    cells = table.columns[column]
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            try:
                values[i] = float(cell)
            except ValueError:
                raise TraceError(
                    f"{table.path}:{table.line(i)}: {column} {cell.strip()!r} is not a number"
                ) from None
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        i = int(bad[0])
        raise TraceError(
            f"{table.path}:{table.line(i)}: {column} {cells[i].strip()!r} must be a finite "
            "number of seconds >= 0"
        )
    return values


def _lengths(table: CsvColumns, column: str) -> np.ndarray:
    return np.maximum(parse_counts(table, column, minimum=0), 1)


def read_azure_trace(path: str | Path, sort: bool = False) -> Trace:
    """Azure LLM inference trace 2023 (``TIMESTAMP,ContextTokens,GeneratedTokens``); times are
    seconds after the earliest timestamp."""
    path = Path(path)
    table = read_csv_columns(path, AZURE_COLUMNS)
    _nonempty(table, path)
    stamps = table.columns["TIMESTAMP"]
    parsed = pd.to_datetime(pd.Series(stamps), format="ISO8601", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise TraceError(
            f"{path}:{table.line(i)}: TIMESTAMP {stamps[i].strip()!r} is not a date and time "
            "(YYYY-MM-DD hh:mm:ss.fffffff)"
        )
    nanos = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    time = (nanos - nanos.min()) / 1e9
    order = check_order(time, "TIMESTAMP", stamps, table.line, path, sort)
    trace = Trace(time=time, model=None, input=_lengths(table, "ContextTokens"),
                  output=_lengths(table, "GeneratedTokens"))
    return trace if order is None else trace.take(order)


def read_vtc_trace(path: str | Path, sort: bool = False) -> Trace:
    """The VTC paper's arena trace (``arrival_s,tenant,input_len,output_len``)."""
    path = Path(path)
    table = read_csv_columns(path, VTC_COLUMNS)
    _nonempty(table, path)
    time = parse_seconds(table, "arrival_s")
    order = check_order(time, "arrival_s", table.columns["arrival_s"], table.line, path, sort)
    tenants = tuple(map(str.strip, table.columns["tenant"]))
    if not all(tenants):
        raise TraceError(f"{path}:{table.line(tenants.index(''))}: tenant is empty")
    trace = Trace(time=time, model=None, input=_lengths(table, "input_len"),
                  output=_lengths(table, "output_len"), tenant=tenants)
    return trace if order is None else trace.take(order)


def read_burstgpt_trace(path: str | Path, sort: bool = False) -> Trace:
    """BurstGPT (``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``).

    Rows with zero response tokens are failed requests: they are left out and counted in
    :attr:`Trace.failed`. ``Log Type`` (conversation or API log), when present, is the tenant.
    """
    path = Path(path)
    table = read_csv_columns(path, BURSTGPT_COLUMNS, optional=("Log Type",))
    _nonempty(table, path)
    time = parse_seconds(table, "Timestamp")
    order = check_order(time, "Timestamp", table.columns["Timestamp"], table.line, path, sort)
    inputs = parse_counts(table, "Request tokens", minimum=0)
    outputs = parse_counts(table, "Response tokens", minimum=0)
    models = tuple(map(str.strip, table.columns["Model"]))
    if not all(models):
        raise TraceError(f"{path}:{table.line(models.index(''))}: Model is empty")
    tenant = None
    if "Log Type" in table.columns:
        tenant = tuple(cell.strip() or "default" for cell in table.columns["Log Type"])
    trace = Trace(time=time, model=models, input=np.maximum(inputs, 1),
                  output=np.maximum(outputs, 1), tenant=tenant)
    ok = outputs > 0
    if order is not None:
        ok = ok[order]
        trace = trace.take(order)
    failed = int((~ok).sum())
    if failed == len(trace):
        raise TraceError(f"{path}: every request failed (zero response tokens); nothing to replay")
    return dataclasses.replace(trace.take(ok), failed=failed) if failed else trace


def read_mooncake_trace(path: str | Path, sort: bool = False) -> Trace:
    """Mooncake JSON lines (``timestamp`` ms, ``input_length``, ``output_length``)."""
    path = Path(path)
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    lines: list[int] = []
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    with handle:
        try:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                row = _mooncake_row(text, f"{path}:{number}")
                times.append(row[0] / 1000.0)
                inputs.append(row[1])
                outputs.append(row[2])
                lines.append(number)
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not times:
        raise TraceError(f"{path}:1: empty trace, no request")
    time = np.array(times, dtype=np.float64)
    stamps = [f"{t * 1000:g}" for t in times]
    order = check_order(time, "timestamp", stamps, lines.__getitem__, path, sort)
    trace = Trace(time=time, model=None, input=np.maximum(np.array(inputs, dtype=np.int64), 1),
                  output=np.maximum(np.array(outputs, dtype=np.int64), 1))
    return trace if order is None else trace.take(order)


def _mooncake_row(text: str, where: str) -> tuple[float, int, int]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(row, dict):
        raise TraceError(f"{where}: not a JSON object")
    values: list[float] = []
    for key in MOONCAKE_KEYS:
        if key not in row:
            raise TraceError(f"{where}: missing key '{key}'")
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise TraceError(f"{where}: {key} {value!r} is not a number")
        if value < 0:
            raise TraceError(f"{where}: {key} {value!r} is negative")
        if key != "timestamp" and (value != int(value) or value > _LARGEST_COUNT):
            raise TraceError(f"{where}: {key} {value!r} is not a whole number of tokens")
        values.append(value)
    return float(values[0]), int(values[1]), int(values[2])
