"""S3Lake against a real S3 protocol peer (``moto_server`` on loopback), not a mock."""

from __future__ import annotations

import uuid

import pytest

from mlcore.settings import Settings
from mlcore.storage import S3Lake, UnsafeKey, lake_client_env, open_lake, parquet_bytes
from tests.lake_contract import assert_landing_is_never_overwritten_or_deleted

pytest_plugins = ["fixtures_servers"]


@pytest.fixture
def s3_lake(s3_server) -> S3Lake:
    """A lake under a fresh prefix of the shared bucket, so tests never see each other."""
    return S3Lake(bucket=s3_server.bucket, prefix=f"unit/{uuid.uuid4().hex}",
                  endpoint_url=s3_server.endpoint, access_key_id="testing",
                  secret_access_key="testing")


def test_write_read_list_exists_delete(s3_lake, s3_server):
    s3_lake.write_bytes("curated/a.parquet", b"a")
    s3_lake.write_bytes("curated/sub/b.parquet", b"b")
    s3_lake.write_bytes("curatedx/c", b"c")
    s3_lake.write_bytes("validation/data_docs/index.html", b"<html></html>")

    assert s3_lake.read_bytes("curated/sub/b.parquet") == b"b"
    assert s3_lake.exists("curated/a.parquet") and not s3_lake.exists("curated/nope")
    assert not s3_lake.exists("curated")  # a "folder" is not an object
    # Listing is by folder: "curated" does not match "curatedx/".
    assert s3_lake.list("curated") == ["curated/a.parquet", "curated/sub/b.parquet"]
    assert s3_lake.list("curated/") == s3_lake.list("curated")
    assert s3_lake.list("") == ["curated/a.parquet", "curated/sub/b.parquet", "curatedx/c",
                                "validation/data_docs/index.html"]
    assert s3_lake.list("missing") == []
    infos = {i.key: i for i in s3_lake.list_info("curated")}
    assert infos["curated/sub/b.parquet"].size == 1 and infos["curated/sub/b.parquet"].version
    assert b"".join(s3_lake.read_chunks("curated/sub/b.parquet")) == b"b"

    s3_lake.write_bytes("curated/a.parquet", b"a2")  # outside landing, overwrite is allowed
    assert s3_lake.read_bytes("curated/a.parquet") == b"a2"
    s3_lake.delete("curated/a.parquet")
    assert not s3_lake.exists("curated/a.parquet")
    with pytest.raises(FileNotFoundError):
        s3_lake.read_bytes("curated/a.parquet")

    # The objects really are in the bucket under the prefix, with a usable content type.
    raw = s3_server.client()
    assert raw.get_object(Bucket=s3_server.bucket,
                          Key=f"{s3_lake.prefix}/curated/sub/b.parquet")["Body"].read() == b"b"
    head = raw.head_object(Bucket=s3_server.bucket,
                           Key=f"{s3_lake.prefix}/validation/data_docs/index.html")
    assert head["ContentType"] == "text/html"
    assert s3_lake.url("curated/x") == f"s3://{s3_server.bucket}/{s3_lake.prefix}/curated/x"


def test_folder_markers_are_not_listed(s3_lake, s3_server):
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{s3_lake.prefix}/curated/",
                                  Body=b"")
    s3_lake.write_bytes("curated/a", b"a")
    assert s3_lake.list("curated") == ["curated/a"]


def test_write_if_absent_refuses_second_writer(s3_lake):
    assert s3_lake.write_if_absent("_state/lock", b"one") is True
    assert s3_lake.write_if_absent("_state/lock", b"two") is False  # moto answers 412
    # The same bytes again (a retried request or task whose first try did land) is success.
    assert s3_lake.write_if_absent("_state/lock", b"one") is True
    assert s3_lake.read_bytes("_state/lock") == b"one"


def test_landing_objects_are_never_overwritten_or_deleted(s3_lake):
    assert_landing_is_never_overwritten_or_deleted(s3_lake)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a\\b", "a//b", "", "a/\x00",
                                 "./a", "a/.", "a/", "landing/b1/"])
def test_unsafe_keys_are_rejected_before_any_request(s3_lake, s3_server, key):
    for call in (lambda: s3_lake.read_bytes(key), lambda: s3_lake.write_bytes(key, b"x"),
                 lambda: s3_lake.write_if_absent(key, b"x"), lambda: s3_lake.exists(key),
                 lambda: s3_lake.delete(key), lambda: s3_lake.url(key)):
        with pytest.raises(UnsafeKey):
            call()
    assert s3_server.keys(s3_lake.prefix) == []


def test_unsafe_prefix_is_rejected(s3_server):
    with pytest.raises(UnsafeKey):
        S3Lake(bucket=s3_server.bucket, prefix="lake/../other", endpoint_url=s3_server.endpoint,
               access_key_id="testing", secret_access_key="testing")


def test_arrow_fs_reads_parquet_written_through_the_lake(s3_lake):
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs
    import pyarrow.parquet as pq

    table = pa.table({"image_id": ["a", "b", "c"], "label": [1, None, 3]})
    s3_lake.write_bytes("curated/images/part-0.parquet", parquet_bytes(table))
    s3_lake.write_bytes("curated/images/part-1.parquet", parquet_bytes(table.slice(0, 1)))

    fs, root = s3_lake.arrow_fs()
    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    assert root == f"{s3_lake.bucket}/{s3_lake.prefix}"
    assert pq.read_table(f"{root}/curated/images/part-0.parquet", filesystem=fs).equals(table)
    dataset = ds.dataset(f"{root}/curated/images", filesystem=fs, format="parquet")
    assert dataset.count_rows() == 4


