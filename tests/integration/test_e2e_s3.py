"""The whole pipeline with the lake on an S3 server (``moto_server``): landing, quarantine,
curated shards, predictions, GX results and Data Docs, and MLflow artifacts all live in
the bucket, and the outputs equal a local-folder run of the same profile. The endpoint and
canary keys come from an Airflow Connection, and the keys must leak nowhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mlcore.ingest import BatchReport, ledger_key
from mlcore.registry import configure_mlflow
from mlcore.storage import S3Lake, lake_client_env, open_lake
from tests.integration import pipeline_checks as checks
from tests.integration.pipeline_checks import DAY

pytestmark = pytest.mark.e2e
PREFIX = "lake"


# Canary credentials: moto accepts any keys, so the run really signs with these, and the
# secrets test below looks for them everywhere a careless platform would leak them.
CANARY_KEY_ID = "AKIACANARYKEY7Q3ZX9P"
CANARY_SECRET = "canary-secret-5f0d9c2e-never-print-me"
CONN_ID = "mlcore_lake"


@pytest.fixture(scope="module")
def lake_connection(s3_server):
    """The S3 endpoint and keys as an Airflow Connection (an ``AIRFLOW_CONN_*`` variable, one
    of Airflow's secrets backends), as a deployment supplies them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
            "conn_type": "aws", "login": CANARY_KEY_ID, "password": CANARY_SECRET,
            "extra": {"endpoint_url": s3_server.endpoint, "region_name": s3_server.region}}))
        yield CONN_ID


@pytest.fixture(scope="module")
def s3_run(s3_server, lake_connection, tmp_path_factory, pipeline_runner):
    home = tmp_path_factory.mktemp("s3-run")
    return pipeline_runner(home, lake_uri=f"s3://{s3_server.bucket}/{PREFIX}",
                           s3_conn_id=lake_connection)


