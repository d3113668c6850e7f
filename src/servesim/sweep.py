"""Sweeps: a grid of scenario overrides x seeds, run in parallel, tabulated in Parquet.

A sweep is many independent simulations. :func:`run_sweep` builds every grid point's scenario
first (so an unknown key or a bad value fails before anything runs), then runs the
(point, seed) tasks on a process pool (default: all cores) or on Dask distributed, and appends
each finished task to ``DIR/results.parquet`` at once::

    >>> import servesim
    >>> table = servesim.sweep.run_sweep(
    ...     "scenarios/quickstart.yaml",
    ...     {"workload.rate": [2, 4], "workload.models": [4, 8]},
    ...     seeds=3, out="sweeps/quick")                               # doctest: +SKIP

**Seeds.** Seed index ``k`` (``0 .. seeds-1``) of a point runs with seed
``(scenario seed + k) mod 2**63``, where the scenario seed is the YAML ``seed`` after ``--set``.
Every point uses the same seeds, so points are compared on the same random streams, and a row
is reproduced by ``servesim run SCENARIO --set KEY=VALUE ... --seed SEED``. Results depend on
nothing else: the process pool, Dask and a single process give identical rows, bit for bit,
except ``wall_seconds``.

**Results file.** One row per point and seed: the grid values (one column per grid key, named
by the key), ``seed_index``, ``seed``, ``status`` (``ok``/``failed``), ``error`` (one line),
every summary key (:data:`servesim.metrics.SUMMARY_KEYS`; ``wall_seconds`` is the task's wall
time on its worker) and ``point_key`` (canonical JSON of the grid values, used by resume).
Rows are kept in grid order. The file is rewritten to a temporary file and renamed over the old
one, so an interrupted sweep (Ctrl-C, a killed process) always leaves a valid file. ``resume``
skips the (point, seed) rows already ``ok``; failed rows are run again.

**Goodput search.** :func:`search_goodput` finds the largest value of a knob at which a metric
stays >= a target, assuming the metric does not rise as the knob grows (more load, fewer
GPUs, stricter SLOs). It evaluates both ends of ``[lo, hi]`` (the bracket), then bisects, and
warns when evaluated points contradict that assumption.
"""

from __future__ import annotations

import copy
import decimal
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from servesim.errors import ServesimError, did_you_mean
from servesim.metrics import SUMMARY_KEYS
from servesim.scenario import (
    Scenario,
    apply_overrides,
    load_scenario,
    parse_value,
    policy_params_for,
    scenario_from_dict,
)

RESULTS_FILE = "results.parquet"
ROW_COLUMNS = ("seed_index", "seed", "status", "error")
MAX_AXIS_VALUES = 10_000
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_META_KEY = b"servesim.sweep"

# --------------------------------------------------------------------------- grids


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so ``[1, 2],[3]`` is two values."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _yaml_value(text: str) -> Any:
    return parse_value(text)


def _range_values(flag: str, key: str, parts: list[str]) -> list[Any]:
    where = f"{flag} {key}={':'.join(parts)}"
    if len(parts) != 3:
        raise ServesimError(f"{where}: a range is START:STOP:STEP (STOP included)")
    start, stop, step = (decimal.Decimal(p) for p in parts)
    if step <= 0:
        raise ServesimError(f"{where}: STEP must be > 0, got {parts[2]}")
    if start > stop:
        raise ServesimError(f"{where}: START must be <= STOP (ranges go up), got {parts[0]} > "
                            f"{parts[1]}")
    count = int((stop - start) / step) + 1
    if count > MAX_AXIS_VALUES:
        raise ServesimError(f"{where}: {count} values, at most {MAX_AXIS_VALUES} allowed")
    integer = all(re.fullmatch(r"[+-]?\d+", p) for p in parts)
    # exact decimal steps: 0.1:0.3:0.1 gives 0.1, 0.2, 0.3 (not 0.30000000000000004)
    return [int(start + i * step) if integer else float(start + i * step) for i in range(count)]


