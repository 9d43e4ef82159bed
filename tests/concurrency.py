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


def _gated(gate, job: Callable[[], object]) -> None:  # pragma: no cover - the child
    gate.wait()
    job()


def run_together_fresh(*jobs: Callable[[], object], timeout: float = 300) -> list[int]:
    """:func:`run_together` in freshly spawned interpreters, for jobs that must not inherit
    the test process's threads: a fork of a process whose other threads hold a lock (an
    xdist worker's, pyarrow's or a library's own) can leave the child waiting on it forever.
    The jobs must pickle (module-level functions, ``functools.partial`` of them)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    gate = ctx.Event()
    procs = [ctx.Process(target=_gated, args=(gate, job)) for job in jobs]
    for p in procs:
        p.start()
    gate.set()  # every child starts at once, its imports done
    for p in procs:
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            p.join()
    return [p.exitcode for p in procs]
