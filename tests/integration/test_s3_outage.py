"""S3 outages during real DAG runs: the S3 server is frozen (SIGSTOP) while a task works.

- A 20 s outage during ingestion and another during scoring are ridden out by the retries
  (boto3 ``standard`` mode inside a task, then Airflow's task retries), and the outputs
  equal a clean local-lake run.
- An outage longer than the retry budget fails the scoring run, and nothing is published:
  no table commit, no readable partition, no ``predictions`` Asset event. A later run, with S3
  back, commits the complete partition.

The server keeps its objects while frozen, and the kernel still accepts connections, so a
client sees what an overloaded or partitioned S3 looks like: requests that never answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlcore.airflow_local import DagRunFailed, airflow_env, dags_test, ensure_db
from mlcore.demo import PROFILES, TASK_EVENT, schedule_for, summarize
from mlcore.predictions import PartitionIncomplete, history, partition_commit, read_partition
from mlcore.seed import seed_landing
from mlcore.settings import Settings
from mlcore.storage import open_lake
from tests.fixtures_servers import moto_server
from tests.integration.pipeline_checks import (
    DAY,
    PER_BATCH,
    assert_same_predictions,
    metadata_rows,
)

pytestmark = pytest.mark.e2e
OUTAGE_S = 20.0


@dataclass
class Outage:
    """Freezes the S3 server when ``task_id`` starts: for ``seconds``, or until :meth:`end`."""

    server: object
    task_id: str
    seconds: float | None = OUTAGE_S
    map_index: int | None = None  # the task instance that was starting
    started: float = 0.0
    ended: float = 0.0
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def on_line(self, line: str) -> None:
        event = TASK_EVENT.search(line)
        if (self._thread is None and event and event["what"] == "starting"
                and event["task"] == self.task_id):
            self.map_index = int(event["index"])
            self._thread = threading.Thread(target=self._freeze, daemon=True)
            self._thread.start()

    def _freeze(self) -> None:
        self.server.pause()
        self.started = time.time()
        try:
            self._done.wait(self.seconds)
        finally:
            self.server.resume()
            self.ended = time.time()

    def end(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def happened(self) -> bool:
        return self._thread is not None and self.ended - self.started >= (self.seconds or 0) - 0.5


def task_runs(home: Path, dag_id: str, task_id: str) -> list[dict]:
    return metadata_rows(home, "SELECT map_index, state, try_number, start_date, end_date "
                         "FROM task_instance WHERE dag_id = ? AND task_id = ?", dag_id, task_id)


def asset_events(home: Path, name: str) -> int:
    return len(metadata_rows(home, "SELECT e.id FROM asset_event e JOIN asset a ON "
                             "a.id = e.asset_id WHERE a.name = ?", name))


def _epoch(value: str) -> float:
    """A timestamp from the SQLite metadata DB (UTC, stored with or without an offset)."""
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@pytest.fixture(scope="module")
def outage_runs(tmp_path_factory):
    """Seed -> ingest (20 s outage) -> retrain -> score with an outage outlasting the retry
    budget (fails) -> score again (20 s outage). Records what each step saw."""
    home = tmp_path_factory.mktemp("outage-run")
    with moto_server(tmp_path_factory.mktemp("outage-moto")) as server:
        settings = Settings(home=home, **PROFILES["test"],
                            lake_uri=f"s3://{server.bucket}/lake",
                            s3_endpoint_url=server.endpoint, s3_access_key_id="testing",
                            s3_secret_access_key="testing")
        lake = open_lake(settings)
        batches = seed_landing(settings, lake, per_batch=PER_BATCH)
        env = airflow_env(settings)
        ensure_db(env)
        logical = schedule_for(DAY)
        logs = home / "logs"

        ingest_outage = Outage(server, "ingest")
        dags_test(env, "ingest_landing", logical["ingest_landing"],
                  log_file=logs / "ingest.log", on_line=ingest_outage.on_line)
        ingest_outage.end()
        dags_test(env, "retrain_model", logical["retrain_model"], log_file=logs / "retrain.log")

        # Short client budget (2 attempts x 1 s) and no Airflow retries: the outage wins.
        budget = settings.model_copy(update={"s3_max_attempts": 2, "s3_timeout_s": 1.0})
        short_env = airflow_env(budget, {"AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0"})
        long_outage = Outage(server, "commit", seconds=None)
        failure = None
        try:
            dags_test(short_env, "batch_score", logical["batch_score"],
                      log_file=logs / "score-failed.log", on_line=long_outage.on_line)
        except DagRunFailed as exc:
            failure = str(exc)
        finally:
            long_outage.end()
        after_failure = {
            "commit": task_runs(home, "batch_score", "commit"),
            "log_entries": [k for k in lake.list("predictions/_delta_log")
                            if k.endswith(".json")],
            "asset_events": asset_events(home, "predictions"),
        }
        try:
            read_partition(lake, DAY)
            after_failure["readable"] = True
        except PartitionIncomplete:
            after_failure["readable"] = False

        score_outage = Outage(server, "score_shard")
        dags_test(env, "batch_score", logical["batch_score"], log_file=logs / "score.log",
                  on_line=score_outage.on_line)
        score_outage.end()
        yield {
            "home": home, "settings": settings, "lake": lake,
            "summary": summarize(settings, DAY, [b.batch_id for b in batches]),
            "ingest_outage": ingest_outage, "score_outage": score_outage,
            "long_outage": long_outage, "failure": failure, "after_failure": after_failure,
        }


def _assert_rode_out(runs: list[dict], outage: Outage) -> None:
    assert outage.happened, "the S3 server was never frozen while the task ran"
    [frozen] = [r for r in runs if r["map_index"] == outage.map_index]
    assert all(r["state"] == "success" for r in runs), runs
    # The frozen task ran across the whole outage (it started as the freeze began: the
    # "starting" line is printed just before the start is recorded) and still succeeded.
    assert _epoch(frozen["start_date"]) <= outage.started + 1.0
    assert _epoch(frozen["end_date"]) >= outage.ended


def test_ingestion_rides_out_a_20s_outage(outage_runs, local_run):
    _assert_rode_out(task_runs(outage_runs["home"], "ingest_landing", "ingest"),
                     outage_runs["ingest_outage"])
    assert outage_runs["summary"]["batches"] == local_run.summary["batches"]


def test_an_outage_longer_than_the_retry_budget_fails_and_publishes_nothing(outage_runs):
    assert outage_runs["long_outage"].happened
    assert outage_runs["failure"] is not None, "batch_score succeeded with S3 frozen"
    after = outage_runs["after_failure"]
    assert [r["state"] for r in after["commit"]] == ["failed"]
    assert len(after["log_entries"]) <= 1  # at most the empty table's creation: no commit
    assert after["readable"] is False
    assert after["asset_events"] == 0


def test_scoring_rides_out_a_20s_outage_and_equals_a_clean_run(outage_runs, local_run):
    _assert_rode_out(task_runs(outage_runs["home"], "batch_score", "score_shard"),
                     outage_runs["score_outage"])
    lake = outage_runs["lake"]
    commit = partition_commit(lake, DAY)
    # The failed run never committed: the partition has exactly one commit, the later run's.
    assert [h["version"] for h in history(lake) if h.get("partition") == f"dt={DAY}"] == [
        commit.version]
    assert_same_predictions(lake, open_lake(local_run.settings), DAY)
    assert asset_events(outage_runs["home"], "predictions") == 1