def parse_axis(text: str, flag: str = "--grid") -> tuple[str, list[Any]]:
    """Parse ``KEY=V1,V2,...`` or ``KEY=START:STOP:STEP`` (STOP included) into (key, values).

    Values are YAML scalars (``0.5``, ``8``, ``fcfs``, ``null``, ``[1, 2]``); integer ranges
    give integers, others floats computed in exact decimal steps.

    >>> parse_axis("workload.rate=0.5:2:0.5")
    ('workload.rate', [0.5, 1.0, 1.5, 2.0])
    >>> parse_axis("policy.name=fcfs,aegaeon")
    ('policy.name', ['fcfs', 'aegaeon'])
    """
    key, sep, rest = text.partition("=")
    key = key.strip()
    allowed = "expected KEY=V1,V2,... or KEY=START:STOP:STEP"
    if not sep or not key or any(not p for p in key.split(".")):
        raise ServesimError(f"{flag} {text!r}: {allowed}")
    if not rest.strip():
        raise ServesimError(f"{flag} {key}=: no values; {allowed}")
    parts = rest.split(":")
    if len(parts) > 1 and "," not in rest and all(_NUMBER.match(p.strip()) for p in parts):
        return key, _range_values(flag, key, [p.strip() for p in parts])
    values = []
    for raw in _split_values(rest):
        if not raw.strip():
            raise ServesimError(f"{flag} {key}={rest}: empty value; {allowed}")
        values.append(_yaml_value(raw.strip()))
    seen: set[str] = set()
    for v in values:
        if _canon_json(v) in seen:
            raise ServesimError(f"{flag} {key}={rest}: value {v!r} appears twice")
        seen.add(_canon_json(v))
    return key, values


def _canon(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    return value


def _canon_json(value: Any) -> str:
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), default=str)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the axes, the first axis varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(list(grid[k]) for k in keys))]


def derive_seed(scenario_seed: int, seed_index: int) -> int:
    """The seed of seed index ``k``: ``(scenario_seed + k) mod 2**63`` (module docstring)."""
    return (int(scenario_seed) + int(seed_index)) % 2**63


# --------------------------------------------------------------------------- scenarios


