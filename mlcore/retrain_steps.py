"""What the ``retrain_model`` DAG's tasks call: one function per task, over a runtime.

The candidate and the promotion decision cross XCom as the frozen records themselves
(``[core] allowed_deserialization_classes`` admits ``mlcore.*``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlcore.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A registered model version, not yet judged by the gate."""

    version: str
    mlflow_run_id: str
    holdout_accuracy: float  # the served int8 graph's
    fp32_holdout_accuracy: float


@dataclass(frozen=True)
class Promotion:
    """The gate's decision on a candidate, with its written reasons."""

    version: str
    promoted: bool
    reasons: tuple[str, ...]


def enough_new_labels(rt: Runtime, *, run_type: str) -> bool:
    """Scheduled and manual runs always train; a run triggered by new labels only when at
    least ``retrain_min_new_labels`` arrived since the last training."""
    if run_type != "asset_triggered":
        return True
    from mlcore.label_index import labeled_count, labeled_images_at_last_training

    new = labeled_count(rt.settings, rt.lake) - labeled_images_at_last_training(rt.settings, rt.lake)
    log.info("%d new labeled images since the last training (threshold %d)",
             new, rt.settings.retrain_min_new_labels)
    return new >= rt.settings.retrain_min_new_labels


def train_and_register(rt: Runtime, *, dag_run_id: str) -> Candidate:
    """Train, package (ONNX int8, calibrated), evaluate on the holdout, log to MLflow and
    register a version."""
    from mlcore.package import build_package
    from mlcore.registry import log_and_register
    from mlcore.train import build_training_data, train

    data = build_training_data(rt.settings, rt.lake)
    result = train(rt.settings, data)
    package = build_package(rt.settings, result, data)
    _, version, mlflow_run_id = log_and_register(rt.settings, rt.lake, result, package=package,
                                                     dag_run_id=dag_run_id)
    return Candidate(version=version, mlflow_run_id=mlflow_run_id,
                     holdout_accuracy=package.int8.accuracy,
                     fp32_holdout_accuracy=package.fp32.accuracy)


def promote_if_better(rt: Runtime, candidate: Candidate, *, actor: str, at: datetime
                      ) -> Promotion:
    """Make the candidate ``challenger``; move ``champion`` to it only when the gate passes."""
    from mlcore.promotion import decide_and_alias

    decision = decide_and_alias(rt.settings, rt.lake, candidate.version, actor=actor, at=at,
                                mlc=rt.mlflow())
    return Promotion(version=candidate.version, promoted=decision.promote,
                     reasons=tuple(decision.reasons))