def test_boto3_client_has_standard_retries_and_timeouts(s3_server):
    lake = S3Lake(bucket=s3_server.bucket, prefix="cfg", endpoint_url=s3_server.endpoint,
                  access_key_id="testing", secret_access_key="testing", max_attempts=7,
                  timeout_s=3.5)
    config = lake.client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == 7  # first try included
    assert config.connect_timeout == 3.5 and config.read_timeout == 3.5
    assert lake.client.meta.endpoint_url == s3_server.endpoint


def test_open_lake_builds_the_s3_lake_from_settings(s3_server, tmp_path):
    settings = Settings(home=tmp_path, lake_uri=f"s3://{s3_server.bucket}/some/lake",
                        s3_endpoint_url=s3_server.endpoint, s3_access_key_id="testing",
                        s3_secret_access_key="testing", s3_max_attempts=5, s3_timeout_s=2.0)
    lake = open_lake(settings)
    assert isinstance(lake, S3Lake)
    assert (lake.bucket, lake.prefix, lake.uri) == (s3_server.bucket, "some/lake",
                                                    f"s3://{s3_server.bucket}/some/lake")
    assert lake.client.meta.config.retries["total_max_attempts"] == 5
    assert lake.client.meta.config.read_timeout == 2.0
    lake.write_bytes("x/y", b"1")
    assert s3_server.keys("some/lake/") == ["some/lake/x/y"]
    # The secret never shows in a repr (dataclasses print every field by default).
    assert "testing" not in repr(lake)


def test_an_airflow_connection_supplies_endpoint_keys_and_region(s3_server, tmp_path,
                                                                   monkeypatch):
    """``MLCORE_S3_CONN_ID`` names an ``aws`` Connection (here from an ``AIRFLOW_CONN_*``
    variable, one of Airflow's secrets backends); it wins over the ``s3_*`` settings."""
    import json

    monkeypatch.setenv("AIRFLOW_CONN_MLCORE_LAKE_TEST", json.dumps({
        "conn_type": "aws", "login": "conn-key-id", "password": "conn-secret",
        "extra": {"endpoint_url": s3_server.endpoint, "region_name": "eu-central-1"}}))
    settings = Settings(home=tmp_path, lake_uri=f"s3://{s3_server.bucket}/from-conn",
                        s3_conn_id="mlcore_lake_test",
                        s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="unused",
                        s3_secret_access_key="unused")
    lake = open_lake(settings)
    assert lake.client.meta.endpoint_url == s3_server.endpoint
    assert lake.client.meta.region_name == "eu-central-1"
    assert lake.client._request_signer._credentials.access_key == "conn-key-id"
    lake.write_bytes("x/y", b"1")  # the endpoint from the Connection really answers
    assert s3_server.keys("from-conn/") == ["from-conn/x/y"]
    assert lake_client_env(settings) == {
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "conn-key-id",
        "AWS_SECRET_ACCESS_KEY": "conn-secret", "AWS_DEFAULT_REGION": "eu-central-1"}
    assert "conn-secret" not in repr(lake)


def test_mlflow_and_airflow_processes_get_the_lake_endpoint_and_keys(s3_server, tmp_path):
    from mlcore.airflow_local import airflow_env

    settings = Settings(home=tmp_path, lake_uri=f"s3://{s3_server.bucket}/lake",
                        s3_endpoint_url=s3_server.endpoint, s3_access_key_id="AKID",
                        s3_secret_access_key="SECRET", s3_region="eu-west-1")
    expected = {"MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "AKID",
                "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert lake_client_env(settings) == expected
    env = airflow_env(settings)
    assert {k: env[k] for k in expected} == expected
    assert env["MLCORE_LAKE_URI"] == f"s3://{s3_server.bucket}/lake"
    # A folder lake adds nothing.
    assert lake_client_env(Settings(home=tmp_path)) == {}


def test_airflow_metadata_db_can_point_at_a_given_url(tmp_path, monkeypatch):
    from mlcore.airflow_local import airflow_env

    settings = Settings(home=tmp_path)
    monkeypatch.delenv("MLCORE_AIRFLOW_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://someone/else")
    default = airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert default == f"sqlite:///{tmp_path.resolve() / 'airflow' / 'airflow.db'}"
    url = "postgresql+psycopg2://airflow@127.0.0.1:5432/airflow"
    assert airflow_env(settings, db_url=url)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    from_setting = Settings(home=tmp_path, airflow_db_url=url)
    assert airflow_env(from_setting)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url


def test_gx_store_backend_keeps_objects_in_the_s3_lake(s3_lake, s3_server):
    from great_expectations.data_context.util import instantiate_class_from_config
    from great_expectations.exceptions import InvalidKeyError

    from mlcore.gx_store import store_backend_config

    config = store_backend_config(s3_lake, "validation/results")
    assert "testing" not in repr(config)  # no secret in GX config
    backend = instantiate_class_from_config(
        config, runtime_environment={},
        config_defaults={"filepath_suffix": ".json", "suppress_store_backend_id": True})
    key = ("suite", "run", "20261122T120000Z", "batch")
    assert not backend.has_key(key)
    with pytest.raises(InvalidKeyError):
        backend.get(key)
    backend.set(key, '{"ok": true}')
    assert backend.get(key) == '{"ok": true}'
    assert backend.has_key(key) and backend.list_keys() == [key]
    assert s3_server.keys(f"{s3_lake.prefix}/validation/results/") == [
        f"{s3_lake.prefix}/validation/results/suite/run/20261122T120000Z/batch.json"]
    assert backend.get_url_for_key(key).startswith(f"s3://{s3_server.bucket}/{s3_lake.prefix}/")
    assert backend.remove_key(key) is True and backend.list_keys() == []
