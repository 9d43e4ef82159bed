"""DAG integrity: every file imports cleanly, parses fast, and imports nothing heavy."""

import json
import subprocess
import sys

import pytest

from mlcore.airflow_local import airflow_env
from mlcore.settings import REPO_ROOT, Settings

EXPECTED_DAGS = {"ingest_landing", "retrain_model", "batch_score"}


def parse(home, **settings) -> dict:
    env = airflow_env(Settings(home=home, **settings))
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "dags" / "parse_dags.py"), str(REPO_ROOT / "dags")],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return parse(tmp_path_factory.mktemp("home"))


def dag_files():
    return sorted(p.name for p in (REPO_ROOT / "dags").glob("*.py"))


def test_all_expected_dags_are_defined(report):
    found = {d for name in dag_files() for d in report[name]["dags"]}
    assert found == EXPECTED_DAGS


@pytest.mark.parametrize("name", dag_files())
def test_dag_file_imports_without_errors(report, name):
    assert report[name]["import_errors"] == {}


@pytest.mark.parametrize("name", dag_files())
def test_dag_file_parses_in_under_a_second(report, name):
    assert report[name]["seconds"] < 1.0


@pytest.mark.parametrize("name", dag_files())
def test_every_dag_has_tags_retries_and_timeouts(report, name):
    for dag in report[name]["dags"].values():
        assert "mlcore" in dag["tags"]
        assert all(2 <= r <= 4 for r in dag["retries"])
        assert "None" not in dag["timeouts"]


def test_no_heavy_package_is_imported_at_parse_time(report):
    assert report["_heavy_modules"] == []


def test_training_goes_to_the_configured_queue_and_nothing_else_does(report, tmp_path):
    assert report["retrain_model.py"]["dags"]["retrain_model"]["queues"]["train_and_register"] == "default"
    gpu = parse(tmp_path, train_queue="gpu")
    queues = {task: q for f in dag_files() for d in gpu[f]["dags"].values()
              for task, q in d["queues"].items()}
    assert queues.pop("train_and_register") == "gpu"
    assert set(queues.values()) == {"default"}
