"""DAG integrity: every file imports cleanly, parses fast, and imports nothing heavy."""

import json
import subprocess
import sys

import pytest

from mlcore.airflow_local import airflow_env
from mlcore.settings import REPO_ROOT, Settings
from tests.conftest import TINY_RGB

# The default task keeps the plain ids; every other deployed task's carry its name.
EXPECTED_DAGS = {"ingest_landing", "retrain_model", "batch_score",
                 "ingest_landing__tiny-rgb", "retrain_model__tiny-rgb", "batch_score__tiny-rgb"}


def parse(home, **settings) -> dict:
    env = airflow_env(Settings(home=home, **settings))
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "dags" / "parse_dags.py"), str(REPO_ROOT / "dags")],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    """Two deployed tasks: the committed Fashion-MNIST spec and a tiny RGB one."""
    import shutil

    from mlcore.task import TASKS_DIR

    folder = tmp_path_factory.mktemp("tasks")
    shutil.copy(TASKS_DIR / "fashion-mnist.toml", folder)
    (folder / "tiny-rgb.toml").write_text(TINY_RGB)
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory, tasks_dir):
    return parse(tmp_path_factory.mktemp("home"), tasks_dir=tasks_dir)


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
    assert report[name]["cpu_seconds"] < 1.0


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
    queues = {(dag_id, task): q for f in dag_files() for dag_id, d in gpu[f]["dags"].items()
              for task, q in d["queues"].items()}
    training = {k: queues.pop(k) for k in list(queues) if k[1] == "train_and_register"}
    # Every deployed task's training (the committed specs: fashion-mnist and shapes).
    assert {k[0] for k in training} == {"retrain_model", "retrain_model__shapes"}
    assert set(training.values()) == {"gpu"}
    assert set(queues.values()) == {"default"}


def test_only_the_committed_specs_give_only_the_plain_dags(tmp_path):
    plain = parse(tmp_path)
    assert {d for name in dag_files() for d in plain[name]["dags"]} >= {
        "ingest_landing", "retrain_model", "batch_score"}
    assert not any("__" in d and "tiny-rgb" in d for name in dag_files() for d in plain[name]["dags"])


def test_each_task_has_its_own_assets_and_the_default_keeps_its_names(report):
    ingest = report["ingest_landing.py"]["dags"]
    assert ingest["ingest_landing"]["outlets"]["publish"] == ["curated_images", "labeled_images"]
    assert ingest["ingest_landing__tiny-rgb"]["outlets"]["publish"] == [
        "curated_images__tiny-rgb", "labeled_images__tiny-rgb"]
    retrain = report["retrain_model.py"]["dags"]
    assert retrain["retrain_model"]["schedule_assets"] == ["labeled_images"]
    assert retrain["retrain_model__tiny-rgb"]["schedule_assets"] == ["labeled_images__tiny-rgb"]
    score = report["batch_score.py"]["dags"]
    assert score["batch_score"]["outlets"]["commit"] == ["predictions"]
    assert score["batch_score__tiny-rgb"]["outlets"]["commit"] == ["predictions__tiny-rgb"]
    assert "task:tiny-rgb" in score["batch_score__tiny-rgb"]["tags"]


def test_a_spec_named_unlike_its_file_is_an_import_error_naming_the_file(tmp_path, tasks_dir):
    import shutil

    bad = tmp_path / "bad-tasks"
    shutil.copytree(tasks_dir, bad)
    (bad / "rgb.toml").write_text(TINY_RGB)  # name = "tiny-rgb"
    errors = parse(tmp_path / "home", tasks_dir=bad)["ingest_landing.py"]["import_errors"]
    assert errors and "rgb.toml" in "".join(errors.values())
