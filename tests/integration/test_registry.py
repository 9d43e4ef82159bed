"""The MLflow registry for real (SQLite backend, artifacts in a temp lake): the served
package, gate, aliases, forced promotion, rollback, audit entries, lineage, model cards,
checksum-verified loading, and scoring from the registry without torch."""

from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from mlcore import audit
from mlcore.calibration import reliability
from mlcore.data_profile import base_profile, profile_images, reference_profile
from mlcore.export import quantize_int8, to_onnx
from mlcore.model import FashionCNN, WeightsTampered
from mlcore.package import ModelPackage, build_package
from mlcore.promotion import PromotionRefused, decide_and_alias, promote, rollback
from mlcore.registry import configure_mlflow, load_pinned, log_and_register, pin_champion
from mlcore.serving import ArtifactTampered, load_served
from mlcore.settings import Settings
from mlcore.storage import LocalLake
from mlcore.task import task_of
from mlcore.train import Evaluation, TrainResult, build_training_data, load_holdout, train
from tests.torch_free import run_without_torch

AT = datetime(2026, 11, 23, 2, tzinfo=UTC)


@pytest.fixture
def env(tmp_path):
    settings = Settings(home=tmp_path, promote_floor=0.5, promote_margin=0.01, max_class_drop=0.05,
                        train_subset=1500, holdout_subset=500, train_epochs=1)
    return settings, LocalLake(tmp_path / "lake")


HOLDOUT = 500


def _package(model, acc: float, per_class: list[float], correct: np.ndarray | None = None,
             holdout: tuple[str, np.ndarray] | None = None) -> ModelPackage:
    """A real exported graph with made-up holdout evidence: right on the first ``acc`` share
    of the holdout images (or on ``correct``); ``holdout``: the hash and labels it was
    evaluated on (default: made-up ones)."""
    if correct is None:
        correct = np.arange(HOLDOUT) < round(acc * HOLDOUT)
    holdout_hash, labels = holdout or ("holdout-hash", np.zeros(HOLDOUT, np.int64))
    predicted = np.where(correct, labels, (labels + 1) % 10)
    ev = Evaluation(acc, acc, per_class, np.eye(10, dtype=np.int64))
    fp32 = to_onnx(model)
    calibration = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    flat = reliability(np.full((HOLDOUT, 10), 0.1), labels)
    profile = profile_images(calibration, np.arange(64) % 10, {"pixel_mean": 0.3, "pixel_std": 0.3})
    profile.drift_baseline = {"rows": HOLDOUT, "class_counts": [HOLDOUT] + [0] * 9,
                              "confidence_counts": [0] * 9 + [HOLDOUT],
                              "intensity_counts": [HOLDOUT] + [0] * 15}
    return ModelPackage(fp32, quantize_int8(fp32, calibration), 1.0, ev, ev, 0.999, labels,
                        predicted, predicted, holdout_hash, flat, flat, len(calibration),
                        profile)


def _register(settings, lake, acc: float, per_class: list[float] | None = None, run="r",
              correct: np.ndarray | None = None, holdout: tuple[str, np.ndarray] | None = None):
    """Register an (untrained) model as if it had scored ``acc`` on the holdout."""
    torch.manual_seed(len(run))
    per_class = per_class or [acc] * 10
    result = TrainResult(
        FashionCNN(), Evaluation(acc, acc, per_class, np.eye(10, dtype=np.int64)),
        [{"epoch": 1, "train_loss": 1.0, "train_accuracy": acc, "validation_accuracy": acc, "seconds": 1}],
        1.0,
        {"curated_shards": [], "train_data_hash": "t" * 64, "holdout_hash": "h" * 64,
         "curated_labeled_images": 40 + len(run)},
    )
    package = _package(result.model, acc, per_class, correct, holdout)
    mlc, version, _ = log_and_register(settings, lake, result, package=package, dag_run_id=run)
    decision = decide_and_alias(settings, lake, version, mlc=mlc, actor=f"airflow:{run}", at=AT)
    return version, decision


def _champion(settings, lake) -> str:
    return str(configure_mlflow(settings, lake).get_model_version_by_alias(settings.model_name, "champion").version)


