"""The predictions Delta table itself: concurrent writers (local folder and a real S3 protocol
peer), time travel, vacuum, the CLI. Rows are synthetic: no model is involved here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from mlcore.predictions import (
    PartitionIncomplete,
    committed_days,
    history,
    prediction_schema,
    read_partition,
    replace_partition,
    vacuum,
    write_part,
)
from mlcore.storage import LocalLake, S3Lake, table_location

pytest_plugins = ["fixtures_servers"]

DAY = date(2026, 11, 22)
ROWS = 40


def rows(run_id: str, n: int = ROWS, version: str = "1") -> pa.Table:
    """``n`` prediction rows with the documented schema, ids ``img-000``…"""
    probs = [[0.1] * 10] * n
    return pa.Table.from_pydict({
        "image_id": [f"img-{i:03d}" for i in range(n)],
        "source_key": [f"landing/b/{i}.png" for i in range(n)],
        "batch_id": ["b"] * n,
        "predicted_class": pa.array([0] * n, pa.int32()),
        "predicted_label": ["T-shirt/top"] * n,
        "confidence": pa.array([0.1] * n, pa.float32()),
        "probabilities": pa.FixedSizeListArray.from_arrays(
            pa.array([p for row in probs for p in row], pa.float32()), 10),
        "model_name": ["fashion-classifier"] * n,
        "model_version": [version] * n,
        "model_run_id": ["mlflow-run"] * n,
        "scored_at": pa.array([datetime(2026, 11, 23, 3, tzinfo=UTC)] * n,
                              pa.timestamp("us", tz="UTC")),
        "dag_run_id": [run_id] * n,
    }, schema=prediction_schema())


def publish(lake, run_id: str, day: date = DAY, shards: int = 2, version: str = "1"):
    """One run: a data file per shard, then the partition replaced by one commit."""
    table = rows(run_id, version=version)
    size = table.num_rows // shards
    parts = [write_part(lake, table.slice(i * size, size), day=day, dag_run_id=run_id,
                        shard=f"curated/s{i}.parquet") for i in range(shards)]
    return replace_partition(lake, day, parts, metadata={"dag_run_id": run_id})


def assert_whole_and_single_run(lake, day: date = DAY) -> str:
    table = read_partition(lake, day)
    ids = table.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS  # none lost, none doubled
    (run,) = set(table.column("dag_run_id").to_pylist())  # one run's rows, never a mix
    return run


def test_time_travel_by_version_and_by_time(lake):
    first = publish(lake, "run-1")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    second = publish(lake, "run-2", version="2")
    assert assert_whole_and_single_run(lake) == "run-2"
    old = read_partition(lake, DAY, as_of=first.version)
    assert set(old.column("dag_run_id").to_pylist()) == {"run-1"}
    assert read_partition(lake, DAY, as_of=between).equals(old)
    assert second.version == first.version + 1
    with pytest.raises(PartitionIncomplete):  # before the first commit of the partition
        read_partition(lake, DAY, as_of=0)
    assert [h["dag_run_id"] for h in history(lake)[:2]] == ["run-2", "run-1"]
    assert committed_days(lake) == [DAY]


def test_vacuum_keeps_what_snapshots_in_the_retention_need(lake):
    """Superseded files and files of a killed run go only when older than the retention."""
    first = publish(lake, "run-1")
    publish(lake, "run-2")
    orphan = write_part(lake, rows("killed"), day=DAY, dag_run_id="killed", shard="s")
    assert vacuum(lake, retention_hours=168) == []
    assert set(read_partition(lake, DAY, as_of=first.version).column("dag_run_id")
               .to_pylist()) == {"run-1"}  # time travel inside the retention still works
    deleted = vacuum(lake, retention_hours=0)
    assert len(deleted) == 3 and any(orphan.key.endswith(d) for d in deleted)
    assert not lake.exists(orphan.key)
    assert assert_whole_and_single_run(lake) == "run-2"
    with pytest.raises(Exception):  # noqa: B017 - the superseded files are gone, as asked
        read_partition(lake, DAY, as_of=first.version)


def test_nothing_lands_outside_the_partition_folder(lake):
    publish(lake, "manual__2026-11-22T03:00:00+00:00")
    data = [k for k in lake.list("predictions") if "/_delta_log/" not in k]
    assert data and all(k.startswith("predictions/dt=2026-11-22/part-manual__2026-11-22T03-00-00")
                        for k in data)


def test_cli_reads_now_and_as_of(lake, settings, monkeypatch, capsys):
    from mlcore.cli import main

    first = publish(lake, "run-1")
    publish(lake, "run-2")
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    monkeypatch.setenv("MLCORE_LAKE_URI", str(lake.root))
    assert main(["predictions", "read", "--date", str(DAY), "--json"]) == 0
    assert {r["dag_run_id"] for r in json.loads(capsys.readouterr().out)} == {"run-2"}
    assert main(["predictions", "read", "--date", str(DAY), "--json",
                 "--as-of", str(first.version)]) == 0
    assert {r["dag_run_id"] for r in json.loads(capsys.readouterr().out)} == {"run-1"}
    assert main(["predictions", "history"]) == 0
    assert "run-2" in capsys.readouterr().out
    assert main(["predictions", "read", "--date", "2026-11-01"]) == 1  # never committed


# --- Concurrent writers -------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mlcore.settings import Settings
    from mlcore.storage import open_lake
    from tests.unit.test_predictions import DAY, publish
    name, rounds, sync = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    lake = open_lake(Settings())
    for r in range(rounds):
        (sync / f"ready-{r}-{name}").touch()
        while not (sync / f"go-{r}").exists():
            time.sleep(0.002)
        commit = publish(lake, f"{name}-{r}")
        print(json.dumps({"round": r, "version": commit.version}), flush=True)
""")


