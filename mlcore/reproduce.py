"""Retrain a registered version from its recorded lineage and parameters, and say whether
the figures come out the same (``mlcore model reproduce``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mlcore.provenance import code_version
from mlcore.registry import configure_mlflow

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake


class DataChanged(RuntimeError):
    """The recorded training data can no longer be rebuilt identically."""


def _architecture(settings: Settings, lake: Lake, mv, params: dict
                  ) -> tuple[tuple[int, int, int], int]:
    """The version's block channels and head's hidden units: recorded, or (versions registered
    before the width was a parameter) read from its weights, since the task spec may have
    changed since. Versions registered before ``model_first_width`` had a uniform first
    block, and before ``model_hidden`` a linear head."""
    if "model_width" in params:
        from mlcore.task import block_widths

        first = params.get("model_first_width")
        return (block_widths(int(params["model_width"]), int(first) if first else None),
                int(params.get("model_hidden", 0)))
    from mlcore.model import hidden_of, widths_of
    from mlcore.registry import _pinned, load_pinned

    state = load_pinned(settings, lake, _pinned(settings, mv)).state_dict()
    return widths_of(state), hidden_of(state)


def reproduce(settings: Settings, lake: Lake, version: str) -> dict:
    """Retrain a version from its recorded lineage and parameters; report metric differences."""
    from mlcore.train import build_training_data, train

    mlc = configure_mlflow(settings, lake)
    mv = mlc.get_model_version(settings.model_name, version)
    run = mlc.get_run(mv.run_id)
    with open(mlc.download_artifacts(mv.run_id, "lineage.json")) as fh:
        lineage = json.load(fh)
    p = run.data.params
    recorded = settings.model_copy(update={
        "train_epochs": int(p["epochs"]), "train_batch_size": int(p["batch_size"]),
        "learning_rate": float(p["learning_rate"]), "seed": int(p["seed"]),
        "train_subset": int(p["train_subset"]), "holdout_subset": int(p["holdout_subset"]),
        # Versions registered before these were parameters trained without shift or
        # brightness augmentation, with this weight decay, in fp32.
        "weight_decay": float(p.get("weight_decay", 5e-4)),
        "augment_shift_pixels": int(p.get("augment_shift_pixels", 0)),
        "augment_brightness": float(p.get("augment_brightness", 0.0)),
        "train_precision": p.get("train_precision", "fp32"),
    })
    missing = [s for s in lineage["curated_shards"] if not lake.exists(s)]
    if missing:
        raise DataChanged(f"version {version} trained on shards that are gone: {missing}")
    data = build_training_data(recorded, lake, lineage["curated_shards"])
    if data.lineage["train_data_hash"] != lineage["train_data_hash"]:
        raise DataChanged(
            f"training data hash {data.lineage['train_data_hash'][:12]}… differs from the "
            f"recorded {lineage['train_data_hash'][:12]}…: refusing to reproduce version {version}")
    widths, hidden = _architecture(settings, lake, mv, p)
    result = train(recorded, data, widths=widths, hidden=hidden)
    then = run.data.metrics
    now = result.evaluation.metrics("fp32_")  # the torch model's figures: no export needed
    return {
        "version": version, "run_id": mv.run_id, "code_version_then": run.data.tags.get("code_version"),
        "code_version_now": code_version(),
        "metrics": {k: {"registered": then.get(k), "reproduced": v, "diff": v - then.get(k, float("nan"))}
                    for k, v in now.items()},
        "identical": all(then.get(k) == v for k, v in now.items()),
    }
