"""The kill matrix through real Airflow: ``airflow dags test batch_score`` SIGKILLed (its whole
process group) at four points, for a first run of a date and for a rerun of a committed date
with another run id. Every cell is checked by reading the table, never by trusting
Airflow's state (apache/airflow#60858: a SIGKILLed task can be marked success):

- the last committed snapshot reads whole (every expected image once, one run's rows)
  before and after the kill;
- the next run (another run id) commits: it is killed right after its commit lands, which
  also proves the commit does not wait for the cleanup tasks;
- 0 duplicate rows, 0 lost rows, and 0 runs that Airflow marks successful without a commit.

Kill points: ``mid_score`` (the first data file of the run appeared: other shards are still
being scored), ``before_commit`` (every part written, the ``commit`` task just started),
``in_commit`` (a random moment between the start of ``commit`` and its log entry landing),
``after_commit`` (the commit landed; post-commit tasks and ``vacuum`` are running).

Costs about 14 ``dags test`` runs that end early. ``MLCORE_KILL_POINTS`` (comma-separated)
picks kill points and ``MLCORE_KILL_REPEATS`` (default 1) repeats each cell; the issue's
3 repeats per cell: ``MLCORE_KILL_REPEATS=3``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from mlcore.airflow_local import airflow_env
from mlcore.demo import TASK_EVENT
from mlcore.predictions import PartitionIncomplete, history, read_partition
from mlcore.storage import open_lake
from tests.integration.pipeline_checks import DAY, metadata_rows

pytestmark = pytest.mark.e2e

POINTS = [p for p in os.environ.get(
    "MLCORE_KILL_POINTS", "mid_score,before_commit,in_commit,after_commit").split(",") if p]
REPEATS = int(os.environ.get("MLCORE_KILL_REPEATS", "1"))
_logical = iter(f"{date(2027, 1, 1) + timedelta(days=i)}T03:00:00+00:00" for i in range(400))


def _log_entries(lake) -> set[str]:
    return {k for k in lake.list("predictions/_delta_log") if k.endswith(".json")}


def _data_files(lake, day: date) -> set[str]:
    return {k for k in lake.list(f"predictions/dt={day}") if k.endswith(".parquet")}


def _run_id(home: Path, logical: str) -> str:
    """``dags test`` names its run after the wall clock: find it by its logical date."""
    rows = metadata_rows(home, "SELECT run_id, logical_date FROM dag_run WHERE dag_id = "
                               "'batch_score'")
    (run_id,) = [r["run_id"] for r in rows if str(r["logical_date"]).startswith(logical[:10])]
    return run_id


def killed_run(env: dict, lake, point: str, day: date, conf: dict, seed: int) -> str:
    """Start ``dags test batch_score`` at a new logical date, SIGKILL its process group at
    ``point``; return the run id. Fails if the run ended before reaching the point."""
    logical = next(_logical)
    exe = shutil.which("airflow", path=env["PATH"]) or "airflow"
    proc = subprocess.Popen([exe, "dags", "test", "batch_score", logical, "--conf",
                             json.dumps(conf)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    started: set[str] = set()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if (event := TASK_EVENT.search(line)) and event["what"] == "starting":
                started.add(event["task"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log_before, files_before = _log_entries(lake), _data_files(lake, day)
    delay = random.Random(seed).uniform(0.0, 3.0)
    commit_started = None
    deadline = time.monotonic() + 600
    try:
        while True:
            assert proc.poll() is None, f"run ended before {point}:\n{''.join(lines[-40:])}"
            assert time.monotonic() < deadline, f"never reached {point}"
            landed = _log_entries(lake) - log_before
            if "commit" in started and commit_started is None:
                commit_started = time.monotonic()
            if point == "mid_score" and _data_files(lake, day) - files_before:
                break
            if point == "before_commit" and commit_started is not None:
                break
            if point == "in_commit" and commit_started is not None and (
                    landed or time.monotonic() - commit_started >= delay):
                break
            if point == "after_commit" and landed:
                break
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already ended (the assert says why)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    return _run_id(Path(env["MLCORE_HOME"]), logical)


def assert_whole(lake, day: date, expected: set[str]) -> str | None:
    """The partition's current snapshot: None if it was never committed, else its one run."""
    try:
        table = read_partition(lake, day, columns=["image_id", "dag_run_id"])
    except PartitionIncomplete:
        return None
    ids = table.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert set(ids) == expected, "lost or foreign rows"
    (run,) = set(table.column("dag_run_id").to_pylist())
    return run


@pytest.fixture(scope="module")
def lake_copy(local_run, tmp_path_factory):
    """A copy of the shared local run's home (lake, MLflow and Airflow DBs): the matrix adds
    commits and audit entries that the other end-to-end tests must not see."""
    home = tmp_path_factory.mktemp("kill-matrix") / "home"
    shutil.copytree(local_run.settings.home, home, ignore=shutil.ignore_patterns("logs"))
    settings = local_run.settings.model_copy(update={"home": home})
    env = airflow_env(settings, {"AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0"})
    lake = open_lake(settings)
    expected = set(read_partition(lake, DAY, columns=["image_id"]).column("image_id")
                   .to_pylist())
    return env, lake, expected, home


def _assert_no_false_success(home: Path, lake) -> None:
    """Runs Airflow marks successful must have committed: their run id is in the history."""
    committed = {h.get("dag_run_id") for h in history(lake)}
    succeeded = metadata_rows(home, "SELECT run_id FROM dag_run WHERE dag_id = 'batch_score' "
                                    "AND state = 'success'")
    commits_ok = metadata_rows(home, "SELECT run_id FROM task_instance WHERE dag_id = "
                                     "'batch_score' AND task_id = 'commit' AND state = 'success'")
    for row in succeeded + commits_ok:
        assert row["run_id"] in committed, row


@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("cell", ["first_run", "rerun"])
def test_sigkill_at_each_point_keeps_the_table_whole(lake_copy, cell, point, repeat):
    env, lake, expected, home = lake_copy
    seed = hash((cell, point, repeat)) & 0xFFFF
    if cell == "first_run":  # a date never committed: everything ingested, rescored into it
        day = date(2026, 12, 1) + timedelta(days=POINTS.index(point) + 10 * repeat)
        conf = {"date": str(day), "rescore_all": True}
        assert assert_whole(lake, day, expected) is None
    else:  # the committed DAY, rerun with another run id
        day, conf = DAY, {"date": str(DAY)}
        before = assert_whole(lake, day, expected)
        assert before is not None
        kept = {k: lake.read_bytes(k) for k in read_partition_files(lake, day)}

    run_id = killed_run(env, lake, point, day, conf, seed)
    after = assert_whole(lake, day, expected)
    if point == "after_commit":
        assert after == run_id  # it committed before it was killed
    elif cell == "first_run":
        assert after in (None, run_id) and (after is None or point == "in_commit")
    else:
        assert after in (before, run_id) and (after == before or point == "in_commit")
        if after == before:  # the committed snapshot's files were not touched
            assert {k: lake.read_bytes(k) for k in kept} == kept

    if point != "after_commit":  # the next run, with another run id, commits
        nxt = killed_run(env, lake, "after_commit", day, conf, seed + 1)
        assert assert_whole(lake, day, expected) == nxt
    _assert_no_false_success(home, lake)


def read_partition_files(lake, day: date) -> list[str]:
    from mlcore.predictions import partition_commit

    return [f"predictions/{f}" for f in partition_commit(lake, day).files]