def test_gate_promotes_better_and_rejects_worse_and_floor(env):
    settings, lake = env
    assert not _register(settings, lake, 0.40, run="below-floor")[1].promote
    v2, d2 = _register(settings, lake, 0.80, run="first-good")
    assert d2.promote and _champion(settings, lake) == v2
    v3, d3 = _register(settings, lake, 0.79, run="worse")
    assert not d3.promote and _champion(settings, lake) == v2
    mlc = configure_mlflow(settings, lake)
    assert str(mlc.get_model_version_by_alias(settings.model_name, "challenger").version) == v3
    assert mlc.get_model_version(settings.model_name, v3).tags["gate_decision"] == "rejected"
    v4, d4 = _register(settings, lake, 0.85, run="better")
    assert d4.promote and _champion(settings, lake) == v4


def test_a_better_accuracy_that_is_only_noise_is_not_promoted(env):
    """+2 points on 500 images clears the margin, but 30 images gained against 20 lost is
    what two retrains differing only by seed give: McNemar's p = 0.2, not promoted."""
    settings, lake = env
    v1, _ = _register(settings, lake, 0.80, run="base")
    noisy = np.arange(HOLDOUT) < 380
    noisy[400:430] = True
    _, decision = _register(settings, lake, 0.82, run="seed-noise", correct=noisy)
    assert not decision.promote and _champion(settings, lake) == v1
    [mcnemar] = [r for r in decision.reasons if r.startswith("McNemar")]
    assert "p = 0.203" in mcnemar and "not significantly better" in mcnemar


