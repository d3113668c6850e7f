"""Trace readers: replay recorded arrivals with their models and lengths.

The Aegaeon workload format (``synth-{models}-{rps}-{inscale}-{outscale}.csv``)::

    Request Time,Model Name,Input Length,Output Length
    00:00:00.054,synth_model_46,1514,380

Errors are :class:`~servesim.errors.TraceError` with a ``path:line: what is wrong`` message,
where ``line`` is the 1-based line of the file.
"""

from __future__ import annotations

import csv
import operator
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from servesim.errors import TraceError

__all__ = [
    "CsvColumns",
    "Trace",
    "check_order",
    "parse_counts",
    "read_aegaeon_trace",
    "read_csv_columns",
]

AEGAEON_COLUMNS = ("Request Time", "Model Name", "Input Length", "Output Length")
_TENANT_COLUMN = "Tenant"
# hh:mm:ss(.fraction); hours may pass 23 for long traces.
_TIME_RE = re.compile(r"^\s*(\d+):([0-5]?\d):([0-5]?\d(?:\.\d*)?)\s*$")
_TIME_CHARS = frozenset("0123456789:. ")
_LARGEST_COUNT = 1 << 53


@dataclass(frozen=True, eq=False)
class Trace:
    """Recorded requests, one row per request, sorted by ``time``.

    ``model_names`` (sorted, unique) and ``model_index`` (int64 index into it, per row) are
    derived from ``model``; a trace without a model column has ``model`` None, no model names
    and index 0 everywhere (the scenario decides where its requests go).
    """

    time: np.ndarray
    """float64 seconds since the start of the trace."""
    model: tuple[str, ...] | None
    """model name per row, or None when the trace has no model column."""
    input: np.ndarray
    """int64 input (prompt) tokens per row, >= 1."""
    output: np.ndarray
    """int64 output tokens per row, >= 1."""
    tenant: tuple[str, ...] | None = None
    """tenant per row, or None when the trace has no tenant column."""
    failed: int = 0
    """requests of the file left out of the rows because they failed (BurstGPT rows with
    zero response tokens); counted for statistics, never replayed."""
    model_names: tuple[str, ...] = field(init=False)
    model_index: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.time)
        lengths = {len(self.input), len(self.output)}
        if self.model is not None:
            lengths.add(len(self.model))
        if self.tenant is not None:
            lengths.add(len(self.tenant))
        if lengths != {n}:
            raise ValueError("Trace columns must all have the same length")
        if self.model is None:
            object.__setattr__(self, "model_names", ())
            object.__setattr__(self, "model_index", np.zeros(n, dtype=np.int64))
            return
        names = tuple(sorted(set(self.model)))
        position = {name: i for i, name in enumerate(names)}
        index = np.fromiter(map(position.__getitem__, self.model), dtype=np.int64, count=n)
        object.__setattr__(self, "model_names", names)
        object.__setattr__(self, "model_index", index)

    def take(self, rows: np.ndarray) -> Trace:
        """A trace of the given rows (an index array or a boolean mask), same ``failed``."""
        pick = np.arange(len(self))[rows]
        return Trace(
            time=self.time[pick],
            model=None if self.model is None else tuple(self.model[i] for i in pick.tolist()),
            input=self.input[pick],
            output=self.output[pick],
            tenant=None if self.tenant is None else tuple(self.tenant[i] for i in pick.tolist()),
            failed=self.failed,
        )

    def __len__(self) -> int:
        return len(self.time)


class CsvColumns:
    """Named columns of a CSV file as strings, with the file line of each row on demand.

    ``columns[name][i]`` is the cell of data row ``i``; :meth:`line` maps ``i`` to its 1-based
    file line (blank lines are skipped). Line numbers are only needed for error messages, so
    they are found by re-reading the file when first asked for.
    """

    def __init__(self, path: Path, columns: dict[str, list[str]], rows: int) -> None:
        self.path = path
        self.columns = columns
        self.rows = rows
        self._lines: list[int] | None = None

    def line(self, row: int) -> int:
        """1-based file line of data row ``row``."""
        if self._lines is None:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                next(reader, None)
                self._lines = [reader.line_num for record in reader if not _blank(record)]
        return self._lines[row]


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def read_csv_columns(
    path: str | Path, required: Sequence[str], optional: Sequence[str] = ()
) -> CsvColumns:
    """Read the named columns of a CSV file (header on line 1) as strings.

    Columns may come in any order; other columns are ignored, and so are blank lines. A cell
    missing from a short row reads as an empty string (the caller's parser names its line).
    Raises :class:`TraceError` for a missing or unreadable file, an empty file or a missing
    required column (named).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
        if header is None:
            raise TraceError(f"{path}:1: empty file, expected a header row")
        names = [name.strip() for name in header]
        positions: dict[str, int] = {}
        for name in required:
            if name not in names:
                raise TraceError(
                    f"{path}:1: missing column '{name}'; header has: {', '.join(names)}"
                )
            positions[name] = names.index(name)
        for name in optional:
            if name in names:
                positions[name] = names.index(name)
        if not positions:
            return CsvColumns(path, {}, 0)
        # pandas' C parser: several times faster than the csv module on 100k+ rows. Every
        # column is read (no usecols) so that a row with more cells than the header is an error.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                dtype=str,
                na_filter=False,
                encoding="utf-8-sig",
                skip_blank_lines=True,
                index_col=False,
            )
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            # pandas drops the extra cells of a first row longer than the header
            _refuse_long_row(path, len(header))
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    except (csv.Error, pd.errors.ParserError) as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            raise TraceError(f"{path}:{found.group(2)}: {found.group(3)} cells, the header has "
                             f"{found.group(1)}") from None
        raise TraceError(f"{path}: malformed CSV: {' '.join(str(exc).split())}") from None
    columns = {name: frame.iloc[:, index].tolist() for name, index in positions.items()}
    return CsvColumns(path, columns, len(frame))


def _refuse_long_row(path: Path, cells: int) -> None:
    """Raise the error naming the first row of ``path`` with more than ``cells`` cells."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for record in reader:
            if len(record) > cells:
                raise TraceError(f"{path}:{reader.line_num}: {len(record)} cells, the header "
                                 f"has {cells}")
    raise TraceError(f"{path}: malformed CSV: a row has more cells than the header ({cells})")


