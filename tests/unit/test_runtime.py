"""The runtime: one set of clients per task and process, MLflow configured once."""

import mlflow

from mlcore.runtime import runtime, runtime_for


def test_runtime_is_built_once_per_process():
    assert runtime() is runtime()
    assert runtime().task.name == runtime().settings.task


def test_mlflow_is_configured_once_and_keeps_artifacts_in_the_lake(settings):
    rt = runtime_for(settings)
    first = rt.mlflow()
    assert rt.mlflow() is first
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment.artifact_location == rt.lake.url(f"mlflow/{settings.mlflow_experiment}")
    # Switching to another experiment and back re-activates the training one.
    rt.mlflow("other-experiment")
    rt.mlflow()
    assert mlflow.get_experiment(mlflow.get_experiment_by_name(
        settings.mlflow_experiment).experiment_id).name == settings.mlflow_experiment
    with mlflow.start_run() as run:
        pass
    assert first.get_run(run.info.run_id).info.experiment_id == experiment.experiment_id


def test_runtime_of_a_task_carries_its_scoped_settings(two_tasks_dir, tmp_path, monkeypatch):
    import pytest

    from mlcore import runtime as runtime_module
    from mlcore.settings import get_settings
    from mlcore.task import UnknownTask

    monkeypatch.setenv("MLCORE_HOME", str(tmp_path))
    monkeypatch.setenv("MLCORE_TASKS_DIR", str(two_tasks_dir))
    get_settings.cache_clear()
    runtime_module._runtime.cache_clear()
    try:
        rgb = runtime("tiny-rgb")
        assert rgb is runtime("tiny-rgb") and rgb.task.name == rgb.settings.task == "tiny-rgb"
        assert rgb.settings.model_name == "tiny-rgb-classifier"
        assert rgb.lake.root == (tmp_path / "lake" / "tasks" / "tiny-rgb").resolve()
        assert runtime() is runtime("fashion-mnist") and runtime().settings.task_scope == ""
        with pytest.raises(UnknownTask):
            runtime("nope")
    finally:
        get_settings.cache_clear()
        runtime_module._runtime.cache_clear()


def test_a_runtime_given_a_lake_serves_that_lake_and_otherwise_opens_the_settings_one(settings,
                                                                                    tmp_path):
    from mlcore.storage import LocalLake

    given = LocalLake(tmp_path / "elsewhere")
    assert runtime_for(settings, lake=given).lake is given
    opened = runtime_for(settings).lake
    assert opened is not given and opened.root == LocalLake(settings.home / "lake").root