def test_per_class_regression_blocks_promotion(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    _, decision = _register(settings, lake, 0.90, [0.95] * 9 + [0.60], run="regresses-class-9")
    assert not decision.promote and any("class 9" in r for r in decision.reasons)


def test_a_champion_evaluated_on_another_holdout_is_re_scored_on_the_candidates(env):
    """A holdout batch arrived since the champion trained, so its evidence pairs with no
    candidate's: the gate scores the champion's served graph on the candidate's holdout and
    judges both on the same images, instead of refusing until someone forces a promotion."""
    settings, lake = env
    v1, _ = _register(settings, lake, 0.80, run="old-holdout")  # evaluated on other images
    holdout = load_holdout(settings, lake, task_of(settings))
    labels = holdout.labels.astype(np.int64)
    predicted = load_served(settings, lake, pin_champion(settings, lake)).predict_proba(
        holdout.images).argmax(axis=1)
    champion_accuracy = float((predicted == labels).mean())  # an untrained model: near chance
    current = (holdout.lineage["holdout_hash"], labels)
    v2, decision = _register(settings, lake, 1.0, run="new-holdout",
                             correct=np.ones(HOLDOUT, bool), holdout=current)
    [note] = [r for r in decision.reasons if "re-scored" in r]
    assert note.startswith(f"champion v{v1} was evaluated on other holdout images")
    assert f"({HOLDOUT} images), int8 accuracy {champion_accuracy:.4f}" in note
    [mcnemar] = [r for r in decision.reasons if r.startswith("McNemar")]
    assert f"{round((1 - champion_accuracy) * HOLDOUT)} images only the candidate" in mcnemar
    assert decision.promote and _champion(settings, lake) == v2
    # A candidate evaluated on a holdout the lake no longer holds still cannot be paired.
    _, stale = _register(settings, lake, 1.0, run="stale-holdout", correct=np.ones(HOLDOUT, bool),
                         holdout=("f" * 64, labels))
    assert not stale.promote and _champion(settings, lake) == v2
    assert any("other holdout images; promote by hand" in r for r in stale.reasons)


def test_forced_promotion_and_rollback_each_leave_one_audit_entry(env):
    settings, lake = env
    v1, _ = _register(settings, lake, 0.80, run="base")
    v2, _ = _register(settings, lake, 0.70, run="worse")
    with pytest.raises(PromotionRefused):
        promote(settings, lake, v2, actor="alice", at=AT)
    promote(settings, lake, v2, actor="alice", at=AT, force=True, reason="hotfix for class 3")
    assert _champion(settings, lake) == v2
    forced = audit.entries(lake, action="force_promote")
    assert [(e.actor, e.reason, e.target) for e in forced] == [
        ("alice", "hotfix for class 3", f"{settings.model_name}/{v2}")]
    assert rollback(settings, lake, actor="bob", at=AT, reason="forced model misbehaves") == v1
    assert _champion(settings, lake) == v1
    rolled = audit.entries(lake, action="rollback")
    assert [(e.actor, e.reason) for e in rolled] == [("bob", "forced model misbehaves")]


def test_rollback_without_history_is_refused(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="only")
    with pytest.raises(PromotionRefused):
        rollback(settings, lake, actor="bob", at=AT, reason="why not")


def _tamper(lake, key: str) -> None:
    data = bytearray(lake.read_bytes(key))
    data[-1] ^= 0xFF
    (lake.root / key).write_bytes(bytes(data))


def test_champion_loads_only_with_matching_checksum(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    pinned = pin_champion(settings, lake)
    assert isinstance(load_pinned(settings, lake, pinned), FashionCNN)
    served = load_served(settings, lake, pinned)
    assert served.sha256 == pinned.onnx_sha256 and served.metadata["precision"] == "int8"
    weights = [k for k in lake.list("mlflow") if k.endswith("model.safetensors")]
    assert len(weights) == 1
    _tamper(lake, weights[0])
    with pytest.raises(WeightsTampered):
        load_pinned(settings, lake, pinned)
    graphs = [k for k in lake.list("mlflow") if k.endswith("model.onnx")]
    assert len(graphs) == 2  # int8 (registered) and fp32
    for key in graphs:
        _tamper(lake, key)
    with pytest.raises(ArtifactTampered):
        load_served(settings, lake, pinned)


def test_drift_references_come_from_the_champions_data_profile(env):
    from mlcore.monitor import drift_baseline
    from mlcore.runtime import runtime_for

    settings, lake = env
    assert reference_profile(settings, lake) == base_profile()  # no champion yet
    _register(settings, lake, 0.80, run="base")
    champion = reference_profile(settings, lake)
    assert champion.images == 64 and champion.normalization == {"pixel_mean": 0.3,
                                                                "pixel_std": 0.3}
    baseline = drift_baseline(runtime_for(settings), pin_champion(settings, lake))
    assert baseline.rows == HOLDOUT and baseline.class_counts == [HOLDOUT] + [0] * 9


def test_registered_version_is_the_int8_onnx_graph_of_the_run(env):
    import mlflow

    settings, lake = env
    v, _ = _register(settings, lake, 0.80, run="base")
    mlc = configure_mlflow(settings, lake)
    mv = mlc.get_model_version(settings.model_name, v)
    info = mlflow.models.get_model_info(f"models:/{settings.model_name}/{v}")
    assert "onnx" in info.flavors and info.metadata["precision"] == "int8"
    run = mlc.get_run(mv.run_id)
    assert mv.tags["onnx_sha256"] == run.data.tags["onnx_sha256"]
    assert run.data.metrics["int8_fp32_agreement"] == pytest.approx(0.999)
    assert "fp32_holdout_accuracy" in run.data.metrics


SCORE_FROM_REGISTRY_WITHOUT_TORCH = """
    import sys
    from datetime import datetime, timedelta, UTC
    from pathlib import Path
    from mlcore.runtime import runtime_for
    from mlcore.score import ScoringWindow, input_shards, pin_run, score_shard
    from mlcore.settings import Settings
    home = Path(sys.argv[1])
    start = datetime(2026, 11, 22, 3, tzinfo=UTC); end = start + timedelta(days=1)
    rt = runtime_for(Settings(home=home))
    run = pin_run(rt, window=ScoringWindow(start, end, start.date()), run_id="no-torch")
    [shard] = input_shards(rt, run)
    part = score_shard(rt, run, shard=shard).part
    print(part.rows)
"""


def test_the_champion_scores_a_shard_in_a_process_that_cannot_import_torch(env):
    from mlcore.data import CuratedRow, write_shards

    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    rng = np.random.default_rng(0)
    rows = [CuratedRow(f"id-{i:03d}", rng.integers(0, 256, 784, dtype=np.uint8).tobytes(),
                       f"landing/b/{i}.png", None) for i in range(40)]
    write_shards(lake, rows, "b", ingested_at=datetime(2026, 11, 22, 4, tzinfo=UTC), shard_rows=1000)
    proc = run_without_torch(SCORE_FROM_REGISTRY_WITHOUT_TORCH, settings.home, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "40"


def test_every_decided_version_has_a_model_card_shown_by_the_cli(env, monkeypatch, capsys):
    from mlcore.cli import main

    settings, lake = env
    v1, _ = _register(settings, lake, 0.80, run="base")
    v2, _ = _register(settings, lake, 0.79, run="worse")
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    assert main(["model", "show", v2]) == 0
    card = capsys.readouterr().out
    assert card.startswith(f"# Model card: {settings.model_name} version {v2}")
    assert "**Gate decision: rejected**" in card and "McNemar exact p" in card
    for section in ("## Training data", "## Code and parameters", "## Holdout accuracy",
                    "## Confusion matrix", "## Calibration", "## Known limitations"):
        assert section in card
    run = configure_mlflow(settings, lake).get_run(
        configure_mlflow(settings, lake).get_model_version(settings.model_name, v2).run_id)
    assert f"code version: `{run.data.tags['code_version']}`" in card
    assert main(["model", "show", v1]) == 0
    assert "**Gate decision: promoted**" in capsys.readouterr().out


def test_run_records_lineage_code_version_and_plots(env):
    settings, lake = env
    _register(settings, lake, 0.80, run="base")
    mlc = configure_mlflow(settings, lake)
    mv = mlc.get_model_version_by_alias(settings.model_name, "champion")
    run = mlc.get_run(mv.run_id)
    assert {"train_data_hash", "holdout_hash", "code_version", "weights_sha256"} <= set(run.data.tags)
    assert len(run.data.tags["code_version"]) == 40
    assert {"onnx_sha256", "onnx_fp32_sha256"} <= set(run.data.tags)
    paths = {a.path for a in mlc.list_artifacts(mv.run_id)}
    assert {"lineage.json", "plots", "evaluation.json", "model_card.md", "weights",
            "data_profile.json"} <= paths
    assert "plots/reliability.png" in {a.path for a in mlc.list_artifacts(mv.run_id, "plots")}


def test_model_trained_on_shuffled_labels_is_never_promoted(env):
    settings, lake = env
    data = build_training_data(settings, lake)
    data.labels = np.random.default_rng(0).permutation(data.labels)
    result = train(settings, data)
    package = build_package(settings, result, data)
    mlc, version, _ = log_and_register(settings, lake, result, package=package, dag_run_id="shuffled")
    assert not decide_and_alias(settings, lake, version, mlc=mlc, actor="airflow:shuffled", at=AT).promote
    assert result.evaluation.accuracy < 0.3


def test_same_seed_and_data_give_the_same_metrics(env):
    settings, lake = env
    data = build_training_data(settings, lake)
    first, second = train(settings, data), train(settings, data)
    assert first.evaluation.accuracy == second.evaluation.accuracy
    assert first.history == [dict(h, seconds=s["seconds"]) for h, s in zip(second.history, first.history, strict=True)]


def test_new_label_count_is_measured_against_the_last_training(env):
    from mlcore.label_index import labeled_images_at_last_training

    settings, lake = env
    assert labeled_images_at_last_training(settings, lake) == 0
    _register(settings, lake, 0.80, run="first")
    _register(settings, lake, 0.81, run="second-run")
    assert labeled_images_at_last_training(settings, lake) == 40 + len("second-run")


def test_reproduce_matches_exactly_and_refuses_changed_data(env):
    from mlcore.data import CuratedRow, load_fashion_mnist, write_shards
    from mlcore.reproduce import DataChanged, reproduce

    settings, lake = env
    images, labels = load_fashion_mnist(settings.fmnist_dir, "train")
    rows = [CuratedRow(f"id-{i}", images[-i - 1].tobytes(), f"landing/b/{i}.png", int(labels[-i - 1]))
            for i in range(50)]
    [shard] = write_shards(lake, rows, "b", ingested_at=AT, shard_rows=settings.shard_rows)
    data = build_training_data(settings, lake)
    result = train(settings, data)
    _, version, _ = log_and_register(settings, lake, result, package=build_package(settings, result, data), dag_run_id="repro")
    report = reproduce(settings, lake, version)
    assert report["identical"], report["metrics"]
    (lake.root / shard).unlink()
    write_shards(lake, rows[:-1], "b", ingested_at=AT, shard_rows=settings.shard_rows)  # same key, one image fewer
    with pytest.raises(DataChanged, match="differs"):
        reproduce(settings, lake, version)


def test_scoring_without_a_champion_fails_with_a_clear_message(env):
    from mlcore.registry import NoChampion

    settings, lake = env
    with pytest.raises(NoChampion, match="run the retrain_model DAG first"):
        pin_champion(settings, lake)
