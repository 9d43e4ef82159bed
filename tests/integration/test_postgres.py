"""The pipeline with both metadata stores on a real PostgreSQL cluster: Airflow's metadata
DB and MLflow's tracking/registry backend (the production layout), on a folder lake."""

from __future__ import annotations

import pytest

from mlcore.data import list_shards, read_shard
from mlcore.predictions import read_partition
from mlcore.storage import open_lake
from tests.integration.pipeline_checks import DAY

pytestmark = pytest.mark.e2e
DAGS = {"ingest_landing", "retrain_model", "batch_score"}


@pytest.fixture(scope="module")
def pg_run(postgres_server, tmp_path_factory, pipeline_runner):
    home = tmp_path_factory.mktemp("pg-run")
    return pipeline_runner(home, mlflow_tracking_uri=postgres_server.url("mlflow"),
                           airflow_db_url=postgres_server.url("airflow"))


def test_pipeline_completes_with_predictions(pg_run):
    summary = pg_run.summary
    assert summary["tracking_uri"].startswith("postgresql+psycopg2://")
    lake = open_lake(pg_run.settings)
    unlabeled = set()
    for key in list_shards(lake):
        rows = read_shard(lake, key, ["image_id", "label"]).to_pydict()
        unlabeled |= {i for i, lab in zip(rows["image_id"], rows["label"], strict=True) if lab is None}
    predictions = read_partition(lake, DAY)
    assert summary["predictions"]["rows"] == predictions.num_rows == len(unlabeled) > 0
    # Neither store fell back to SQLite in the home folder.
    home = pg_run.settings.home
    assert not (home / "mlflow.db").exists()
    assert not list(home.rglob("airflow.db"))


def test_champion_alias_is_in_the_postgres_registry(pg_run, postgres_server):
    from mlflow import MlflowClient

    settings = pg_run.settings
    mlc = MlflowClient(tracking_uri=postgres_server.url("mlflow"))
    champion = mlc.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == str(pg_run.summary["model"]["champion"])
    assert champion.tags["gate_decision"] == "promoted"
    assert mlc.get_run(champion.run_id).data.metrics["holdout_accuracy"] >= settings.promote_floor
    # The alias row itself, straight from MLflow's tables.
    with postgres_server.connect("mlflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM registered_model_aliases WHERE alias = 'champion'")
        assert cur.fetchall() == [(settings.model_name, int(champion.version))]


def test_airflow_dag_runs_are_recorded_in_postgres(pg_run, postgres_server):
    conn = postgres_server.connect("airflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT dag_id, state FROM dag_run ORDER BY dag_id")
            runs = cur.fetchall()
            cur.execute("SELECT count(*) FROM task_instance WHERE state = 'success'")
            successful_tasks = cur.fetchone()[0]
    finally:
        conn.close()
    assert len(runs) == 3
    assert {dag_id for dag_id, _ in runs} == DAGS
    assert all(state == "success" for _, state in runs), runs
    assert successful_tasks >= 3
