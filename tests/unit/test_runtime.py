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
