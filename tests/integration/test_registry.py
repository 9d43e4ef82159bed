"""The MLflow registry for real (SQLite backend, artifacts in a temp lake): gate, aliases,
forced promotion, rollback, audit entries, lineage, checksum-verified loading."""

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from mlcore import audit
from mlcore.model import FashionCNN, WeightsTampered
from mlcore.registry import (
    PromotionRefused,
    client,
    decide_and_alias,
    load_pinned,
    log_and_register,
    pin_champion,
    promote,
    rollback,
)
from mlcore.settings import Settings
from mlcore.storage import LocalLake
from mlcore.train import Evaluation, TrainResult, build_training_data, train

AT = datetime(2026, 11, 23, 2, tzinfo=UTC)


@pytest.fixture
def env(tmp_path):
    settings = Settings(home=tmp_path, promote_floor=0.5, promote_margin=0.01, max_class_drop=0.05,
                        train_subset=1500, holdout_subset=500, train_epochs=1)
    return settings, LocalLake(tmp_path / "lake")


def _register(settings, lake, acc: float, per_class: list[float] | None = None, run="r"):
    """Register an (untrained) model as if it had scored ``acc`` on the holdout."""
    torch.manual_seed(len(run))
    per_class = per_class or [acc] * 10
    result = TrainResult(
        FashionCNN(), Evaluation(acc, acc, per_class, np.eye(10, dtype=np.int64)),
        [{"epoch": 1, "train_loss": 1.0, "train_accuracy": acc, "holdout_accuracy": acc, "seconds": 1}],
        1.0,
        {"curated_shards": [], "train_data_hash": "t" * 64, "holdout_hash": "h" * 64,
         "curated_labeled_images": 40 + len(run)},
    )
    mlc, version, _ = log_and_register(settings, lake, result, run)
    decision = decide_and_alias(settings, lake, mlc, version, f"airflow:{run}", AT)
    return version, decision


def _champion(settings, lake) -> str:
    return str(client(settings, lake).get_model_version_by_alias(settings.model_name, "champion").version)


def test_gate_promotes_better_and_rejects_worse_and_floor(env):
    settings, lake = env
    assert not _register(settings, lake, 0.40, run="below-floor")[1].promote
    v2, d2 = _register(settings, lake, 0.80, run="first-good")
    assert d2.promote and _champion(settings, lake) == v2
    v3, d3 = _register(settings, lake, 0.79, run="worse")
    assert not d3.promote and _champion(settings, lake) == v2
    mlc = client(settings, lake)
    assert str(mlc.get_model_version_by_alias(settings.model_name, "challenger").version) == v3
    assert mlc.get_model_version(settings.model_name, v3).tags["gate_decision"] == "rejected"
    v4, d4 = _register(settings, lake, 0.85, run="better")
    assert d4.promote and _champion(settings, lake) == v4


def test_per_class_regression_blocks_promotion(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    _, decision = _register(settings, lake, 0.90, [0.95] * 9 + [0.60], run="regresses-class-9")
    assert not decision.promote and any("class 9" in r for r in decision.reasons)


def test_forced_promotion_and_rollback_each_leave_one_audit_entry(env):
    settings, lake = env
    v1, _ = _register(settings, lake, 0.80, run="base")
    v2, _ = _register(settings, lake, 0.70, run="worse")
    with pytest.raises(PromotionRefused):
        promote(settings, lake, v2, "alice", AT)
    promote(settings, lake, v2, "alice", AT, force=True, reason="hotfix for class 3")
    assert _champion(settings, lake) == v2
    forced = audit.entries(lake, "force_promote")
    assert [(e.actor, e.reason, e.target) for e in forced] == [
        ("alice", "hotfix for class 3", f"{settings.model_name}/{v2}")]
    assert rollback(settings, lake, "bob", AT, "forced model misbehaves") == v1
    assert _champion(settings, lake) == v1
    rolled = audit.entries(lake, "rollback")
    assert [(e.actor, e.reason) for e in rolled] == [("bob", "forced model misbehaves")]


def test_rollback_without_history_is_refused(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="only")
    with pytest.raises(PromotionRefused):
        rollback(settings, lake, "bob", AT, "why not")


def test_champion_loads_only_with_matching_checksum(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    pinned = pin_champion(settings, lake)
    assert isinstance(load_pinned(settings, lake, pinned), FashionCNN)
    weights = [k for k in lake.list("mlflow") if k.endswith("model.safetensors")]
    assert len(weights) == 1
    data = bytearray(lake.read_bytes(weights[0]))
    data[-1] ^= 0xFF
    (lake.root / weights[0]).write_bytes(bytes(data))
    with pytest.raises(WeightsTampered):
        load_pinned(settings, lake, pinned)


def test_run_records_lineage_code_version_and_plots(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    mlc = client(settings, lake)
    mv = mlc.get_model_version_by_alias(settings.model_name, "champion")
    run = mlc.get_run(mv.run_id)
    assert {"train_data_hash", "holdout_hash", "code_version", "weights_sha256"} <= set(run.data.tags)
    assert len(run.data.tags["code_version"]) == 40
    paths = {a.path for a in mlc.list_artifacts(mv.run_id)}
    assert {"lineage.json", "plots"} <= paths


def test_model_trained_on_shuffled_labels_is_never_promoted(env):
    settings, lake = env
    data = build_training_data(settings, lake)
    data.labels = np.random.default_rng(0).permutation(data.labels)
    result = train(settings, data)
    mlc, version, _ = log_and_register(settings, lake, result, "shuffled")
    assert not decide_and_alias(settings, lake, mlc, version, "airflow:shuffled", AT).promote
    assert result.evaluation.accuracy < 0.3


def test_same_seed_and_data_give_the_same_metrics(env):
    settings, lake = env
    data = build_training_data(settings, lake)
    first, second = train(settings, data), train(settings, data)
    assert first.evaluation.accuracy == second.evaluation.accuracy
    assert first.history == [dict(h, seconds=s["seconds"]) for h, s in zip(second.history, first.history, strict=True)]


def test_new_label_count_is_measured_against_the_last_training(env):
    from mlcore.registry import labeled_images_at_last_training

    settings, lake = env
    assert labeled_images_at_last_training(settings, lake) == 0
    _register(settings, lake, 0.80, run="first")
    _register(settings, lake, 0.81, run="second-run")
    assert labeled_images_at_last_training(settings, lake) == 40 + len("second-run")


def test_reproduce_matches_exactly_and_refuses_changed_data(env):
    from mlcore.data import CuratedRow, load_fashion_mnist, write_shards
    from mlcore.registry import DataChanged, reproduce

    settings, lake = env
    images, labels = load_fashion_mnist(settings.fmnist_dir, "train")
    rows = [CuratedRow(f"id-{i}", images[-i - 1].tobytes(), f"landing/b/{i}.png", int(labels[-i - 1]))
            for i in range(50)]
    [shard] = write_shards(lake, rows, "b", AT, settings.shard_rows)
    result = train(settings, build_training_data(settings, lake))
    _, version, _ = log_and_register(settings, lake, result, "repro")
    report = reproduce(settings, lake, version)
    assert report["identical"], report["metrics"]
    (lake.root / shard).unlink()
    write_shards(lake, rows[:-1], "b", AT, settings.shard_rows)  # same key, one image fewer
    with pytest.raises(DataChanged, match="differs"):
        reproduce(settings, lake, version)


def test_scoring_without_a_champion_fails_with_a_clear_message(env):
    from mlcore.registry import NoChampion

    settings, lake = env
    with pytest.raises(NoChampion, match="run the retrain_model DAG first"):
        pin_champion(settings, lake)