@dataclass
class SweepBase:
    """The scenario a sweep varies: raw (explicit) values, with ``--set`` applied."""

    raw: dict[str, Any]
    base_dir: str | None
    scenario: Scenario
    source: str

    @classmethod
    def of(cls, scenario: Scenario | str | os.PathLike[str],
           sets: dict[str, Any] | None = None) -> SweepBase:
        """From a scenario file (its YAML values) or a :class:`Scenario` (every field)."""
        sets = dict(sets or {})
        if isinstance(scenario, Scenario):
            resolved = scenario.replace(sets) if sets else scenario
            return cls(resolved.to_dict(), resolved.base_dir, resolved, resolved.name)
        resolved = load_scenario(scenario, overrides=sets)  # validates; one-line errors
        raw = yaml.safe_load(Path(scenario).read_text(encoding="utf-8")) or {}
        apply_overrides(raw, sets)
        return cls(raw, resolved.base_dir, resolved, str(scenario))

    def point(self, values: dict[str, Any]) -> Scenario:
        """The validated scenario of one grid point (raises a one-line ServesimError)."""
        raw = copy.deepcopy(self.raw)
        if isinstance(raw.get("policy"), str):  # `policy: fcfs` is short for {name: fcfs}
            raw["policy"] = {"name": raw["policy"]}
        name = values.get("policy.name")
        if isinstance(name, str) and isinstance(raw.get("policy"), dict):
            raw["policy"] = policy_params_for(name, raw["policy"])
        where = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            apply_overrides(raw, values)
            return scenario_from_dict(raw, base_dir=self.base_dir)
        except ServesimError as exc:
            raise ServesimError(f"grid point {where}: {exc}") from None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    if isinstance(value, list | tuple):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out or {prefix[:-1]: []}
    return {prefix[:-1]: value}


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One simulation: a grid point with one seed, as plain (picklable) data."""

    order: int
    values: dict[str, Any]
    point_key: str
    seed_index: int
    seed: int
    scenario: dict[str, Any]
    base_dir: str | None


def run_task(task: Task) -> dict[str, Any]:
    """Run one task; never raises for a failing simulation (status ``failed``, one-line error).

    Returns ``{"status", "error", "summary", "wall_seconds"}``.
    """
    t0 = time.perf_counter()
    try:
        from servesim.simulate import simulate

        result = simulate(scenario_from_dict(task.scenario, base_dir=task.base_dir))
        return {"status": "ok", "error": None, "summary": result.summary,
                "wall_seconds": time.perf_counter() - t0}
    except Exception as exc:  # a failing point is recorded, the sweep goes on
        return {"status": "failed", "error": _one_line(exc), "summary": None,
                "wall_seconds": time.perf_counter() - t0}


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if isinstance(exc, ServesimError):
        return msg
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {msg}{where}"


def build_tasks(base: SweepBase, grid: Mapping[str, Sequence[Any]], seeds: int) -> list[Task]:
    """Every (point, seed) task, each point's scenario built and validated first."""
    if seeds < 1:
        raise ServesimError(f"--seeds: must be >= 1, got {seeds}")
    for key in grid:
        if key == "seed" or key.startswith("seed."):
            raise ServesimError("--grid seed: use --seeds K for replications (and --set seed=S "
                                "to move the base seed)")
        if not list(grid[key]):
            raise ServesimError(f"--grid {key}: no values")
    tasks = []
    for order, values in enumerate(grid_points(grid)):
        scenario = base.point(values)
        raw = scenario.to_dict()
        point_key = _canon_json(values)
        for k in range(seeds):
            seed = derive_seed(scenario.seed, k)
            tasks.append(Task(order, values, point_key, k, seed, {**raw, "seed": seed},
                              scenario.base_dir))
    return tasks


# --------------------------------------------------------------------------- executors


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent handles it, workers are terminated
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class InlineExecutor:
    """Runs tasks one by one in this process (``workers=1``)."""

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
        for task in tasks:
            yield task, run_task(task)

    def close(self, abort: bool = False) -> None:
        pass


class ProcessExecutor:
    """A process pool; at most ``2 x workers`` tasks are queued at a time."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = self._new_pool()

    @staticmethod
    def _context() -> Any:
        methods = multiprocessing.get_all_start_methods()
        # forkserver: workers fork from a clean process that has already imported servesim
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            ctx.set_forkserver_preload(["servesim.simulate"])
        return ctx

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context(),
                                   initializer=_ignore_sigint)

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
        queue = iter(tasks)
        running: dict[Future[dict[str, Any]], Task] = {}

        def fill() -> None:
            for task in itertools.islice(queue, 2 * self.workers - len(running)):
                running[self.pool.submit(run_task, task)] = task

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            suspects: list[Task] = []
            for fut in done:
                task = running.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    suspects.append(task)
                    continue
                yield task, outcome
            if suspects:
                # A worker died (killed, out of memory): every task in flight in the dead pool
                # is a suspect. Each is retried once, alone in a fresh process, so that only
                # the task that kills its worker again is recorded as failed.
                suspects += list(running.values())
                running.clear()
                self.pool.shutdown(wait=False, cancel_futures=True)
                for task in suspects:
                    yield task, self._run_alone(task)
                self.pool = self._new_pool()
            fill()

    def _run_alone(self, task: Task) -> dict[str, Any]:
        """Run ``task`` in a pool of its own; a second worker death records it as failed."""
        pool = ProcessPoolExecutor(1, mp_context=self._context(), initializer=_ignore_sigint)
        try:
            return pool.submit(run_task, task).result()
        except BrokenProcessPool:
            return {"status": "failed", "summary": None, "wall_seconds": 0.0,
                    "error": "the worker process died twice running this point (killed, or "
                    "out of memory?)"}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; ``abort``: terminate the workers, abandoning running tasks."""
        procs = dict(getattr(self.pool, "_processes", None) or {})
        self.pool.shutdown(wait=not abort, cancel_futures=True)
        if abort:
            for proc in procs.values():
                if proc.is_alive():
                    proc.terminate()
            for proc in procs.values():
                proc.join(timeout=5)