def race(lake_env: dict, tmp_path: Path, rounds: int, check) -> list[list[int]]:
    """Two processes, each a run for the same date, start their commits together ``rounds``
    times; ``check`` reads the table after every round."""
    sync = tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, **lake_env, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, name, str(rounds), str(sync)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    try:
        versions = []
        for r in range(rounds):
            deadline = time.monotonic() + 120
            while not all((sync / f"ready-{r}-{n}").exists() for n in "ab"):
                assert time.monotonic() < deadline, [p.stderr.read() for p in procs if p.poll()]
                time.sleep(0.01)
            (sync / f"go-{r}").touch()
            done = [json.loads(p.stdout.readline() or "null") for p in procs]
            assert all(done), [p.stderr.read() for p in procs]  # both commits resolved
            versions.append(sorted(d["version"] for d in done))
            assert check() in {f"a-{r}", f"b-{r}"}
        return versions
    finally:
        for p in procs:
            p.wait(timeout=60)


def test_two_runs_committing_one_date_together_serialize_local(tmp_path):
    lake = LocalLake(tmp_path / "lake")
    versions = race({"MLCORE_HOME": str(tmp_path / "home"), "MLCORE_LAKE_URI": str(lake.root)},
                    tmp_path, 10, lambda: assert_whole_and_single_run(lake))
    # Every round added exactly two commits: the loser retried on the winner's snapshot.
    assert [v[1] - v[0] for v in versions] == [1] * 10
    assert len(history(lake)) == 1 + 2 * 10


@pytest.mark.parametrize("server", ["s3_server", "seaweedfs"], ids=["moto", "seaweedfs"])
def test_two_runs_committing_one_date_together_serialize_on_s3(tmp_path, request, server):
    """On moto_server and on a real S3 server (SeaweedFS): the conditional PUT of the log
    entry is the only coordination, no lock service."""
    s3_server = request.getfixturevalue(server)
    prefix = f"unit/{uuid.uuid4().hex}"
    lake = S3Lake(bucket=s3_server.bucket, prefix=prefix, endpoint_url=s3_server.endpoint,
                  access_key_id="testing", secret_access_key="testing")
    env = {"MLCORE_HOME": str(tmp_path / "home"),
           "MLCORE_LAKE_URI": f"s3://{s3_server.bucket}/{prefix}",
           "MLCORE_S3_ENDPOINT_URL": s3_server.endpoint, "MLCORE_S3_ACCESS_KEY_ID": "testing",
           "MLCORE_S3_SECRET_ACCESS_KEY": "testing"}
    versions = race(env, tmp_path, 10, lambda: assert_whole_and_single_run(lake))
    # Both commits of every round landed, one after the other. Under load a round on moto
    # sometimes takes three versions (seen about 1 run in 3 at load 8; likely a late answer
    # to a conditional PUT that the client retries as a new commit, the same partition
    # replace again): harmless to readers, which ``race`` checks after every round.
    flat = [v for pair in versions for v in pair]
    assert all(v[1] > v[0] for v in versions) and flat == sorted(set(flat))
    # The commits are plain objects in the bucket: one log entry per version, no lock table.
    log = [k for k in s3_server.keys(f"{prefix}/predictions/_delta_log/") if k.endswith(".json")]
    assert len(log) == 1 + 2 * 10


