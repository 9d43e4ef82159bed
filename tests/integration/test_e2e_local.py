"""The whole pipeline through real Airflow (``airflow dags test``), real GX, real PyTorch,
real MLflow (SQLite) and real Parquet on a local-folder lake, with the test profile."""

import json
from datetime import date

import pytest
from rich.console import Console

from mlcore.data import list_shards
from mlcore.demo import run_pipeline
from mlcore.predictions import read_partition, read_rows
from mlcore.registry import configure_mlflow
from mlcore.storage import open_lake
from tests.integration import pipeline_checks as checks
from tests.integration.pipeline_checks import DAY, PER_BATCH

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(local_run):
    """The shared local-lake run (tests/integration/conftest.py), then an idempotent rerun."""
    settings, first = local_run.settings, local_run.summary
    shards_after_first = list_shards(open_lake(settings))
    second = run_pipeline(settings, DAY, Console(quiet=True), per_batch=PER_BATCH)
    return settings, first, second, shards_after_first


@pytest.fixture(scope="module")
def rescore(run):
    """A manual batch_score run with params: rescore everything into another day's partition."""
    from mlcore.airflow_local import airflow_env, dags_test

    settings = run[0]
    dags_test(airflow_env(settings), "batch_score", "2026-11-25T03:00:00+00:00",
              conf={"date": "2026-11-30", "rescore_all": True})
    return settings


def test_prediction_rows_equal_the_accepted_unlabeled_images(run):
    settings, first, _, _ = run
    checks.assert_predictions_are_the_accepted_unlabeled_images(open_lake(settings), first, DAY)


def test_quarantine_holds_the_bad_files_with_reasons(run):
    checks.assert_bad_files_quarantined_with_reasons(open_lake(run[0]))


