"""MLflow tracking and registry: log every run, register every model, and let only a
better one become ``champion``.

Aliases, never stages. MLflow keeps no alias history, so each promotion records the
champion it replaced as the tag ``previous_champion`` on the new champion: that is what
``rollback`` follows.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlcore import audit
from mlcore.settings import REPO_ROOT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlcore.model import FashionCNN
    from mlcore.settings import Settings
    from mlcore.storage import Lake
    from mlcore.train import TrainResult

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class NoChampion(LookupError):
    """No model version carries the ``champion`` alias yet: run ``retrain_model`` first."""


@dataclass(frozen=True)
class PinnedModel:
    """One exact model version, resolved once and used for a whole scoring run."""

    name: str
    version: str
    run_id: str
    weights_sha256: str


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]


def code_version() -> str:
    """The git commit of the code that is running ("unknown" outside a checkout)."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def client(settings: Settings, lake: Lake, experiment: str | None = None) -> MlflowClient:
    """An MLflow client on the configured tracking server, with the experiment (default: the
    training one) in place and active. Its artifacts live in the lake, under ``mlflow/``."""
    import os

    import mlflow

    from mlcore.storage import lake_client_env

    # MLflow's artifact client reads its S3 endpoint and keys only from the environment.
    os.environ.update(lake_client_env(settings))
    name = experiment or settings.mlflow_experiment
    mlflow.set_tracking_uri(settings.resolved_tracking_uri)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=lake.url(f"mlflow/{name}"))
    mlflow.set_experiment(name)
    return mlflow.MlflowClient()


def gate(candidate: dict[str, float], champion: dict[str, float] | None, settings: Settings,
         num_classes: int = 10) -> GateDecision:
    """The promotion rule. Every reason is written down, pass or fail."""
    acc = candidate["holdout_accuracy"]
    reasons = []
    ok = acc >= settings.promote_floor
    reasons.append(f"accuracy {acc:.4f} {'>=' if ok else '<'} floor {settings.promote_floor:.4f}")
    if champion is not None:
        need = champion["holdout_accuracy"] + settings.promote_margin
        beat = acc >= need
        ok &= beat
        reasons.append(f"accuracy {acc:.4f} {'>=' if beat else '<'} champion "
                       f"{champion['holdout_accuracy']:.4f} + margin {settings.promote_margin:.4f}")
        for i in range(num_classes):
            drop = champion[f"class_{i}_accuracy"] - candidate[f"class_{i}_accuracy"]
            if drop > settings.max_class_drop:
                ok = False
                reasons.append(f"class {i} accuracy drops {drop:.4f} > {settings.max_class_drop:.4f}")
    else:
        reasons.append("no champion yet")
    return GateDecision(ok, reasons)


def version_metrics(mlc: MlflowClient, run_id: str) -> dict[str, float]:
    return dict(mlc.get_run(run_id).data.metrics)


