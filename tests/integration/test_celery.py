"""Scale-out: the DAGs on CeleryExecutor (Redis broker, the SQLite metadata DB as result
backend) with two workers of concurrency 1, and the same scoring on LocalExecutor.

Mapped tasks must spread over both workers, and the partition the Celery run publishes must
hold the same predictions as a LocalExecutor run over the same inputs and champion. Inputs
are tiny (8 images a batch, 4 rows a shard) so that several mapped tasks exist cheaply.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from live_airflow import ARTIFACTS, running_airflow, running_redis, start_celery_worker

from mlcore.demo import PROFILES, schedule_for
from mlcore.seed import seed_landing
from mlcore.settings import Settings
from mlcore.storage import open_lake

pytestmark = pytest.mark.e2e

DAY: date = (datetime.now(UTC) - timedelta(days=2)).date()
WORKERS = ("worker-a", "worker-b")


def predictions(lake, day: date) -> tuple[dict, list[tuple[str, int]]]:
    from mlcore.predictions import partition_commit, read_partition

    table = read_partition(lake, day)
    rows = zip(table.column("image_id").to_pylist(), table.column("predicted_class").to_pylist(),
               strict=True)
    commit = partition_commit(lake, day)
    return {"version": commit.version, "rows": commit.rows, **commit.metadata}, sorted(rows)


def celery_provider_importable() -> None:
    """Fail early and say why when the Celery provider cannot load with the installed Celery."""
    try:
        from celery.backends.database import retry  # noqa: F401 - the provider imports it
    except ImportError as exc:
        from importlib.metadata import version

        pytest.fail(f"apache-airflow-providers-celery {version('apache-airflow-providers-celery')} "
                    f"cannot load with celery {version('celery')} ({exc}): the CeleryExecutor "
                    "would not start. Pin a Celery the provider supports in constraints.txt.")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    celery_provider_importable()
    settings = Settings(home=tmp_path_factory.mktemp("celery"), shard_rows=4, **PROFILES["test"])
    home = Path(settings.home).resolve()
    lake = open_lake(settings)
    seeded = [b.batch_id for b in seed_landing(settings, lake, per_batch=8)]
    logical = schedule_for(DAY)
    result: dict = {"settings": settings, "seeded": seeded}

    celery_home = home / "airflow-celery"
    with running_redis(home / "redis", ARTIFACTS / "celery-redis") as broker:
        celery_env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{celery_home / 'airflow.db'}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        }
        with running_airflow(settings, "celery", airflow_home=celery_home,
                             extra_env=celery_env) as airflow:
            workers = [start_celery_worker(airflow, name) for name in WORKERS]
            for worker in workers:  # both consume before the first task is queued
                worker.wait_for_log(" ready.", timeout=180)
            result["ingest"] = airflow.run_dag("ingest_landing", logical["ingest_landing"], 600)
            result["retrain"] = airflow.run_dag("retrain_model", logical["retrain_model"], 900)
            result["score"] = airflow.run_dag("batch_score", logical["batch_score"], 600)
    result["celery_predictions"] = predictions(lake, DAY)

    # The same scoring run on LocalExecutor: same lake, same champion, a fresh Airflow DB.
    with running_airflow(settings, "celery-local-reference",
                         airflow_home=home / "airflow-local") as airflow:
        result["local_score"] = airflow.run_dag("batch_score", logical["batch_score"], 600)
    result["local_predictions"] = predictions(lake, DAY)
    return result


def hostnames(tis: list[dict], task_id: str) -> list[str]:
    return [t["hostname"] for t in tis if t["task_id"] == task_id and t["map_index"] >= 0]


def test_mapped_tasks_ran_on_both_celery_workers(runs):
    _, ingest_tis = runs["ingest"]
    _, score_tis = runs["score"]
    assert len(hostnames(ingest_tis, "ingest")) == len(runs["seeded"])
    shards = hostnames(score_tis, "score_shard")
    assert len(shards) >= 4
    assert set(shards) == set(WORKERS), f"score_shard hostnames: {shards}"
    for _, tis in (runs["ingest"], runs["retrain"], runs["score"]):  # every task ran on a worker
        assert {t["hostname"] for t in tis if t["state"] == "success"} <= set(WORKERS)
        assert {t["state"] for t in tis} <= {"success", "skipped"}


def test_celery_partition_equals_the_local_executor_one(runs):
    celery_manifest, celery_rows = runs["celery_predictions"]
    local_manifest, local_rows = runs["local_predictions"]
    _, local_tis = runs["local_score"]
    assert not {t["hostname"] for t in local_tis} & set(WORKERS)  # really not on Celery
    assert local_manifest["version"] == celery_manifest["version"] + 1
    assert local_manifest["model"] == celery_manifest["model"]  # the same pinned champion
    assert local_manifest["inputs"] == celery_manifest["inputs"]
    assert len(celery_rows) == celery_manifest["rows"] > 0
    assert local_rows == celery_rows
