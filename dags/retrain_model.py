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
"""

from pathlib import Path

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from mlcore.assets import LABELED_IMAGES
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id=Path(__file__).stem,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=[LABELED_IMAGES]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlcore", "training"],
    doc_md=__doc__,
)
def retrain_model():
    @task.short_circuit
    def enough_new_labels(dag_run=None) -> bool:
        """Scheduled and manual runs always train; a run triggered by new labels only when
        at least `MLCORE_RETRAIN_MIN_NEW_LABELS` arrived since the last training."""
        if dag_run.run_type != "asset_triggered":
            return True
        import logging

        from mlcore.label_index import labeled_count, labeled_images_at_last_training
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        lake = open_lake(settings)
        new = labeled_count(settings, lake) - labeled_images_at_last_training(settings, lake)
        logging.getLogger(__name__).info(
            "%d new labeled images since the last training (threshold %d)",
            new, settings.retrain_min_new_labels)
        return new >= settings.retrain_min_new_labels

    @task
    def train_and_register(run_id=None) -> dict:
        """Train, package (ONNX int8, calibrated), evaluate on the holdout, log to MLflow
        and register a version."""
        from mlcore.package import build_package
        from mlcore.registry import log_and_register
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake
        from mlcore.train import build_training_data, train

        settings = get_settings()
        lake = open_lake(settings)
        data = build_training_data(settings, lake)
        result = train(settings, data)
        package = build_package(settings, result, data)
        _, version, mlflow_run_id = log_and_register(settings, lake, result, package=package,
                                                     dag_run_id=run_id)
        return {"version": version, "mlflow_run_id": mlflow_run_id,
                "holdout_accuracy": package.int8.accuracy,
                "fp32_holdout_accuracy": package.fp32.accuracy}

    @task
    def promote_if_better(candidate: dict, dag_run=None, logical_date=None) -> dict:
        """Make it `challenger`; move `champion` only when the gate passes."""
        from mlcore.promotion import decide_and_alias
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        lake = open_lake(settings)
        decision = decide_and_alias(settings, lake, candidate["version"],
                                    actor="airflow:retrain_model", at=logical_date)
        return {**candidate, "promoted": decision.promote, "reasons": decision.reasons}

    trained = train_and_register()
    enough_new_labels() >> trained
    promote_if_better(trained)


retrain_model()
