"""A policy that kills its own worker process, for the fault-tolerant sweep tests."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from servesim.config import fld
from servesim.policies.fcfs import FCFS, FCFSParams


@dataclass(frozen=True)
class KillerParams(FCFSParams):
    """``die``: never, always, or once (the first attempt, marked by a file in ``marker``)."""

    die: str = fld("never", "never | always | once")
    marker: str = fld("", "folder for the 'once' marker file")


class KillerPolicy(FCFS):
    """fcfs, except that it SIGKILLs its own process when asked to."""

    name = "test-killer"
    Params = KillerParams

    def attach(self, world):  # type: ignore[no-untyped-def]
        die = self.params.die
        if die == "always":
            os.kill(os.getpid(), signal.SIGKILL)
        if die == "once":
            mark = Path(self.params.marker) / "died-once"
            if not mark.exists():
                mark.write_text("x")
                os.kill(os.getpid(), signal.SIGKILL)
        super().attach(world)
