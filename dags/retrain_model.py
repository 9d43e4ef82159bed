"""
### Retrain the classifier

Builds the training set (Fashion-MNIST train split + curated labeled images, minus
anything in the frozen holdout), trains the CNN, fits the confidence temperature on a
validation split, exports it to ONNX and quantizes it to int8 (the served model),
evaluates both on the Fashion-MNIST test split, logs everything to MLflow and registers
the int8 graph as a new version, `challenger`. The `champion` alias moves to it only if
the promotion gate (`mlcore/promotion.py`) passes; the decision and its reasons are tags
on the version and in its model card (`mlcore model show VERSION`).

Runs daily at 02:00 UTC, and whenever ingestion publishes new labeled images.

One DAG per deployed task (`docs/tasks.md`): the default task's is `retrain_model`
(model `MLCORE_MODEL_NAME`), task `t`'s is `retrain_model__t` (model `t-classifier`).
"""

from pathlib import Path

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from mlcore.assets import task_assets
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE, TaskDag, task_dags


def retrain_model(task_dag: TaskDag):
    @dag(
        dag_id=task_dag.dag_id,
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
            assets=[task_assets(task_dag.scope).labeled_images],
        ),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlcore", "training", *task_dag.tags],
        doc_md=__doc__,
    )
    def retrain_model():
        @task.short_circuit
        def enough_new_labels(dag_run=None) -> bool:
            """Scheduled and manual runs always train; a run triggered by new labels only
            when at least `MLCORE_RETRAIN_MIN_NEW_LABELS` arrived since the last training."""
            from mlcore.retrain_steps import enough_new_labels
            from mlcore.runtime import runtime

            return enough_new_labels(runtime(task_dag.task), run_type=dag_run.run_type)

        @task
        def train_and_register(run_id=None):
            """Train, package (ONNX int8, calibrated), evaluate on the holdout, log to MLflow
            and register a version."""
            from mlcore.retrain_steps import train_and_register
            from mlcore.runtime import runtime

            return train_and_register(runtime(task_dag.task), dag_run_id=run_id)

        @task
        def promote_if_better(candidate, logical_date=None):
            """Make it `challenger`; move `champion` only when the gate passes."""
            from mlcore.retrain_steps import promote_if_better
            from mlcore.runtime import runtime

            return promote_if_better(runtime(task_dag.task), candidate,
                                     actor=f"airflow:{task_dag.dag_id}", at=logical_date)

        trained = train_and_register()
        enough_new_labels() >> trained
        promote_if_better(trained)

    return retrain_model()


for _task_dag in task_dags(Path(__file__).stem):
    retrain_model(_task_dag)