class DaskExecutor:
    """Dask distributed: ``address`` is ``tcp://host:port``, ``"local"`` (a new
    ``LocalCluster``, one single-threaded worker process per core), or a ``Client`` or cluster
    object. Workers need servesim installed and any scenario file paths reachable."""

    def __init__(self, address: Any, workers: int | None = None, timeout: float = 10.0) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ServesimError(
                "--dask: needs the optional dask extra: pip install 'servesim[dask]'") from None
        self.cluster = None
        self.own_client = True
        if isinstance(address, Client):
            self.client, self.own_client = address, False
        elif isinstance(address, str) and address == "local":
            import logging

            self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1,
                                        threads_per_worker=1, dashboard_address=None,
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        elif isinstance(address, str):
            try:
                self.client = Client(address, timeout=f"{timeout}s")
            except Exception as exc:  # refused, timed out, or not a Dask scheduler at all
                msg = " ".join(str(exc).split()) or type(exc).__name__
                raise ServesimError(f"--dask {address}: cannot connect within {timeout:g} s "
                                    f"({msg})") from None
        else:  # a cluster object
            self.client = Client(address)
        threads = sum(self.client.nthreads().values()) or 1
        self.slots = 2 * threads
        self.live: dict[Any, tuple[Task, Any]] = {}

    def run(self, tasks: Iterable[Task]) -> Iterator[tuple[Task, dict[str, Any]]]:
        from distributed import as_completed

        queue = iter(tasks)
        owner: dict[Any, tuple[Task, Any]] = self.live
        pending = as_completed()

        def submit(task: Task) -> None:
            fut = self.client.submit(run_task, task, pure=False)
            owner[fut.key] = (task, fut)
            pending.add(fut)

        for task in itertools.islice(queue, self.slots):
            submit(task)
        for fut in pending:
            task, _ = owner.pop(fut.key)
            try:
                outcome = fut.result()
            except Exception as exc:  # a worker died; the scheduler gave up on the task
                outcome = {"status": "failed", "summary": None, "wall_seconds": 0.0,
                           "error": f"dask: {_one_line(exc)}"}
            yield task, outcome
            nxt = next(queue, None)
            if nxt is not None:
                submit(nxt)

    def close(self, abort: bool = False) -> None:
        if abort and self.live:
            self.client.cancel([fut for _, fut in self.live.values()])
        if self.own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class _SigintFlag:
    """Remembers a Ctrl-C in the main thread, so one swallowed inside a simulation still stops
    the sweep (SimPy turns an exception in a process into a failed event, which is lost when
    the run's end is processed first)."""

    def __init__(self) -> None:
        self.hit = False
        self.previous: Any = None

    def __enter__(self) -> _SigintFlag:
        current = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread() and callable(current):
            self.previous = current
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        self.previous(signum, frame)

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed since ``__enter__``."""
        if self.hit:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def make_executor(workers: int | None = None, dask: Any = None,
                  dask_timeout: float = 10.0) -> InlineExecutor | ProcessExecutor | DaskExecutor:
    """The executor for ``workers`` (default: all cores) or a Dask ``address``/client."""
    if dask is not None:
        return DaskExecutor(dask, workers, dask_timeout)
    workers = _workers(workers)
    return InlineExecutor() if workers == 1 else ProcessExecutor(workers)


def _workers(workers: int | None) -> int:
    if workers is not None and workers < 1:
        raise ServesimError(f"--workers: must be >= 1, got {workers}")
    return workers or os.cpu_count() or 1


# --------------------------------------------------------------------------- results file


def make_row(task: Task, outcome: dict[str, Any]) -> dict[str, Any]:
    """One results row (module docstring) from a task and its outcome."""
    row: dict[str, Any] = dict(task.values)
    row.update(seed_index=task.seed_index, seed=task.seed, status=outcome["status"],
               error=outcome["error"])
    summary = outcome["summary"] or {}
    for key in SUMMARY_KEYS:
        value: Any = summary.get(key)
        row[key] = value.item() if hasattr(value, "item") else value  # NumPy scalars
    row["wall_seconds"] = float(outcome["wall_seconds"])
    row["point_key"] = task.point_key
    return row


def _grid_array(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {int, float}:
        return pa.array([None if v is None else (float(v) if float in kinds else v)
                         for v in values])
    if len(kinds) <= 1 and kinds <= {int, float, bool, str}:
        return pa.array(values)
    # mixed or structured values (lists, mappings) are stored as their JSON text
    return pa.array([v if v is None or isinstance(v, str) else _canon_json(v) for v in values],
                    pa.string())


def _metric_array(values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    if present and all(type(v) is int for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(values)


class ResultsFile:
    """The rows of one sweep, kept in grid order, and ``DIR/results.parquet`` if ``out_dir``.

    Opening checks an existing file: refused if it is not a sweep file, holds another scenario
    or other grid keys, or (without ``resume``/``overwrite``) at all.
    """

    def __init__(self, out_dir: str | os.PathLike[str] | None, identity: dict[str, Any],
                 grid_keys: list[str], order_of: dict[str, int], *, source: str = "",
                 resume: bool = False, overwrite: bool = False) -> None:
        self.grid_keys = grid_keys
        self.order_of = order_of
        self.identity = identity
        self.meta: dict[str, Any] = {"format": 1, "source": source, "grid": grid_keys,
                                     "scenario": identity}
        self.rows: dict[tuple[str, int], tuple[tuple[int, ...], dict[str, Any]]] = {}
        self.path = Path(out_dir) / RESULTS_FILE if out_dir is not None else None
        self.created = False
        self.last_flush = 0.0
        self.flush_cost = 0.0
        self.dirty = False
        if self.path is None:
            return
        self.created = not self.path.parent.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServesimError(f"--out {out_dir}: cannot create folder "
                                f"({exc.strerror or exc})") from None
        if self.path.exists():
            self._open_existing(resume, overwrite)

    def _open_existing(self, resume: bool, overwrite: bool) -> None:
        assert self.path is not None
        try:
            meta = json.loads(pq.read_schema(self.path).metadata[_META_KEY])
        except Exception:
            raise ServesimError(f"{self.path}: exists and is not a servesim sweep results "
                                "file; choose another --out") from None
        keys = set(meta["grid"]) | set(self.grid_keys)
        prefixes = [("policy" if k == "policy.name" else k) for k in keys]
        ours, theirs = self.identity, meta["scenario"]
        diffs = [f"{k}: {theirs.get(k, '(absent)')!r} in the file, {ours.get(k, '(absent)')!r} "
                 "now" for k in sorted(set(ours) | set(theirs), key=str)
                 if ours.get(k, "(absent)") != theirs.get(k, "(absent)")
                 and not any(k == p or k.startswith(p + ".") for p in prefixes)]
        if diffs:
            more = f"; {len(diffs) - 3} more" if len(diffs) > 3 else ""
            raise ServesimError(f"{self.path}: holds a sweep of a different scenario "
                                f"({'; '.join(diffs[:3])}{more}); choose another --out")
        if list(meta["grid"]) != self.grid_keys:
            raise ServesimError(f"{self.path}: holds a sweep over grid keys "
                                f"{', '.join(meta['grid'])}, not {', '.join(self.grid_keys)}; "
                                "choose another --out")
        if overwrite:
            self.path.unlink()
            return
        table = pq.read_table(self.path)
        if not resume:
            raise ServesimError(f"{self.path}: exists ({table.num_rows} rows of this sweep); "
                                "pass --resume to continue it or --overwrite to start again")
        for pos, row in enumerate(table.to_pylist()):
            order = self.order_of.get(row["point_key"])
            sort = (0, order, row["seed_index"]) if order is not None else (1, pos)
            self.rows[(row["point_key"], row["seed_index"])] = (sort, row)

    def discard(self) -> None:
        """Remove the ``out`` folder again if this object created it and it is still empty."""
        if self.path is not None and self.created and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()

    def done(self) -> set[tuple[str, int]]:
        """(point_key, seed_index) of the rows that finished ``ok``."""
        return {k for k, (_, row) in self.rows.items() if row["status"] == "ok"}

    def add(self, row: dict[str, Any], order: int) -> None:
        """Add (or replace) a row and write the file, unless the table is so large (a write
        over 50 ms) that writing would take more than 1/5 of the time: then the row goes with
        a later one."""
        self.rows[(row["point_key"], row["seed_index"])] = ((0, order, row["seed_index"]), row)
        self.dirty = True
        if (self.flush_cost < 0.05
                or time.perf_counter() - self.last_flush >= 4 * self.flush_cost):
            self.flush()

    def table(self) -> pa.Table:
        rows = [row for _, row in sorted(self.rows.values(), key=lambda item: item[0])]
        columns = [*self.grid_keys, *ROW_COLUMNS, *SUMMARY_KEYS, "point_key"]
        arrays = []
        for col in columns:
            values = [row.get(col) for row in rows]
            if col in self.grid_keys:
                arrays.append(_grid_array(values))
            elif col in ("seed_index", "seed"):
                arrays.append(pa.array(values, pa.int64()))
            elif col in SUMMARY_KEYS:
                arrays.append(_metric_array(values))
            else:
                arrays.append(pa.array(values, pa.string()))
        table = pa.Table.from_arrays(arrays, names=columns)
        return table.replace_schema_metadata({_META_KEY: json.dumps(self.meta, default=str)})

    def flush(self) -> None:
        """Rewrite the file atomically (temporary file, then rename) if rows changed."""
        if self.path is None or not self.dirty:
            return
        t0 = time.perf_counter()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(self.table(), tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.dirty = False
        self.last_flush = time.perf_counter()
        self.flush_cost = self.last_flush - t0

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (what the file holds), grid keys in ``attrs["grid_keys"]``
        as :func:`servesim.plots.load_results` gives them."""
        frame = self.table().to_pandas()
        frame.attrs["grid_keys"] = list(self.grid_keys)
        return frame