def test_mlflow_has_a_registered_champion_with_metrics_and_plots(run):
    settings, first, second, _ = run
    mlc = configure_mlflow(settings, open_lake(settings))
    champion = mlc.get_model_version_by_alias(settings.model_name, "champion")
    # The rerun trains an identical model: it is registered but not promoted (no better).
    assert str(champion.version) == str(first["model"]["champion"]) == str(second["model"]["champion"])
    challenger = mlc.get_model_version_by_alias(settings.model_name, "challenger")
    assert challenger.tags["gate_decision"] == "rejected" and challenger.version != champion.version
    metrics = mlc.get_run(champion.run_id).data.metrics
    assert metrics["holdout_accuracy"] >= settings.promote_floor  # the served int8 graph's
    assert metrics["int8_fp32_agreement"] >= settings.min_agreement
    artifacts = {a.path for a in mlc.list_artifacts(champion.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/training_curves.png",
                         "plots/reliability.png"}
    assert champion.tags["gate_decision"] == "promoted"
    # The identical retrain is refused by the paired test, with its p-value as the reason.
    assert any(r.startswith("McNemar exact p = 1 ") for r in json.loads(challenger.tags["gate_reasons"]))


def test_partition_commit_is_validated_and_its_files_exist(run):
    from mlcore.predictions import history

    lake = open_lake(run[0])
    commit = checks.assert_partition_commit_is_validated_and_its_files_exist(lake, DAY)
    # The first run's commit, then the rerun's, which superseded it: the history has both.
    ours = [h["version"] for h in history(lake) if h.get("partition") == f"dt={DAY}"]
    assert len(ours) == 2 and ours[0] == commit.version


def test_rerun_ingests_nothing_twice_and_keeps_the_partition_whole(run):
    settings, first, second, shards_after_first = run
    assert list_shards(open_lake(settings)) == shards_after_first
    assert second["batches"] == first["batches"]
    assert second["predictions"]["rows"] == first["predictions"]["rows"]
    assert second["model"]["versions"] == first["model"]["versions"] + 1


def test_trace_of_a_prediction_row_shows_every_link(run):
    from mlcore.trace import resolve, trace

    settings = run[0]
    lake = open_lake(settings)
    table = read_partition(lake, DAY)
    # A row of a batch whose every file passed (mixed-bad-01's suite run failed on its others).
    i = table.column("batch_id").to_pylist().index("unlabeled-01")
    row = table.slice(i, 1).to_pylist()[0]
    chain = trace(settings, lake, resolve(lake, str(DAY), i))
    assert chain["image_id"] == row["image_id"]
    assert chain["landing"]["key"] == row["source_key"]
    assert chain["landing"]["batch_id"] == row["batch_id"]
    assert [v["suite"] for v in chain["validation"]] == ["file_profiles", "batch_summary"]
    assert all(v["success"] for v in chain["validation"])
    assert chain["curated"]["shard"].startswith(f"curated/images/dt={DAY}/batch={row['batch_id']}/")
    [pred] = chain["predictions"]
    assert (pred["predicted_label"], pred["model_version"]) == (row["predicted_label"],
                                                              row["model_version"])
    [model] = chain["models"]
    assert model["run_id"] == row["model_run_id"] and len(model["code_version"]) == 40
    assert model["gate_decision"] == "promoted" and model["seed"] == str(settings.seed)
    assert [a["action"] for a in model["audit"]] == ["promote"]
    assert len(model["curated_shards"]) == 2  # the two labeled batches


def test_trace_names_the_missing_link_and_exits_non_zero(run, tmp_path, monkeypatch, capsys):
    import shutil

    from mlcore.cli import main
    from mlcore.settings import get_settings

    settings = run[0]
    copy = tmp_path / "lake"
    shutil.copytree(settings.home / "lake", copy)  # break a copy, not the shared lake
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    monkeypatch.setenv("MLCORE_LAKE_URI", str(copy))
    get_settings.cache_clear()
    row = read_partition(open_lake(settings), DAY).slice(0, 1).to_pylist()[0]
    shard = next(k for k in list_shards(open_lake(settings)) if f"batch={row['batch_id']}/" in k)
    (copy / shard).unlink()
    assert main(["trace", row["image_id"]]) == 2
    assert "broken link: curated shard" in capsys.readouterr().err
    assert main(["trace", "0" * 64]) == 2
    assert "broken link: image" in capsys.readouterr().err


def test_audit_trail_has_no_duplicates_after_rerunning_every_dag(run):
    from mlcore.audit import entries

    found = entries(open_lake(run[0]))  # both retrains share one simulated logical date
    assert sorted((e.action, e.target) for e in found) == [
        ("gate_reject", "fashion-classifier/2"), ("promote", "fashion-classifier/1")]


def test_challenger_is_scored_in_shadow_and_agreement_recorded(run):
    from mlcore.predictions import SHADOW
    from mlcore.shadow import SHADOW_TABLE

    settings, first, _, _ = run
    lake = open_lake(settings)
    [shadow] = read_rows(lake, SHADOW_TABLE, day=DAY).to_pylist()
    assert (shadow["champion_version"], shadow["challenger_version"]) == ("1", "2")
    assert shadow["rows"] == first["predictions"]["rows"]
    assert shadow["agreement"] == 1.0  # v2 retrained on the same data with the same seed
    assert read_partition(lake, DAY, table=SHADOW).column("model_version").unique().to_pylist() == [
        "2"]


def test_drift_figures_are_recorded_in_the_lake_and_mlflow(run):
    import mlflow

    from mlcore.monitor import DRIFT_TABLE

    settings = run[0]
    [row] = read_rows(open_lake(settings), DRIFT_TABLE, day=DAY).to_pylist()
    assert {"class_psi", "confidence_js", "intensity_psi"} <= set(row)
    configure_mlflow(settings, open_lake(settings))
    runs = mlflow.search_runs(experiment_names=[f"{settings.mlflow_experiment}-monitoring"],
                              output_format="list")
    assert runs and "intensity_psi" in runs[0].data.metrics
    assert runs[0].info.artifact_uri.startswith(open_lake(settings).url("mlflow"))  # in the lake


def test_openlineage_events_name_the_lake_datasets_each_task_reads_and_writes(run):

    settings = run[0]
    events = [json.loads(line) for line in
              (settings.home / "openlineage" / "events.jsonl").read_text().splitlines()]
    done = {}
    for e in events:
        if e["eventType"] == "COMPLETE":
            io = done.setdefault(e["job"]["name"], (set(), set()))
            io[0].update(d["name"] for d in e["inputs"])
            io[1].update(d["name"] for d in e["outputs"])
    ins, outs = done["ingest_landing.ingest"]
    assert any(n.endswith("/landing/unlabeled-01") for n in ins)
    assert any("/curated/images/" in n for n in outs)
    ins, outs = done["retrain_model.train_and_register"]
    assert any("batch%3Dlabeled-01" in n or "batch=labeled-01" in n for n in ins)
    assert any("/models/" in n for n in outs)
    assert any(n.endswith("/predictions/dt=2026-11-22") or n.endswith("/predictions/dt%3D2026-11-22")
               for n in done["batch_score.commit"][1])


def test_manual_params_rescore_everything_into_the_chosen_partition_and_are_audited(rescore):
    from mlcore.audit import entries

    lake = open_lake(rescore)
    everything = read_partition(lake, date(2026, 11, 30))
    assert set(everything.column("image_id").to_pylist()) == set(
        read_partition(lake, DAY).column("image_id").to_pylist())
    # Defect 2 of the manifest protocol: rescore_all wrote under dt=1970-01-01.
    data = {k.split("/")[1] for k in lake.list("predictions") if "/_delta_log/" not in k}
    assert data == {"dt=2026-11-22", "dt=2026-11-30"}
    [trigger] = entries(lake, action="manual_trigger")
    assert trigger.target == "batch_score/2026-11-30"
    assert trigger.details["params"] == {"date": "2026-11-30", "rescore_all": True}
