"""Shared plumbing for the benchmarks: machine info, timing helpers, table printing, JSON.

Every benchmark builds one :class:`Report`, adds figures, goals and notes, then calls
:meth:`Report.finish`, which prints the machine, the tables and the goals, and writes
``bench/results/<name>.json``. Nothing here imports torch or mlcore at module level, so
``run_all.py`` can use it cheaply.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
GIB = 1024**3
MIB = 1024**2

NOISE_NOTE = (
    "Timings are wall-clock on a shared 2-core machine where other people run tests at the "
    "same time: expect noise of tens of percent between runs; compare load averages."
)


# --- machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fs_type(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), e.g. ``ext4`` or ``tmpfs``."""
    path = Path(path).resolve()
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(
                mount
            ) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, Python/torch versions and threads (torch only if already imported)."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": _mem_total_bytes(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": None,
        "torch_threads": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


# --- measuring -----------------------------------------------------------------------------


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss``, KiB on Linux).

    Children are deliberately not reported from ``RUSAGE_CHILDREN`` here: on Linux a child
    created by fork (+exec) inherits the parent's high-water mark at fork time, so a tiny
    ``git rev-parse`` forked from a 1 GiB process reports 1 GiB. ``run_all.py`` measures
    each benchmark process from outside with ``os.wait4`` instead, and :func:`run_in_child`
    reports the child's own ``VmHWM``.
    """
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def vm_hwm() -> int | None:
    """This process's own RSS high-water mark (``VmHWM``, reset by exec), bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def timer():
    """``with timer() as t: ...`` then ``t.seconds``."""

    class _T:
        seconds = 0.0

    t = _T()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


class Stopwatch:
    """Accumulates time spent in functions it wraps, per label (calls and seconds).

    ``sw.patch(module, "name", "label")`` replaces ``module.name`` with a timing wrapper for
    the benchmark process only; :meth:`restore` puts the originals back.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, fn, label: str):
        self.seconds.setdefault(label, 0.0)
        self.calls.setdefault(label, 0)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        timed.__wrapped__ = fn
        return timed

    def patch(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        self._patched.append((owner, attr, original))
        setattr(owner, attr, self.wrap(original, label))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()


def _child_call(fn, args):
    return fn(*args), vm_hwm()


def run_in_child(fn, *args) -> tuple[Any, int | None]:
    """Run ``fn(*args)`` in a fresh (spawned) process; return its result and the child's peak RSS.

    Used for untimed setup, so that building inputs does not inflate the benchmark
    process's own peak RSS. ``fn`` must be a module-level function of the calling script.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_child_call, (fn, args))


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


# --- CLI -----------------------------------------------------------------------------------


def parser(description: str, default_n: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if default_n is not None:
        p.add_argument("--n", type=int, default=default_n, help=f"images (default {default_n:,})")
    return p


# --- formatting ----------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    """A figure for humans: thousands separators, a few significant digits, bytes as MiB/GiB."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "B":
        return f"{value / MIB:,.0f} MiB ({value / GIB:.2f} GiB)"
    if isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        a = abs(value)
        text = (f"{value:,.0f}" if a >= 1000 else f"{value:.1f}" if a >= 100
                else f"{value:.2f}" if a >= 1 else f"{value:.3f}")
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain monospace table; the first column is left-aligned, the others right-aligned."""
    cells = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# --- the report ----------------------------------------------------------------------------


class Report:
    """Figures, extra tables, goals and notes of one benchmark run, printed and saved as JSON."""

    def __init__(self, name: str, title: str, params: dict[str, Any] | None = None) -> None:
        self.name, self.title = name, title
        self.params = dict(params or {})
        self.started = datetime.now(UTC)
        self.load_start = os.getloadavg()
        self.figures: dict[str, dict[str, Any]] = {}
        self.tables: list[dict[str, Any]] = []
        self.goals: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(self, key: str, label: str, value: Any, unit: str = "") -> Any:
        self.figures[key] = {"label": label, "value": value, "unit": unit}
        return value

    def add_table(self, title: str, headers: list[str], rows: list[list[Any]],
                  data: Any = None) -> None:
        """An extra table (already formatted cells); ``data`` is what goes to JSON instead."""
        self.tables.append({"title": title, "headers": headers,
                            "rows": [[str(c) for c in r] for r in rows], "data": data})

    def goal(self, label: str, met: bool | None, detail: str) -> None:
        """A stated target; ``met=None`` when it does not apply to this run (say why in detail)."""
        self.goals.append({"goal": label, "met": met, "detail": detail})

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_peak_rss(self, key: str = "peak_rss_bytes",
                     label: str = "peak RSS (this process)") -> int:
        return self.add(key, label, peak_rss(), "B")

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "started_at": self.started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "argv": sys.argv,
            "params": self.params,
            "machine": machine_info(),
            "load_average": {"start": list(self.load_start), "end": list(os.getloadavg())},
            "figures": self.figures,
            "tables": [{k: v for k, v in t.items() if k != "rows"} | {
                "rows": t["data"] if t["data"] is not None else t["rows"]} for t in self.tables],
            "goals": self.goals,
            "notes": [*self.notes, NOISE_NOTE],
        }

    def render(self, data: dict[str, Any]) -> str:
        m = data["machine"]
        ram = f"{m['ram_bytes'] / GIB:.1f} GiB" if m["ram_bytes"] else "unknown"
        load = data["load_average"]
        out = [
            "",
            f"== {self.title} ==",
            f"machine: {m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable), "
            f"RAM {ram}",
            f"python {m['python']}, torch {m['torch'] or 'not loaded'}, "
            f"torch threads {m['torch_threads'] if m['torch_threads'] is not None else 'n/a'}",
            "load average (1/5/15 min): start "
            + " ".join(f"{x:.2f}" for x in load["start"])
            + ", end "
            + " ".join(f"{x:.2f}" for x in load["end"]),
        ]
        if self.params:
            out.append("params: " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        if self.figures:
            out += ["", table(["figure", "value"], [
                [f["label"], fmt(f["value"], f["unit"])] for f in self.figures.values()
            ])]
        for t in self.tables:
            out += ["", t["title"], table(t["headers"], t["rows"])]
        if self.goals:
            out += ["", table(["goal", "met", "detail"], [
                [g["goal"], "n/a" if g["met"] is None else ("YES" if g["met"] else "NO"),
                 g["detail"]] for g in self.goals
            ])]
        out += [""] + [f"note: {n}" for n in data["notes"]]
        return "\n".join(out)

    def finish(self) -> Path:
        data = self.as_dict()
        print(self.render(data), flush=True)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"\nwrote {path.relative_to(BENCH_DIR.parent)}", flush=True)
        return path