# --------------------------------------------------------------------------- sweeps


@dataclass
class SweepProgress:
    """Counts handed to the ``progress`` callback after every finished task."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed(self) -> float:
        """Wall seconds since the sweep started."""
        return time.perf_counter() - self.started

    @property
    def eta(self) -> float | None:
        """Wall seconds to go, from the mean pace so far; None before the first task."""
        return self.elapsed / self.done * (self.total - self.done) if self.done else None


def run_sweep(
    scenario: Scenario | str | os.PathLike[str],
    grid: Mapping[str, Sequence[Any]],
    *,
    seeds: int = 1,
    sets: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    dask: Any = None,
    dask_timeout: float = 10.0,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[SweepProgress], None] | None = None,
) -> pd.DataFrame:
    """Run every grid point x seed and return the results table (module docstring).

    Args:
        scenario: a scenario file or a :class:`Scenario`.
        grid: ``{"path.to.field": [values]}``; the first key varies slowest.
        seeds: seeds per point (:func:`derive_seed`).
        sets: fixed overrides applied to every point (``--set``).
        out: folder of ``results.parquet``; None keeps the table in memory only.
        workers: processes (default: all cores; 1 runs in this process).
        dask: a Dask scheduler address, ``"local"``, or a ``Client``/cluster object.
        resume: skip the rows already ``ok`` in an existing file.
        overwrite: replace an existing file of the same sweep instead of refusing.
        progress: called with a :class:`SweepProgress` after every finished task.
    """
    base = SweepBase.of(scenario, sets)
    grid = {k: list(v) for k, v in grid.items()}
    tasks = build_tasks(base, grid, seeds)
    identity = _flatten(json.loads(json.dumps(base.scenario.to_dict(), default=str)))
    store = ResultsFile(out, identity, list(grid), {t.point_key: t.order for t in tasks},
                        source=base.source, resume=resume, overwrite=overwrite)
    done = store.done()
    todo = [t for t in tasks if (t.point_key, t.seed_index) not in done]
    counts = SweepProgress(total=len(todo), skipped=len(tasks) - len(todo))
    if not todo:
        if progress is not None:
            progress(counts)
        store.flush()
        return store.frame()
    try:
        executor = make_executor(min(_workers(workers), len(todo)), dask, dask_timeout)
    except BaseException:
        store.discard()
        raise
    if progress is not None:
        progress(counts)
    aborted = True
    try:
        with _SigintFlag() as ctrl_c:
            for task, outcome in executor.run(todo):
                ctrl_c.check()  # before recording: a run interrupted inside may be incomplete
                store.add(make_row(task, outcome), task.order)
                counts.done += 1
                counts.failed += outcome["status"] != "ok"
                if progress is not None:
                    progress(counts)
        aborted = False
    finally:
        store.flush()  # first: an interrupted sweep keeps every finished row
        executor.close(abort=aborted)
    return store.frame()


# --------------------------------------------------------------------------- goodput


@dataclass(frozen=True)
class GoodputPoint:
    """One evaluated value: the metric's mean over seeds and whether it meets the target."""

    value: float
    metric: float
    per_seed: tuple[float, ...]
    meets: bool