def test_s3_table_location_keeps_keys_out_of_the_repr(s3_server):
    lake = S3Lake(bucket=s3_server.bucket, prefix="p", endpoint_url=s3_server.endpoint,
                  access_key_id="testing", secret_access_key="canary-secret")
    loc = table_location(lake, "predictions")
    assert loc.uri == f"s3://{s3_server.bucket}/p/predictions"
    assert loc.storage_options["AWS_ALLOW_HTTP"] == "true"
    assert "canary-secret" not in repr(loc)
    # No locking provider and no unsafe rename: commits rely on the conditional PUT.
    assert not {k for k in loc.storage_options if "LOCK" in k or "UNSAFE" in k}


def test_a_day_with_rows_then_another_reads_each_alone(lake):
    publish(lake, "r1")
    publish(lake, "r2", day=DAY + timedelta(days=1))
    assert assert_whole_and_single_run(lake, DAY) == "r1"
    assert assert_whole_and_single_run(lake, DAY + timedelta(days=1)) == "r2"
    assert committed_days(lake) == [DAY, DAY + timedelta(days=1)]


def test_a_manifest_partition_is_migrated_once(lake, settings, monkeypatch, capsys):
    """The lake of the manifest protocol: part files plus ``_manifest.json`` and its
    generation record. ``mlcore predictions migrate`` commits it, then removes the manifests."""
    import hashlib

    from mlcore.cli import main
    from mlcore.storage import parquet_bytes

    old = rows("scheduled__old")  # fixed_size_list probabilities, as the old files had them
    data = parquet_bytes(old)
    prefix = "predictions/dt=2026-11-22"
    lake.write_bytes(f"{prefix}/part-0123456789abcdef.parquet", data)
    manifest = {"partition": prefix, "generation": 1, "rows": ROWS, "dag_run_id": "scheduled__old",
                "files": [{"key": f"{prefix}/part-0123456789abcdef.parquet", "rows": ROWS,
                           "sha256": hashlib.sha256(data).hexdigest()}],
                "model": {"name": "fashion-classifier", "version": "1"}}
    lake.write_bytes(f"{prefix}/_manifest.json", json.dumps(manifest).encode())
    lake.write_bytes(f"{prefix}/_manifests/000001.json", json.dumps(manifest).encode())
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    monkeypatch.setenv("MLCORE_LAKE_URI", str(lake.root))

    assert main(["predictions", "migrate"]) == 0
    assert "predictions/dt=2026-11-22: 40 rows committed" in capsys.readouterr().out
    assert read_partition(lake, DAY).equals(old)
    assert not [k for k in lake.list(prefix) if "_manifest" in k]
    assert main(["predictions", "migrate"]) == 0 and len(history(lake)) == 2  # once
    vacuum(lake, retention_hours=0)
    assert not lake.exists(f"{prefix}/part-0123456789abcdef.parquet")
    assert read_partition(lake, DAY).equals(old)


def test_a_table_of_many_nights_opens_from_a_recent_checkpoint(lake):
    """Issue 15: opening the table replays fewer than CHECKPOINT_EVERY commits, not every night."""
    from mlcore.predictions import CHECKPOINT_EVERY

    nights = 2 * CHECKPOINT_EVERY + 3
    for n in range(nights):  # version 0 creates the table; night n commits version n + 1
        publish(lake, f"r{n}", day=DAY + timedelta(days=n), shards=1)
    last = json.loads(lake.read_bytes("predictions/_delta_log/_last_checkpoint"))
    assert last["version"] == nights - nights % CHECKPOINT_EVERY
    assert nights - last["version"] < CHECKPOINT_EVERY
    assert committed_days(lake) == [DAY + timedelta(days=n) for n in range(nights)]
    assert assert_whole_and_single_run(lake, DAY) == "r0"
