"""Fuzzing of trace files (issue 9, Robustness).

The contract: a trace file is read (every row checked: times finite, >= 0 and sorted; lengths
whole numbers >= 1), or refused with a one-line :class:`ServesimError` that names the file, and
its line when the problem is in a row. Never a traceback.

Cases, counted and printed at the end of the run (tests/fuzzing.py), for every format
(aegaeon, azure, mooncake, vtc, burstgpt, servegen, and the length tables of ``lengths.kind:
empirical``): valid files, then damaged ones: random bytes, truncated files, garbage bytes,
wrong encodings (latin-1, UTF-16 with a BOM), empty files, only a header, swapped columns,
bad cells (negative, huge, nan, inf, unicode digits, empty), unsorted timestamps, short and
long rows, unbalanced quotes. They go to the readers directly, and fewer of them through
:func:`servesim.simulate.prepare` of a scenario replaying ``workload.trace``.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import assert_cli_contract, assert_one_line, cli, examples, fuzz, record
from hypothesis import example, given
from hypothesis import strategies as st

from servesim.errors import ServesimError
from servesim.scenario import scenario_from_dict
from servesim.simulate import prepare
from servesim.workload import servegen
from servesim.workload.formats import read_trace
from servesim.workload.lengths import read_length_table

FORMATS = ("aegaeon", "azure", "mooncake", "vtc", "burstgpt", "servegen", "lengths")
HEADERS = {
    "aegaeon": ["Request Time", "Model Name", "Input Length", "Output Length"],
    "azure": ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    "vtc": ["arrival_s", "tenant", "input_len", "output_len"],
    "burstgpt": ["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens",
                 "Log Type"],
    "lengths": ["input", "output"],
}
SUFFIX = {"mooncake": ".jsonl", "servegen": "-trace.csv"}
BAD_CELLS = ["", " ", "-5", "-0.5", "0", "1.5", "nan", "NaN", "inf", "-inf", "1e308", "1e999",
             str(10**30), str(2**63), str(2**64), "0x10", "1_000", "\u0664\u0662", "\u00bd",
             "12abc", "\u00e9", "\x00", '"', "'", "1,5", "00:00:61.0", "25:99:99", "-1:00:00",
             "2023-02-30 10:00:00", "9999-12-31 23:59:59.9999999", "1e-320", "  7  "]


# --- valid rows of every format -------------------------------------------------------------


def _hms(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:06.3f}"


def _azure_stamp(seconds: float) -> str:
    whole = int(seconds)
    return f"2023-11-16 {18 + whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}." \
           f"{int(round((seconds - whole) * 1e7)):07d}"


@st.composite
def valid_rows(draw: st.DrawFn, fmt: str) -> list[list[str]]:
    """Rows of cells (strings) of a valid trace of ``fmt``, timestamps non-decreasing."""
    n = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.floats(0, 5, allow_nan=False), min_size=n, max_size=n))
    times = np.cumsum(gaps).round(3).tolist()
    ins = draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n))
    outs = draw(st.lists(st.integers(1, 900), min_size=n, max_size=n))
    models = draw(st.lists(st.sampled_from(["m0", "m1", "qwen2.5-7b", "mod\u00e8le"]),
                           min_size=n, max_size=n))
    rows: list[list[str]] = []
    for i in range(n):
        t, a, b, m = times[i], ins[i], outs[i], models[i]
        if fmt == "aegaeon":
            rows.append([_hms(t), m, str(a), str(b)])
        elif fmt == "azure":
            rows.append([_azure_stamp(t), str(a), str(b)])
        elif fmt == "vtc":
            rows.append([f"{t:g}", ["alice", "bob"][i % 2], str(a), str(b)])
        elif fmt == "burstgpt":
            rows.append([f"{t:g}", m, str(a), str(b), str(a + b), ["Conversation log",
                                                                   "API log"][i % 2]])
        elif fmt == "mooncake":
            rows.append([json.dumps({"timestamp": int(t * 1000), "input_length": a,
                                     "output_length": b, "hash_ids": [i, i + 1]})])
        elif fmt == "servegen":
            family = draw(st.sampled_from(["Gamma", "Weibull", "Exponential", ""]))
            rate = draw(st.floats(0, 0.05)) if family else 0.0
            cv = draw(st.floats(0, 4)) if family else 0.0
            rows.append([f"{600 * i}", f"{rate:g}", f"{cv:g}", family, "1.0", "2.0"])
        else:
            rows.append([str(a), str(b)])
    return rows


def render(fmt: str, header: list[str] | None, rows: list[list[str]],
           newline: str = "\n") -> str:
    lines = [",".join(header)] if header is not None and fmt in HEADERS else []
    lines += [",".join(row) for row in rows]
    return newline.join(lines) + (newline if lines else "")


# --- damage ---------------------------------------------------------------------------------

DAMAGE = ("none", "none", "cell", "cell", "cell", "unsorted", "swap-columns", "swap-cells",
          "short-row", "long-row", "blank-lines", "crlf", "quote", "truncate", "garbage",
          "random-bytes", "latin-1", "utf-16", "utf-8-bom", "empty", "header-only",
          "duplicate-header", "no-header", "json-junk")


@st.composite
def trace_files(draw: st.DrawFn, fmt: str) -> tuple[bytes, int | None]:
    """(file bytes, 1-based line of the one damaged row, if the damage is one row)."""
    rows = draw(valid_rows(fmt))
    header = list(HEADERS.get(fmt, []))
    damage = draw(st.sampled_from(DAMAGE))
    first_row_line = 2 if fmt in HEADERS else 1
    line: int | None = None
    encoding = "utf-8"
    newline = "\n"
    if damage == "cell":
        i = draw(st.integers(0, len(rows) - 1))
        row = rows[i]
        if fmt == "mooncake":
            record_ = json.loads(row[0])
            key = draw(st.sampled_from(["timestamp", "input_length", "output_length"]))
            record_[key] = draw(st.one_of(
                st.sampled_from([-1, 1.5, 10**30, 2**63, 1e308, None, True, "7", [], {}]),
                st.floats()))
            if draw(st.booleans()):
                del record_[key]
            row[0] = json.dumps(record_)
        else:
            j = draw(st.integers(0, len(row) - 1))
            row[j] = draw(st.one_of(st.sampled_from(BAD_CELLS), st.text(max_size=6)))
        # a quote or a line break in the cell moves the rows after it: no line to expect
        line = None if re.search('["\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]', "".join(row)) \
            else first_row_line + i
    elif damage == "unsorted" and len(rows) > 1:
        rows = draw(st.permutations(rows))
    elif damage == "swap-columns" and header:
        order = draw(st.permutations(range(len(header))))
        header = [header[k] for k in order]
        if draw(st.booleans()):  # the cells too: a valid file with columns in another order
            rows = [[row[k] for k in order] for row in rows]
    elif damage == "swap-cells":
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = list(reversed(rows[i]))
        line = first_row_line + i
    elif damage == "short-row":
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = rows[i][:-1]
        line = first_row_line + i
    elif damage == "long-row":
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = [*rows[i], "9", "x"]
        line = first_row_line + i
    elif damage == "blank-lines":
        rows = [r for row in rows for r in (row, [""])]
    elif damage == "crlf":
        newline = "\r\n"
    elif damage == "quote":
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = [f'"{rows[i][0]}', *rows[i][1:]]
    elif damage == "latin-1":
        encoding = "latin-1"
        rows = [[cell.replace("m0", "mod\u00e8le\u00e9") for cell in row] for row in rows]
        if fmt == "mooncake":
            rows = [[row[0].replace("hash_ids", "h\u00e4sh")] for row in rows]
    elif damage == "utf-16":
        encoding = "utf-16"
    elif damage == "utf-8-bom":
        encoding = "utf-8-sig"
    elif damage == "empty":
        return b"", None
    elif damage == "header-only":
        rows = []
    elif damage == "duplicate-header" and header:
        header = [header[0], *header]
    elif damage == "no-header":
        header = []
    elif damage == "json-junk":
        rows = [*rows, [draw(st.sampled_from(["{", "[1, 2]", "null", '{"timestamp": 1}',
                                              "\ufeff{}", "{\"a\": NaN}"]))]]
    text = render(fmt, header if header else None, rows, newline)
    if not header and fmt in HEADERS:
        text = render(fmt, None, rows, newline)
    data = text.encode(encoding, "replace")
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "garbage":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif damage == "random-bytes":
        data = draw(st.binary(max_size=200))
    return data, line


# --- the contract ---------------------------------------------------------------------------

_LINE = re.compile(r":(\d+):")


def check_outcome(path: Path, data: bytes, read: Any, line: int | None) -> str:
    """Read ``path`` (holding ``data``) with ``read``: "parsed" (and the result checked), or
    "rejected" with a one-line error naming the file (and a line that exists)."""
    try:
        trace = read(path)
    except ServesimError as exc:
        message = str(exc)
        assert_one_line(message, str(path))
        found = _LINE.search(message[message.index(str(path)) + len(str(path)) - 1:])
        if line is not None and "every request failed" not in message:
            assert found is not None, f"a bad row, but no line in {message!r}"
        if found is not None:
            assert 1 <= int(found.group(1)) <= data.count(b"\n") + 2, message
            if line is not None and "before the previous row" not in message:
                # the only damaged row is the first bad one
                assert int(found.group(1)) <= line, (message, line)
        return "rejected"
    check_trace(trace)
    return "parsed"


def check_trace(trace: Any) -> None:
    """What a reader promises about what it returns."""
    if isinstance(trace, servegen.RateTrace):
        assert len(trace.tenants) >= 1 and trace.window_start.size >= 1
        assert np.all(np.diff(trace.window_start) > 0)
        assert np.all(np.isfinite(trace.rate)) and np.all(trace.rate >= 0)
        return
    if isinstance(trace, tuple):  # a length table
        inputs, outputs = trace
        assert inputs.size == outputs.size >= 1
        assert inputs.min() >= 0 and outputs.min() >= 0
        return
    assert len(trace) >= 1
    assert np.all(np.isfinite(trace.time)) and trace.time.min() >= 0
    assert np.all(np.diff(trace.time) >= 0)
    assert trace.input.dtype == np.int64 and trace.input.min() >= 1
    assert trace.output.dtype == np.int64 and trace.output.min() >= 1


def reader(fmt: str, sort: bool) -> Any:
    if fmt == "servegen":
        return servegen.read_servegen
    if fmt == "lengths":
        return read_length_table
    return lambda path: read_trace(path, fmt, sort=sort)


_NAMES = itertools.count()


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    # one folder for every case (hypothesis runs many cases per test function); a fresh file
    # name per case, since the length-table cache is keyed by path and modification time
    with tempfile.TemporaryDirectory(prefix="servesim-fuzz-") as name:
        yield Path(name)


def new_file(folder: Path, fmt: str, data: bytes) -> Path:
    path = folder / f"chunk-{next(_NAMES)}{SUFFIX.get(fmt, '.csv')}"
    path.write_bytes(data)
    return path


READER_EXAMPLES = 160  # per format: 7 formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_parses_or_fails_in_one_line(folder: Path, fmt: str) -> None:
    """Valid and damaged files of every format are read (and the result holds what the
    reader promises) or refused with one line naming the file (and an existing line)."""
    outcomes: list[str] = []

    @fuzz(READER_EXAMPLES)
    @given(trace_files(fmt), st.booleans())
    @example((b"\xff\xfe\x00\x00garbage", None), False)
    @example(((",".join(HEADERS.get(fmt, ["x"])) + "\n").encode("utf-16"), None), False)
    def case(file: tuple[bytes, int | None], sort: bool) -> None:
        data, line = file
        path = new_file(folder, fmt, data)
        outcome = check_outcome(path, data, reader(fmt, sort), line)
        record("trace", outcome)
        outcomes.append(outcome)

    case()
    assert len(outcomes) >= examples(READER_EXAMPLES)
    assert "parsed" in outcomes and "rejected" in outcomes


# --- through a scenario ---------------------------------------------------------------------


SERVEGEN_WINDOWS = b"0,0.5,1e-300,Gamma,1,2\n600,0.02,2,Weibull,1,2\n"


def replay_scenario(path: Path, fmt: str, extra: dict[str, Any]) -> dict[str, Any]:
    workload: dict[str, Any] = {"trace": str(path), "trace_format": fmt, "rate": 0.5,
                                "lengths": {"kind": "fixed", "input": 32, "output": 8},
                                **extra}
    return {"duration": 30.0, "seed": 3, "cluster": [{"gpu": "H800", "count": 2}],
            "workload": workload, "policy": {"name": "fcfs"}}


SCENARIO_EXAMPLES = 40  # per format: 6 trace formats


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "lengths"])
def test_replay_prepares_or_fails_in_one_line(folder: Path, fmt: str) -> None:
    """Valid and damaged traces replayed by a scenario (``workload.trace``, with
    trace_start, time_scale or trace_rate) are prepared into a request table, or refused with
    one line naming the file; the request table holds what the engine needs."""
    outcomes: list[str] = []
    knobs = st.fixed_dictionaries({}, optional={
        "trace_sort": st.booleans(),
        "trace_start": st.sampled_from([0.0, 1.0, 1e9]),
        "time_scale": st.sampled_from([1e-300, 0.5, 2.0, 1e300]),
        "trace_rate": st.sampled_from([1e-300, 0.5, 1e12, 1e300]),
    })

    @fuzz(SCENARIO_EXAMPLES)
    @given(trace_files(fmt), knobs, st.sampled_from([fmt, "auto"]))
    # ServeGen: a gamma window with CV 1e-300 (ZeroDivisionError), then 1e300 (NaN)
    @example((SERVEGEN_WINDOWS, None), {}, "servegen")
    @example((SERVEGEN_WINDOWS.replace(b"1e-300", b"1e300"), None), {}, "servegen")
    # ServeGen rescaled to 1e12 req/s: a 218 TiB MemoryError
    @example((SERVEGEN_WINDOWS, None), {"trace_rate": 1e12}, "servegen")
    def case(file: tuple[bytes, int | None], extra: dict[str, Any], chosen: str) -> None:
        data, _ = file
        path = new_file(folder, fmt, data)
        try:
            prep = prepare(scenario_from_dict(replay_scenario(path, chosen, extra)))
        except ServesimError as exc:
            assert_one_line(str(exc))
            if not str(exc).startswith("workload: ") and "trace_rate" not in str(exc):
                assert str(path) in str(exc) or "workload.trace" in str(exc), str(exc)
            outcome = "rejected"
        else:
            table = prep.requests
            assert np.all(np.diff(table.arrival) >= 0) and np.all(np.isfinite(table.arrival))
            assert table.input_len.min(initial=1) >= 1 and table.output_len.min(initial=1) >= 1
            outcome = "parsed"
        record("trace", outcome)
        outcomes.append(outcome)

    case()
    assert len(outcomes) >= examples(SCENARIO_EXAMPLES)


# --- the command line -----------------------------------------------------------------------

CLI_EXAMPLES = 8  # per format: 6 trace formats


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "lengths"])
def test_traces_stats_cli(folder: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``servesim traces stats FILE --format FMT`` (or auto): exit 0, or exit 2 with one
    ``servesim: error:`` line naming the file; nothing else on stderr (no warning)."""
    outcomes: list[str] = []

    @fuzz(CLI_EXAMPLES)
    @given(trace_files(fmt), st.sampled_from([fmt, "auto"]), st.booleans())
    # a first row longer than the header: pandas dropped its extra cells with a ParserWarning
    @example((b"Request Time,Model Name,Input Length,Output Length\n00:00:01.0,m,5,6,7\n",
              2), "aegaeon", False)
    def case(file: tuple[bytes, int | None], chosen: str, sort: bool) -> None:
        data, _ = file
        path = new_file(folder, fmt, data)
        argv = ["traces", "stats", str(path), "--format", chosen, "--duration", "3600"]
        code, out, err = cli([*argv, "--sort"] if sort else argv, capsys)
        outcome = assert_cli_contract(code, out, err)
        if outcome == "rejected":
            assert str(path) in err, err
        record("trace", "parsed" if outcome == "ran" else outcome)
        outcomes.append(outcome)

    case()
    assert len(outcomes) >= examples(CLI_EXAMPLES)


def test_case_budget_is_at_least_1000() -> None:
    """Readers, replays and the command line add up to at least 1,000 trace cases per run."""
    formats = len(FORMATS) - 1
    assert (READER_EXAMPLES * len(FORMATS) + SCENARIO_EXAMPLES * formats
            + CLI_EXAMPLES * formats) >= 1000