@pytest.fixture(scope="module")
def mlflow_s3_env(s3_run):
    """MLflow in this process reads artifacts with its own S3 client: give it the lake's."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in lake_client_env(s3_run.settings).items():
            mp.setenv(key, value)
        yield


def test_the_lake_is_the_bucket(s3_run, s3_server):
    lake = open_lake(s3_run.settings)
    assert isinstance(lake, S3Lake) and s3_run.summary["lake"] == f"s3://{s3_server.bucket}/lake"
    keys = s3_server.keys(f"{PREFIX}/")
    for top in ("landing/", "quarantine/", "curated/", "predictions/", "validation/", "mlflow/",
                "_state/"):
        assert any(k.startswith(f"{PREFIX}/{top}") for k in keys), top
    # Nothing fell back to a local lake or a local MLflow artifact folder.
    home = s3_run.settings.home
    assert not (home / "lake").exists()
    assert not list(home.rglob("mlruns")) and not list(home.rglob("mlartifacts"))


def test_prediction_rows_equal_the_accepted_unlabeled_images(s3_run):
    checks.assert_predictions_are_the_accepted_unlabeled_images(
        open_lake(s3_run.settings), s3_run.summary, DAY)


def test_quarantine_holds_the_bad_files_with_reasons(s3_run):
    checks.assert_bad_files_quarantined_with_reasons(open_lake(s3_run.settings))


def test_partition_commit_is_validated_and_its_files_exist(s3_run):
    checks.assert_partition_commit_is_validated_and_its_files_exist(open_lake(s3_run.settings), DAY)


def test_champion_and_its_artifacts_are_in_the_bucket(s3_run, s3_server, mlflow_s3_env):
    settings = s3_run.settings
    mlc = configure_mlflow(settings, open_lake(settings))
    champion = mlc.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == str(s3_run.summary["model"]["champion"])
    assert champion.tags["gate_decision"] == "promoted"
    run = mlc.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith(f"s3://{s3_server.bucket}/{PREFIX}/mlflow/")
    # Read back through MLflow (its own S3 client) ...
    artifacts = {a.path for a in mlc.list_artifacts(champion.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/training_curves.png",
                         "plots/reliability.png"}
    # ... and straight from the bucket: the plots, the weights and the served graph are there.
    keys = s3_server.keys(f"{PREFIX}/mlflow/")
    assert any(k.endswith(f"{champion.run_id}/artifacts/plots/confusion_matrix.png") for k in keys)
    assert any(k.endswith("/artifacts/weights/model.safetensors") for k in keys)
    assert any(k.endswith("/model.onnx") for k in keys)
    assert mlc.get_model_version_download_uri(settings.model_name, champion.version).startswith(
        f"s3://{s3_server.bucket}/{PREFIX}/mlflow/")


def test_data_docs_and_validation_results_are_in_the_bucket(s3_run, s3_server):
    lake = open_lake(s3_run.settings)
    docs = lake.list("validation/data_docs")
    assert "validation/data_docs/index.html" in docs
    assert any(k.startswith("validation/data_docs/static/") for k in docs)
    results = [k for k in lake.list("validation/results") if k.endswith(".json")]
    assert results
    for batch in s3_run.summary["batches"]:
        report = BatchReport.from_json(lake.read_bytes(ledger_key(batch["batch_id"])))
        assert report.docs_keys and all(k in docs for k in report.docs_keys)
    index = lake.read_bytes("validation/data_docs/index.html").decode()
    for page in (k for k in docs if k.startswith("validation/data_docs/validations/")):
        assert page.removeprefix("validation/data_docs/") in index
    head = s3_server.client().head_object(Bucket=s3_server.bucket,
                                          Key=f"{PREFIX}/validation/data_docs/index.html")
    assert head["ContentType"] == "text/html"


def test_outputs_equal_a_local_lake_run(s3_run, local_run):
    assert s3_run.summary["batches"] == local_run.summary["batches"]
    assert s3_run.summary["predictions"]["rows"] == local_run.summary["predictions"]["rows"]
    checks.assert_same_predictions(open_lake(s3_run.settings), open_lake(local_run.settings), DAY)


def _all_text_under(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*")
                     if p.is_file())


def test_credentials_leak_nowhere(s3_run, s3_server, mlflow_s3_env):
    """The canary keys reached the tasks only through the Connection, and they show up in no
    task log, XCom value, MLflow param or tag, Parquet metadata, lake object or lineage event."""
    import pyarrow.parquet as pq

    settings = s3_run.settings
    assert not settings.s3_access_key_id.get_secret_value()  # nothing but the Connection
    lake = open_lake(settings)
    assert lake.client._request_signer._credentials.access_key == CANARY_KEY_ID
    canaries = (CANARY_KEY_ID, CANARY_SECRET)

    def clean(text: str, where: str) -> None:
        for canary in canaries:
            assert canary not in text, f"{canary[:12]}... leaked into {where}"

    home = settings.home
    logs = _all_text_under(home / "logs") + _all_text_under(home / "airflow")
    assert "[DAG TEST] starting task_id=score_shard" in logs  # the task logs are really here
    clean(logs, "task logs / the Airflow home")

    xcoms = [str(r["value"]) for r in checks.metadata_rows(home, "SELECT value FROM xcom")]
    assert len(xcoms) > 10
    clean("\n".join(xcoms), "XCom")

    mlc = configure_mlflow(settings, lake)
    runs = [r for e in mlc.search_experiments() for r in mlc.search_runs([e.experiment_id])]
    assert runs
    clean(json.dumps([[r.data.params, r.data.tags] for r in runs]), "MLflow run params/tags")
    versions = mlc.search_model_versions(f"name='{settings.model_name}'")
    clean(json.dumps([v.tags for v in versions]), "MLflow model version tags")
    clean((home / "mlflow.db").read_bytes().decode("utf-8", "replace"), "the MLflow DB")

    parquet_keys = [k for k in lake.list("") if k.endswith(".parquet")]
    assert any(k.startswith("predictions/") for k in parquet_keys)
    for key in parquet_keys:
        meta = pq.read_metadata(io.BytesIO(lake.read_bytes(key)))
        kv = {k.decode(errors="replace"): v.decode(errors="replace")
              for k, v in (meta.metadata or {}).items()}
        clean(json.dumps(kv) + meta.created_by, f"Parquet metadata of {key}")
    for key in s3_server.keys(f"{PREFIX}/"):  # every object in the lake, byte for byte
        body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
        clean(body.decode("utf-8", "replace"), key)
    clean(_all_text_under(home / "openlineage"), "OpenLineage events")