def current_champion(mlc: MlflowClient, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlc.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def log_and_register(settings: Settings, lake: Lake, result: TrainResult, dag_run_id: str):
    """Log params, curves, metrics, plots, lineage and the model; register a new version."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from mlcore.data import CLASSES
    from mlcore.model import predict_proba, sha256_hex, weights_bytes
    from mlcore.train import confusion_figure, curves_figure

    mlc = client(settings, lake)
    weights = weights_bytes(result.model)
    checksum = sha256_hex(weights)
    params = {
        "epochs": settings.train_epochs, "batch_size": settings.train_batch_size,
        "learning_rate": settings.learning_rate, "seed": settings.seed,
        "train_subset": settings.train_subset, "holdout_subset": settings.holdout_subset,
        "architecture": "FashionCNN",
    }
    lineage = result.lineage
    with mlflow.start_run(run_name=f"retrain {dag_run_id}") as run:
        mlflow.log_params(params)
        for row in result.history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.log_metrics(result.evaluation.metrics())
        mlflow.log_metric("train_seconds", result.seconds)
        mlflow.log_metric("curated_labeled_images", lineage.get("curated_labeled_images", 0))
        mlflow.log_figure(confusion_figure(result.evaluation.confusion), "plots/confusion_matrix.png")
        mlflow.log_figure(curves_figure(result.history), "plots/training_curves.png")
        mlflow.log_dict(lineage, "lineage.json")
        mlflow.set_tags({
            "code_version": code_version(),
            "train_data_hash": lineage["train_data_hash"],
            "holdout_hash": lineage["holdout_hash"],
            "curated_shard_count": str(len(lineage["curated_shards"])),
            "weights_sha256": checksum,
            "airflow_dag_run_id": dag_run_id,
        })
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.safetensors").write_bytes(weights)
            (Path(tmp) / "model.sha256").write_text(checksum)
            example = np.zeros((2, 28, 28), dtype=np.uint8)
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"weights": f"{tmp}/model.safetensors", "checksum": f"{tmp}/model.sha256"},
                signature=infer_signature(example, predict_proba(result.model, example)),
                input_example=example,
                pip_requirements=str(REPO_ROOT / "requirements.txt"),
                registered_model_name=settings.model_name,
                metadata={"classes": list(CLASSES)},
            )
    version = str(model_info.registered_model_version)
    from mlcore import lineage as ol

    ol.report(lake, inputs=lineage["curated_shards"],
              outputs=[f"mlflow/{settings.mlflow_experiment}/models/{model_info.model_id}"])
    for key, value in {"weights_sha256": checksum, "run_id": run.info.run_id,
                       "holdout_accuracy": f"{result.evaluation.accuracy:.6f}"}.items():
        mlc.set_model_version_tag(settings.model_name, version, key, value)
    return mlc, version, run.info.run_id


class PromotionRefused(RuntimeError):
    """The gate said no, or there is nothing to roll back to."""


def decide_and_alias(settings: Settings, lake: Lake, mlc: MlflowClient, version: str,
                     actor: str, at: datetime) -> GateDecision:
    """Make the new version ``challenger``; move ``champion`` to it only if the gate passes."""
    name = settings.model_name
    mlc.set_registered_model_alias(name, CHALLENGER, version)
    decision = _gate_version(settings, mlc, version)
    _record_decision(mlc, name, version, decision)
    if decision.promote:
        _move_champion(settings, lake, mlc, version, actor, at, "promote", "; ".join(decision.reasons))
    else:
        audit.record(lake, actor, at, "gate_reject", f"{name}/{version}", "; ".join(decision.reasons))
    log.info("version %s %s: %s", version, "promoted" if decision.promote else "not promoted",
             "; ".join(decision.reasons))
    return decision


def promote(settings: Settings, lake: Lake, version: str, actor: str, at: datetime,
            force: bool = False, reason: str = "") -> GateDecision:
    """Promote by hand: through the gate, or with ``force`` (needs a reason; audited)."""
    mlc = client(settings, lake)
    name = settings.model_name
    reason = reason.strip()
    champ = current_champion(mlc, name)
    if champ is not None and str(champ.version) == str(version):
        # Forcing it again would only write a second, misleading audit entry.
        raise PromotionRefused(f"version {version} is already champion: nothing to promote")
    decision = _gate_version(settings, mlc, version)
    if force:
        if not reason:
            raise PromotionRefused("a forced promotion needs a non-blank --reason")
        mlc.set_model_version_tag(name, version, "forced_by", actor)
        mlc.set_model_version_tag(name, version, "forced_reason", reason)
        _move_champion(settings, lake, mlc, version, actor, at, "force_promote", reason,
                       gate=decision.reasons)
        return GateDecision(True, [f"forced by {actor}: {reason}", *decision.reasons])
    _record_decision(mlc, name, version, decision)
    if not decision.promote:
        raise PromotionRefused(f"version {version} does not pass the gate: "
                               + "; ".join(decision.reasons))
    _move_champion(settings, lake, mlc, version, actor, at, "promote",
                   reason or "; ".join(decision.reasons))
    return decision


def rollback(settings: Settings, lake: Lake, actor: str, at: datetime, reason: str) -> str:
    """Move ``champion`` back to the version it replaced; returns that version."""
    mlc = client(settings, lake)
    name = settings.model_name
    champ = current_champion(mlc, name)
    previous = champ.tags.get("previous_champion") if champ else None
    if not previous:
        raise PromotionRefused("no previous champion recorded: nothing to roll back to")
    mlc.set_registered_model_alias(name, CHAMPION, previous)
    mlc.set_model_version_tag(name, champ.version, "rolled_back_by", actor)
    audit.record(lake, actor, at, "rollback", f"{name}/{previous}", reason,
                 from_version=str(champ.version))
    log.info("champion rolled back from %s to %s by %s", champ.version, previous, actor)
    return previous


def list_versions(settings: Settings, lake: Lake) -> list[dict]:
    """Every version with its holdout accuracy, gate decision and aliases."""
    mlc = client(settings, lake)
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


def _gate_version(settings: Settings, mlc: MlflowClient, version: str) -> GateDecision:
    candidate = mlc.get_model_version(settings.model_name, version)
    champ = current_champion(mlc, settings.model_name)
    if champ is not None and str(champ.version) == str(version):
        return GateDecision(False, [f"version {version} is already champion"])
    return gate(version_metrics(mlc, candidate.run_id),
                version_metrics(mlc, champ.run_id) if champ else None, settings)


def _record_decision(mlc: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    mlc.set_model_version_tag(name, version, "gate_decision",
                              "promoted" if decision.promote else "rejected")
    mlc.set_model_version_tag(name, version, "gate_reasons", json.dumps(decision.reasons))


def _move_champion(settings: Settings, lake: Lake, mlc: MlflowClient, version: str, actor: str,
                   at: datetime, action: str, reason: str, **details) -> None:
    name = settings.model_name
    previous = current_champion(mlc, name)
    if previous is not None and str(previous.version) != str(version):
        mlc.set_model_version_tag(name, version, "previous_champion", str(previous.version))
    mlc.set_registered_model_alias(name, CHAMPION, version)
    audit.record(lake, actor, at, action, f"{name}/{version}", reason,
                 previous_champion=str(previous.version) if previous else None, **details)


class DataChanged(RuntimeError):
    """The recorded training data can no longer be rebuilt identically."""


def reproduce(settings: Settings, lake: Lake, version: str) -> dict:
    """Retrain a version from its recorded lineage and parameters; report metric differences."""
    from mlcore.train import build_training_data, train

    mlc = client(settings, lake)
    mv = mlc.get_model_version(settings.model_name, version)
    run = mlc.get_run(mv.run_id)
    with open(mlc.download_artifacts(mv.run_id, "lineage.json")) as fh:
        lineage = json.load(fh)
    p = run.data.params
    recorded = settings.model_copy(update={
        "train_epochs": int(p["epochs"]), "train_batch_size": int(p["batch_size"]),
        "learning_rate": float(p["learning_rate"]), "seed": int(p["seed"]),
        "train_subset": int(p["train_subset"]), "holdout_subset": int(p["holdout_subset"]),
    })
    missing = [s for s in lineage["curated_shards"] if not lake.exists(s)]
    if missing:
        raise DataChanged(f"version {version} trained on shards that are gone: {missing}")
    data = build_training_data(recorded, lake, lineage["curated_shards"])
    if data.lineage["train_data_hash"] != lineage["train_data_hash"]:
        raise DataChanged(
            f"training data hash {data.lineage['train_data_hash'][:12]}… differs from the "
            f"recorded {lineage['train_data_hash'][:12]}…: refusing to reproduce version {version}")
    result = train(recorded, data)
    then = run.data.metrics
    now = result.evaluation.metrics()
    return {
        "version": version, "run_id": mv.run_id, "code_version_then": run.data.tags.get("code_version"),
        "code_version_now": code_version(),
        "metrics": {k: {"registered": then.get(k), "reproduced": v, "diff": v - then.get(k, float("nan"))}
                    for k, v in now.items()},
        "identical": all(then.get(k) == v for k, v in now.items()),
    }


def labeled_images_at_last_training(settings: Settings, lake: Lake) -> int:
    """The curated labeled image count the most recent training run used (0 if none)."""
    import mlflow

    client(settings, lake)
    runs = mlflow.search_runs(experiment_names=[settings.mlflow_experiment],
                              order_by=["start_time DESC"], max_results=1, output_format="list")
    return int(runs[0].data.metrics.get("curated_labeled_images", 0)) if runs else 0


def pin_champion(settings: Settings, lake: Lake) -> PinnedModel:
    """Resolve ``champion`` to one exact version (raises :class:`NoChampion` if none)."""
    mlc = client(settings, lake)
    mv = current_champion(mlc, settings.model_name)
    if mv is None:
        raise NoChampion(
            f"model {settings.model_name!r} has no champion; run the retrain_model DAG first"
        )
    return PinnedModel(settings.model_name, str(mv.version), mv.run_id, mv.tags["weights_sha256"])


def pin_challenger(settings: Settings, lake: Lake) -> PinnedModel | None:
    """The ``challenger`` version when it exists and is not also the champion."""
    from mlflow.exceptions import MlflowException

    mlc = client(settings, lake)
    champ = current_champion(mlc, settings.model_name)
    try:
        mv = mlc.get_model_version_by_alias(settings.model_name, CHALLENGER)
    except MlflowException:
        return None
    if champ is not None and str(champ.version) == str(mv.version):
        return None
    return PinnedModel(settings.model_name, str(mv.version), mv.run_id, mv.tags["weights_sha256"])


def load_pinned(settings: Settings, lake: Lake, pinned: PinnedModel) -> FashionCNN:
    """Download the version's safetensors and load them after checking the recorded sha256."""
    import mlflow

    from mlcore.model import load_weights

    client(settings, lake)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{pinned.name}/{pinned.version}", dst_path=tmp
        )
        data = (Path(local) / "artifacts" / "model.safetensors").read_bytes()
    return load_weights(data, pinned.weights_sha256)
