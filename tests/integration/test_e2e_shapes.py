"""The ``shapes`` task end to end through real Airflow, as the second task of a deployment
whose default task is Fashion-MNIST (``docs/tasks.md``): generated landing batches (labeled
training batches, a batch marked holdout, an unlabeled one) in ``tasks/shapes/landing/`` ->
ingest_landing__shapes -> retrain_model__shapes -> batch_score__shapes, with the demo's test
profile for shapes; nothing reaches the default task's tables."""

import json
import time

import pytest
from rich.console import Console

from mlcore.data import list_shards, read_shard
from mlcore.ingest import BatchReport, ledger_key
from mlcore.layout import CURATED_HOLDOUT
from mlcore.predictions import read_partition
from mlcore.registry import configure_mlflow
from mlcore.storage import open_lake
from mlcore.task import TASKS_DIR, load_task_spec
from tests.integration import pipeline_checks as checks
from tests.integration.pipeline_checks import DAY, PER_BATCH

pytestmark = pytest.mark.e2e

SPEC = load_task_spec(TASKS_DIR / "shapes.toml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pipeline run of the shapes task, scoped under ``tasks/shapes/`` of the lake."""
    from mlcore.demo import demo_settings, run_pipeline

    settings = demo_settings("test", "shapes", home=tmp_path_factory.mktemp("shapes-run"))
    assert settings.task_scope == "shapes" and settings.deployment.task == "fashion-mnist"
    started = time.perf_counter()
    summary = run_pipeline(settings, DAY, Console(quiet=True), per_batch=PER_BATCH)
    print(f"shapes pipeline: {time.perf_counter() - started:.0f} s")
    return settings, summary


def test_every_generated_batch_is_ingested_and_the_holdout_is_curated_apart(run):
    settings, summary = run
    lake = open_lake(settings)
    by_id = {b["batch_id"]: b for b in summary["batches"]}
    assert set(by_id) == {"shapes-train-01", "shapes-train-02", "shapes-holdout-01",
                          "shapes-unlabeled-01"}
    assert all(b["status"] == "ingested" and b["quarantined"] == 0 for b in by_id.values())
    assert by_id["shapes-holdout-01"]["holdout"] and not by_id["shapes-train-01"]["holdout"]
    holdout = BatchReport.from_json(lake.read_bytes(ledger_key("shapes-holdout-01")))
    assert holdout.shards == [] and holdout.holdout_shards == list_shards(lake, CURATED_HOLDOUT)
    # Before the first champion there is nothing to judge drift against: skipped, on record.
    assert holdout.drift_check.startswith("skipped: task shapes has no base data")


def test_champion_reaches_the_documented_holdout_accuracy(run):
    settings, summary = run
    mlc = configure_mlflow(settings, open_lake(settings))
    champion = mlc.get_model_version_by_alias(settings.model_name, "champion")
    metrics = mlc.get_run(champion.run_id).data.metrics
    assert metrics["holdout_accuracy"] >= 0.9  # the served int8 graph on the holdout batch
    assert summary["model"]["champion_holdout_accuracy"] >= 0.9
    assert metrics["int8_fp32_agreement"] >= settings.min_agreement
    assert {f"class_{i}_accuracy" for i in range(SPEC.num_classes)} <= set(metrics)
    assert "class_5_accuracy" not in metrics


def test_lineage_records_the_holdout_batches_and_the_normalization_of_the_training_data(run):
    from mlcore.data_profile import PROFILE, base_profile

    settings, _ = run
    lake = open_lake(settings)
    mlc = configure_mlflow(settings, lake)
    champion = mlc.get_model_version_by_alias(settings.model_name, "champion")
    with open(mlc.download_artifacts(champion.run_id, "lineage.json")) as fh:
        lineage = json.load(fh)
    assert lineage["base_train_images"] == 0
    assert lineage["holdout_shards"] == list_shards(lake, CURATED_HOLDOUT)
    assert lineage["holdout_images"] == 500 and len(lineage["holdout_hash"]) == 64
    assert mlc.get_run(champion.run_id).data.tags["holdout_hash"] == lineage["holdout_hash"]
    with open(mlc.download_artifacts(champion.run_id, PROFILE)) as fh:
        profile = json.load(fh)
    assert profile["normalization"] == lineage["normalization"] != base_profile().normalization
    assert profile["image"] == {"height": 32, "width": 32, "mode": "RGB"}
    assert len(profile["class_counts"]) == SPEC.num_classes


def test_predictions_are_the_unlabeled_batch_with_the_tasks_class_count(run):
    settings, summary = run
    lake = open_lake(settings)
    checks.assert_predictions_are_the_accepted_unlabeled_images(lake, summary, DAY)
    table = read_partition(lake, DAY)
    assert set(table.column("batch_id").to_pylist()) == {"shapes-unlabeled-01"}
    assert {len(p) for p in table.column("probabilities").to_pylist()} == {SPEC.num_classes}
    assert set(table.column("predicted_label").to_pylist()) <= set(SPEC.classes)
    # The holdout is never scored.
    holdout_ids = set()
    for key in list_shards(lake, CURATED_HOLDOUT):
        holdout_ids |= set(read_shard(lake, key, ["image_id"]).column("image_id").to_pylist())
    assert holdout_ids and not holdout_ids & set(table.column("image_id").to_pylist())
    checks.assert_partition_commit_is_validated_and_its_files_exist(lake, DAY)


def test_data_docs_exist_for_every_batch(run):
    settings, summary = run
    lake = open_lake(settings)
    for b in summary["batches"]:
        report = BatchReport.from_json(lake.read_bytes(ledger_key(b["batch_id"])))
        assert report.docs_keys and all(lake.exists(k) for k in report.docs_keys)
    assert any(k.endswith("index.html") for k in lake.list("validation/data_docs"))


def test_the_shapes_run_stays_in_its_own_prefix_model_and_dags(run):
    """Nothing of the shapes run reaches the default task's lake keys or model."""
    settings, summary = run
    root = open_lake(settings.deployment)
    assert open_lake(settings).uri.endswith("/tasks/shapes")
    outside = [k for k in root.list("") if not k.startswith("tasks/shapes/")
               and not k.startswith("mlflow/")]
    assert not [k for k in outside if k.startswith(("landing/", "curated/", "predictions/"))]
    assert settings.model_name == "shapes-classifier" == summary["model"]["name"]
    mlc = configure_mlflow(settings.deployment, root)
    assert not mlc.search_model_versions(f"name='{settings.deployment.model_name}'")
