"""Fault-tolerant sweeps: a killed worker's point is retried once, alone, then recorded failed;
no finished point is lost and the results file stays whole."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from servesim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
POLICY = "tests.killer_policy:KillerPolicy"


@pytest.fixture
def at_root(monkeypatch):  # type: ignore[no-untyped-def]
    """Workers import the test policy by dotted path from the working directory."""
    monkeypatch.chdir(ROOT)


def _sweep(tmp_path: Path, die: list[str]) -> pd.DataFrame:
    return run_sweep(
        ROOT / "scenarios" / "ci" / "fcfs-overload.yaml",
        {"policy.die": die, "duration": [2, 3]},
        sets={"policy.name": POLICY, "policy.marker": str(tmp_path)},
        out=tmp_path / "out",
        workers=2,
    )


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_point_that_kills_its_worker_is_failed_and_others_survive(tmp_path, at_root) -> None:
    """'always' dies twice -> failed with a clear error; the points in flight with it are
    retried alone and finish; the file on disk has every row."""
    frame = _sweep(tmp_path, ["never", "always"])
    assert len(frame) == 4
    assert (frame.loc[frame["policy.die"] == "always", "status"] == "failed").all()
    assert (frame.loc[frame["policy.die"] == "never", "status"] == "ok").all()
    assert "died twice" in frame.loc[frame["policy.die"] == "always", "error"].iloc[0]
    on_disk = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(on_disk) == 4


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_point_killed_once_is_retried_and_succeeds(tmp_path, at_root) -> None:
    """A worker killed once (e.g. by the OOM killer) costs a retry, not the point."""
    frame = _sweep(tmp_path, ["never", "once"])
    assert (frame["status"] == "ok").all(), frame[["policy.die", "status", "error"]]
    assert (tmp_path / "died-once").exists()