@dataclass
class GoodputResult:
    """The outcome of a goodput search.

    ``best`` is the largest evaluated value meeting the target (None: even ``lo`` misses it);
    ``bound`` the smallest evaluated value above it that misses (None: ``hi`` meets it).
    """

    best: float | None
    bound: float | None
    points: list[GoodputPoint]
    warnings: list[str]


def _monotonicity_warnings(points: list[GoodputPoint], label: str) -> list[str]:
    ordered = sorted(points, key=lambda p: p.value)
    warnings = []
    for i, low in enumerate(ordered):
        above = next((p for p in ordered[i + 1:] if p.meets and not low.meets), None)
        if above is not None:
            warnings.append(f"not monotone: the target is missed at {label}={low.value:g} but "
                            f"met at {label}={above.value:g}; the value found may not be the "
                            "largest")
            break
    rises = [(a, b) for a, b in itertools.pairwise(ordered)
             if b.metric - a.metric > 0.01 * max(abs(a.metric), abs(b.metric))]
    if rises:
        a, b = max(rises, key=lambda ab: ab[1].metric - ab[0].metric)
        warnings.append(f"the metric rises from {a.metric:.4g} at {label}={a.value:g} to "
                        f"{b.metric:.4g} at {label}={b.value:g}; the search assumes it falls "
                        "as the value grows")
    return warnings


