"""MLflow tracking and registry plumbing: log every run, register every model package,
resolve aliases to exact versions.

A registered version is the served model: the int8 ONNX graph (ONNX flavor), with the
fp32 graph, the torch weights (safetensors), the holdout evidence and the model card as
artifacts of its run. Which version becomes ``champion`` is decided in
:mod:`mlcore.promotion`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlcore.model import FashionCNN
    from mlcore.package import ModelPackage
    from mlcore.settings import Settings
    from mlcore.storage import Lake
    from mlcore.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
EVALUATION = "evaluation.json"  # per-image holdout evidence of a run (see mlcore.package)
WEIGHTS = "weights/model.safetensors"
LABELED_IMAGES = "curated_labeled_images"  # run metric: the labeled images it trained on


class NoChampion(LookupError):
    """No model version carries the ``champion`` alias yet: run ``retrain_model`` first."""


@dataclass(frozen=True)
class PinnedModel:
    """One exact model version, resolved once and used for a whole scoring run."""

    name: str
    version: str
    run_id: str
    weights_sha256: str
    onnx_sha256: str = ""  # the served int8 graph; scoring refuses a graph that differs


def configure_mlflow(settings: Settings, lake: Lake, experiment: str | None = None) -> MlflowClient:
    """Point this process's MLflow at the deployment and return a client on it.

    Side effects, process-wide: the lake's credentials go into ``os.environ`` (MLflow's
    artifact client reads them only there), the global tracking URI is set, and
    ``experiment`` (default: the training one) is created if absent, with its artifacts in
    the lake, and made active. Task code reaches it once per process through
    :meth:`mlcore.runtime.Runtime.mlflow`."""
    import os

    import mlflow

    from mlcore.layout import mlflow_artifacts
    from mlcore.storage import lake_client_env

    # MLflow's artifact client reads its S3 endpoint and keys only from the environment.
    os.environ.update(lake_client_env(settings))
    name = experiment or settings.mlflow_experiment
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    with _first_use_lock(settings.resolved_tracking_uri):
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=lake.url(mlflow_artifacts(name)))
    mlflow.set_experiment(name)
    return mlflow.MlflowClient()


@contextlib.contextmanager
def _first_use_lock(tracking_uri: str):
    """Serialize processes that may be the first to open an embedded (SQLite) tracking DB.

    MLflow creates and migrates its tables on first use; two mapped tasks doing that at once
    leave a half-migrated DB (``_alembic_tmp_latest_metrics already exists``) that fails
    every later run. A file lock beside the DB makes one process migrate and the others
    wait; a server backend (PostgreSQL, an MLflow server) migrates once at deployment.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_champion(mlc: MlflowClient, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlc.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def log_and_register(settings: Settings, lake: Lake, result: TrainResult, *,
                     package: ModelPackage, dag_run_id: str):
    """Log params, curves, metrics, plots, lineage and the package; register the int8 graph
    as a new version (ONNX flavor). Returns (client, version, run id)."""
    import mlflow
    import numpy as np
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    from mlcore.model import sha256_hex, weights_bytes
    from mlcore.plots import confusion_figure, curves_figure, reliability_figure
    from mlcore.provenance import code_version
    from mlcore.task import task_of

    mlc = configure_mlflow(settings, lake)
    weights = weights_bytes(result.model)
    checksum = sha256_hex(weights)
    task = task_of(settings)
    params = {
        "epochs": settings.train_epochs, "batch_size": settings.train_batch_size,
        "learning_rate": settings.learning_rate, "seed": settings.seed,
        "weight_decay": settings.weight_decay,
        "augment_shift_pixels": settings.augment_shift_pixels,
        "augment_brightness": settings.augment_brightness,
        "train_precision": settings.train_precision, "model_width": task.model_width,
        "model_first_width": task.model_widths[0], "model_hidden": task.model_hidden,
        "train_subset": settings.train_subset, "holdout_subset": settings.holdout_subset,
        "validation_fraction": settings.validation_fraction,
        "quantize_calibration_images": package.calibration_images,
        "architecture": "FashionCNN", "served_as": "onnx int8 (QDQ, per-channel, static)",
    }
    lineage = result.lineage
    example = np.zeros((2, *task.shape), dtype=np.uint8)
    signature = infer_signature(example, np.full((2, task.num_classes), 0.1, np.float32))
    requirements = [f"onnxruntime=={onnxruntime.__version__}", f"onnx=={onnx.__version__}",
                    f"numpy=={np.__version__}"]
    with mlflow.start_run(run_name=f"retrain {dag_run_id}") as run:
        mlflow.log_params(params)
        for row in result.history:
            # Per-epoch figures are the fp32 torch model's on the validation split, never
            # the holdout: the final (served int8) holdout figures are logged once below.
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.log_metrics(package.metrics())
        mlflow.log_metrics(result.validation)
        mlflow.log_metric("train_seconds", result.seconds)
        mlflow.log_metric(LABELED_IMAGES, lineage.get("curated_labeled_images", 0))
        mlflow.log_figure(confusion_figure(package.int8.confusion, task.classes), "plots/confusion_matrix.png")
        mlflow.log_figure(curves_figure(result.history), "plots/training_curves.png")
        mlflow.log_figure(reliability_figure(package.reliability_before, package.reliability_after),
                          "plots/reliability.png")
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.log_dict(package.evaluation_record(), EVALUATION)
        if package.data_profile is not None:
            from mlcore.data_profile import PROFILE

            mlflow.log_dict(package.data_profile.as_dict(), PROFILE)
        mlflow.log_text(checksum, "weights/model.sha256")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.safetensors").write_bytes(weights)
            mlflow.log_artifact(f"{tmp}/model.safetensors", "weights")
        tags = {
            "code_version": code_version(),
            "train_data_hash": lineage["train_data_hash"],
            "holdout_hash": lineage["holdout_hash"],
            "curated_shard_count": str(len(lineage["curated_shards"])),
            "weights_sha256": checksum,
            "onnx_sha256": package.int8_sha256,
            "onnx_fp32_sha256": package.fp32_sha256,
            "airflow_dag_run_id": dag_run_id,
        }
        mlflow.set_tags(tags)
        metadata = {"classes": list(task.classes), "temperature": package.temperature}
        mlflow.onnx.log_model(onnx.load_from_string(package.fp32_onnx), name="model_fp32",
                              signature=signature, pip_requirements=requirements,
                              metadata={**metadata, "precision": "fp32"},
                              save_as_external_data=False)
        model_info = mlflow.onnx.log_model(
            onnx.load_from_string(package.int8_onnx), name="model", signature=signature,
            pip_requirements=requirements, metadata={**metadata, "precision": "int8"},
            save_as_external_data=False, registered_model_name=settings.model_name,
        )
    version = str(model_info.registered_model_version)
    from mlcore import lineage as ol
    from mlcore.layout import mlflow_model

    ol.report(lake, inputs=lineage["curated_shards"],
              outputs=[mlflow_model(settings.mlflow_experiment, model_info.model_id)])
    for key in ("weights_sha256", "onnx_sha256", "onnx_fp32_sha256"):
        mlc.set_model_version_tag(settings.model_name, version, key, tags[key])
    mlc.set_model_version_tag(settings.model_name, version, "run_id", run.info.run_id)
    mlc.set_model_version_tag(settings.model_name, version, "holdout_accuracy",
                              f"{package.int8.accuracy:.6f}")
    return mlc, version, run.info.run_id


def evaluation_record(mlc: MlflowClient, run_id: str) -> dict | None:
    """The run's per-image holdout evidence, or ``None`` for a run that predates it."""
    from mlflow.exceptions import MlflowException

    try:
        with open(mlc.download_artifacts(run_id, EVALUATION)) as fh:
            return json.load(fh)
    except (MlflowException, OSError):
        return None


def list_versions(settings: Settings, lake: Lake) -> list[dict]:
    """Every version with its holdout accuracy, gate decision and aliases, oldest first."""
    mlc = configure_mlflow(settings, lake)
    aliases: dict[str, list[str]] = {}
    for alias, version in mlc.get_registered_model(settings.model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    return [
        {
            "version": str(mv.version),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "holdout_accuracy": float(mv.tags.get("holdout_accuracy", "nan")),
            "gate_decision": mv.tags.get("gate_decision"),
            "run_id": mv.run_id,
        }
        for mv in sorted(mlc.search_model_versions(f"name='{settings.model_name}'"),
                         key=lambda v: int(v.version))
    ]


def pin_champion(settings: Settings, lake: Lake) -> PinnedModel:
    """Resolve ``champion`` to one exact version (raises :class:`NoChampion` if none)."""
    mlc = configure_mlflow(settings, lake)
    mv = current_champion(mlc, settings.model_name)
    if mv is None:
        raise NoChampion(
            f"model {settings.model_name!r} has no champion; run the retrain_model DAG first"
        )
    return pinned_version(settings, mv)


def pinned_version(settings: Settings, mv) -> PinnedModel:
    """The registry's model version ``mv`` as a :class:`PinnedModel`, checksums included."""
    return PinnedModel(settings.model_name, str(mv.version), mv.run_id, mv.tags["weights_sha256"],
                       mv.tags.get("onnx_sha256", ""))


def pin_challenger(settings: Settings, lake: Lake) -> PinnedModel | None:
    """The ``challenger`` version when it exists and is not also the champion."""
    from mlflow.exceptions import MlflowException

    mlc = configure_mlflow(settings, lake)
    champ = current_champion(mlc, settings.model_name)
    try:
        mv = mlc.get_model_version_by_alias(settings.model_name, CHALLENGER)
    except MlflowException:
        return None
    if champ is not None and str(champ.version) == str(mv.version):
        return None
    return pinned_version(settings, mv)


def load_pinned(settings: Settings, lake: Lake, pinned: PinnedModel) -> FashionCNN:
    """The version's trained torch model (for retraining and analysis; scoring serves the
    ONNX graph, :func:`mlcore.serving.load_served`), after checking the recorded sha256."""
    from mlcore.model import load_weights

    mlc = configure_mlflow(settings, lake)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(mlc.download_artifacts(pinned.run_id, WEIGHTS, tmp)).read_bytes()
    from mlcore.task import task_of

    return load_weights(data, pinned.weights_sha256, task_of(settings))
