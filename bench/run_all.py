"""Run every benchmark in sequence, each in its own process, then print a one-line summary each.

    .venv/bin/python bench/run_all.py            # full sizes (train takes minutes)
    .venv/bin/python bench/run_all.py --quick    # smoke sizes: a minute or two
    .venv/bin/python bench/run_all.py --only score train

Each benchmark writes ``bench/results/<name>.json``; this script adds
``bench/results/run_all.json`` with exit codes, wall times and the peak RSS of each
benchmark process measured from outside (``os.wait4``). The exit code is non-zero if a
benchmark crashed (a missed goal is reported, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _report

BENCHMARKS = ["ingest", "score", "train"]
QUICK_ARGS = {
    "ingest": ["--n", "2000"],
    "score": ["--n", "20000"],
    "train": ["--epochs", "1", "--subset", "5000"],
}
HEADLINE = {  # (figure key, short label) shown in the summary
    "ingest": [("files_per_s", "ingest"), ("gx_s", "GX")],
    "score": [("a_images_per_s", "(a)"), ("a_over_b", "a/b"), ("a_over_c", "a/c"),
              ("peak_rss_a_bytes", "RSS after (a)")],
    "train": [("holdout_accuracy", "accuracy"), ("wall_s", "wall"),
              ("fit_images_per_s", "fit")],
}


def run(name: str, extra: list[str]) -> dict:
    cmd = [sys.executable, str(_report.BENCH_DIR / f"{name}.py"), *extra]
    print(f"\n>>> {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=_report.BENCH_DIR.parent)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this one child (and its waited children)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "benchmark": name,
        "args": extra,
        "exit_code": proc.returncode,
        "wall_s": time.perf_counter() - started,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: " + "; ".join(
        f"{k} {' '.join(v)}" for k, v in QUICK_ARGS.items()))
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS)
    args = p.parse_args()

    report = _report.Report("run_all", "all benchmarks", {
        "quick": args.quick, "benchmarks": " ".join(args.only)})
    runs = [run(name, QUICK_ARGS[name] if args.quick else []) for name in args.only]

    rows = []
    for r in runs:
        path = _report.RESULTS_DIR / f"{r['benchmark']}.json"
        figures, goals = {}, []
        if r["exit_code"] == 0 and path.exists():
            data = json.loads(path.read_text())
            figures, goals = data["figures"], data["goals"]
        headline = ", ".join(
            f"{short} {_report.fmt(figures[k]['value'], figures[k]['unit'])}"
            for k, short in HEADLINE[r["benchmark"]] if k in figures
        )
        judged = [g["met"] for g in goals if g["met"] is not None]
        not_judged = len(goals) - len(judged)
        rows.append([
            r["benchmark"], "ok" if r["exit_code"] == 0 else f"FAILED ({r['exit_code']})",
            _report.fmt(r["wall_s"], "s"), _report.fmt(r["peak_rss_bytes"], "B"),
            f"{sum(judged)}/{len(judged)}" + (f" (+{not_judged} n/a)" if not_judged else ""),
            headline or "-",
        ])
        r["goals"] = goals
    report.add_table("summary", ["benchmark", "status", "wall", "peak RSS (wait4)", "goals met",
                                 "headline"], rows, data=runs)
    report.note("peak RSS (wait4) is the whole benchmark process as the kernel saw it, "
                "including untimed setup and imports.")
    report.finish()
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