def search_goodput(
    evaluate: Callable[[float], float | Sequence[float]],
    lo: float,
    hi: float,
    *,
    target: float,
    integer: bool = False,
    tol: float | None = None,
    label: str = "x",
    on_point: Callable[[GoodputPoint], None] | None = None,
) -> GoodputResult:
    """Largest ``x`` in ``[lo, hi]`` with ``evaluate(x) >= target``, by bracketing and bisection.

    Assumes the metric does not rise with ``x``. Both ends are evaluated first: if ``hi``
    meets the target it is the answer (the boundary is at ``hi`` or beyond); if ``lo`` misses
    it there is none. Otherwise ``[good, bad]`` is halved until it is no wider than ``tol``
    (default: 1 % of ``hi - lo``; integers: 1, so ``best + 1`` misses). ``evaluate`` returns
    the metric or its values over seeds (their mean is compared).
    """
    if not lo < hi:
        raise ServesimError(f"--vary {label}={lo:g}:{hi:g}: LO must be < HI")
    points: list[GoodputPoint] = []

    def probe(x: float) -> bool:
        raw = evaluate(x)
        values = tuple(float(v) for v in raw) if isinstance(raw, Sequence) else (float(raw),)
        mean = math.fsum(values) / len(values)
        point = GoodputPoint(x, mean, values, mean >= target)
        points.append(point)
        if on_point is not None:
            on_point(point)
        return point.meets

    if integer:
        lo, hi = int(lo), int(hi)
    width = max(1, int(tol or 1)) if integer else (tol if tol else (hi - lo) / 100)
    meets_lo, meets_hi = probe(lo), probe(hi)
    best: float | None
    bound: float | None
    if meets_hi:
        best, bound = hi, None
    elif not meets_lo:
        best, bound = None, lo
    else:
        good, bad = lo, hi
        while bad - good > width:
            mid = (good + bad) // 2 if integer else (good + bad) / 2
            if probe(mid):
                good = mid
            else:
                bad = mid
        best, bound = good, bad
    return GoodputResult(best, bound, points, _monotonicity_warnings(points, label))