def parse_counts(table: CsvColumns, column: str, minimum: int) -> np.ndarray:
    """Parse a column of token counts (whole numbers >= ``minimum``) as int64.

    Errors name the file line of the first bad cell.
    """
    cells = table.columns[column]
    try:
        values = np.array(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        values = _parse_counts_slowly(table, column)
    bad = np.flatnonzero(values < minimum)
    if bad.size:
        i = int(bad[0])
        what = "negative" if values[i] < 0 else "too small"
        raise TraceError(
            f"{table.path}:{table.line(i)}: {column} {values[i]} is {what}, must be >= {minimum}"
        )
    return values


def _parse_counts_slowly(table: CsvColumns, column: str) -> np.ndarray:
    cells = table.columns[column]
    values = np.empty(len(cells), dtype=np.int64)
    for i, cell in enumerate(cells):
        try:
            number = float(cell)
        except ValueError:
            raise TraceError(f"{table.path}:{table.line(i)}: {column} {cell.strip()!r} is not a "
                             "number") from None
        # "12.0" (pandas float columns) is accepted; "12.5", "nan" and "inf" are not.
        if not number.is_integer() or abs(number) > _LARGEST_COUNT:
            raise TraceError(f"{table.path}:{table.line(i)}: {column} {cell.strip()!r} is not a "
                             "whole number of tokens")
        values[i] = int(number)
    return values


def _parse_times(table: CsvColumns, column: str) -> np.ndarray:
    """Seconds from ``hh:mm:ss.fff`` cells, vectorised when every cell is well formed."""
    cells = table.columns[column]
    joined = ":".join(cells)
    colons = set(map(operator.methodcaller("count", ":"), cells))
    if colons == {2} and set(joined) <= _TIME_CHARS:
        try:
            hms = np.array(joined.split(":"), dtype=np.float64).reshape(-1, 3)
        except ValueError:
            pass
        else:
            hours, minutes, seconds = hms[:, 0], hms[:, 1], hms[:, 2]
            well_formed = (
                (hours >= 0)
                & (hours == np.floor(hours))
                & (minutes >= 0)
                & (minutes < 60)
                & (minutes == np.floor(minutes))
                & (seconds >= 0)
                & (seconds < 60)
            )
            if well_formed.all():
                return 3600.0 * hours + 60.0 * minutes + seconds
    # Slow path: find and name the first malformed cell.
    times = np.empty(len(cells), dtype=np.float64)
    match = _TIME_RE.match
    for i, cell in enumerate(cells):
        found = match(cell)
        if found is None:
            raise TraceError(
                f"{table.path}:{table.line(i)}: {column} {cell.strip()!r} is not hh:mm:ss.mmm"
            )
        hours_text, minutes_text, seconds_text = found.groups()
        times[i] = 3600.0 * int(hours_text) + 60.0 * int(minutes_text) + float(seconds_text)
    return times


def check_order(time: np.ndarray, column: str, stamps: Sequence[str], line: Callable[[int], int],
                path: Path, sort: bool) -> np.ndarray | None:
    """``None`` when ``time`` never goes backwards; else the stable sorting permutation if
    ``sort``, else a :class:`TraceError` naming the first out-of-order line."""
    backwards = np.flatnonzero(np.diff(time) < 0)
    if not backwards.size:
        return None
    if sort:
        return np.argsort(time, kind="stable")
    i = int(backwards[0]) + 1
    raise TraceError(
        f"{path}:{line(i)}: {column} {stamps[i].strip()} is before the previous row's "
        f"{stamps[i - 1].strip()}; sort the file by {column} (or pass --sort / set "
        "workload.trace_sort: true)"
    )


def read_aegaeon_trace(path: str | Path, sort: bool = False) -> Trace:
    """Read an Aegaeon workload CSV (``Request Time,Model Name,Input Length,Output Length``).

    ``Request Time`` is ``hh:mm:ss.mmm`` since the start of the trace. Columns may come in any
    order; an optional ``Tenant`` column fills :attr:`Trace.tenant`. Timestamps must be
    non-decreasing unless ``sort`` (then rows are sorted by time, ties in file order);
    lengths must be whole numbers >= 1.
    """
    path = Path(path)
    table = read_csv_columns(path, AEGAEON_COLUMNS, optional=(_TENANT_COLUMN,))
    if table.rows == 0:
        raise TraceError(f"{path}:1: empty trace, no request after the header")
    time = _parse_times(table, "Request Time")
    order = check_order(time, "Request Time", table.columns["Request Time"], table.line, path,
                        sort)
    inputs = parse_counts(table, "Input Length", minimum=1)
    outputs = parse_counts(table, "Output Length", minimum=1)
    models = tuple(map(str.strip, table.columns["Model Name"]))
    if not all(models):
        raise TraceError(f"{path}:{table.line(models.index(''))}: Model Name is empty")
    tenant = None
    if _TENANT_COLUMN in table.columns:
        tenant = tuple(map(str.strip, table.columns[_TENANT_COLUMN]))
    trace = Trace(time=time, model=models, input=inputs, output=outputs, tenant=tenant)
    return trace if order is None else trace.take(order)
