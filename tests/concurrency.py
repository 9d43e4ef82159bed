"""Start work in forked processes at the same moment: the races the tests need are real."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable


def run_together(*jobs: Callable[[], object]) -> list[int]:
    """Fork one child per job, release them together through one pipe, and return each
    child's exit status (0: its job returned; 1: it raised, with the traceback printed)."""
    gate_r, gate_w = os.pipe()
    pids = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(gate_w)
            os.read(gate_r, 1)  # every child starts at once
            try:
                job()
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        pids.append(pid)
    os.close(gate_r)
    os.write(gate_w, b"go")
    os.close(gate_w)
    return [os.waitpid(p, 0)[1] for p in pids]