def _value_at(raw: Any, key: str) -> Any:
    node = raw
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def goodput(
    scenario: Scenario | str | os.PathLike[str],
    key: str,
    lo: float,
    hi: float,
    *,
    target: float = 0.9,
    metric: str = "slo_attainment",
    seeds: int = 1,
    integer: bool | None = None,
    tol: float | None = None,
    sets: dict[str, Any] | None = None,
    workers: int | None = None,
    dask: Any = None,
    dask_timeout: float = 10.0,
    on_point: Callable[[GoodputPoint], None] | None = None,
) -> GoodputResult:
    """Largest value of ``key`` in ``[lo, hi]`` at which ``metric`` (mean over ``seeds``) stays
    >= ``target`` (:func:`search_goodput`). ``integer`` None: integer when the field is an
    integer field. A failing simulation stops the search with its error."""
    if metric not in SUMMARY_KEYS:
        hint = did_you_mean(metric, SUMMARY_KEYS)
        raise ServesimError(f"--metric {metric}: not a summary key{hint}; allowed: "
                            + ", ".join(SUMMARY_KEYS))
    base = SweepBase.of(scenario, sets)
    probe_lo = base.point({key: lo})
    base.point({key: hi})
    if integer is None:
        integer = type(_value_at(probe_lo.to_dict(), key)) is int
    if integer and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ServesimError(f"--vary {key}={lo:g}:{hi:g}: {key} is an integer; LO and HI must be "
                            "integers")
    executor = make_executor(1 if seeds == 1 and dask is None else
                             min(_workers(workers), seeds), dask, dask_timeout)

    def evaluate(value: float) -> list[float]:
        values = []
        for task, outcome in sorted(executor.run(build_tasks(base, {key: [value]}, seeds)),
                                    key=lambda item: item[0].seed_index):
            ctrl_c.check()
            got = (outcome["summary"] or {}).get(metric)
            if outcome["status"] != "ok":
                raise ServesimError(f"{key}={value:g} seed {task.seed}: {outcome['error']}")
            if got is None:
                raise ServesimError(f"{key}={value:g} seed {task.seed}: {metric} is null")
            values.append(float(got))
        return values

    aborted = True
    try:
        with _SigintFlag() as ctrl_c:
            result = search_goodput(evaluate, lo, hi, target=target, integer=integer, tol=tol,
                                    label=key, on_point=on_point)
        aborted = False
    finally:
        executor.close(abort=aborted)
    return result
