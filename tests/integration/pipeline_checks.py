"""Assertions about a finished pipeline run, shared by the local-lake and S3 end-to-end tests."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from mlcore.data import list_shards, read_shard
from mlcore.ingest import BatchReport, ledger_key
from mlcore.predictions import PREDICTIONS, partition_commit, read_partition

DAY = date(2026, 11, 22)  # the day the end-to-end runs simulate
PER_BATCH = 12  # images per seeded landing batch in those runs
BAD_BATCH_REASONS = {"truncated", "unsupported_format", "decompression_bomb",
                     "intensity_out_of_range"}


def assert_predictions_are_the_accepted_unlabeled_images(lake, summary: dict, day: date) -> None:
    unlabeled = set()
    for key in list_shards(lake):
        rows = read_shard(lake, key, ["image_id", "label"]).to_pydict()
        unlabeled |= {i for i, lab in zip(rows["image_id"], rows["label"], strict=True) if lab is None}
    accepted_unlabeled = sum(b["accepted"] - b["labeled"] for b in summary["batches"])
    predictions = read_partition(lake, day)
    assert predictions.num_rows == accepted_unlabeled == len(unlabeled) > 0
    assert set(predictions.column("image_id").to_pylist()) == unlabeled


def assert_bad_files_quarantined_with_reasons(lake, batch_id: str = "mixed-bad-01") -> None:
    report = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
    reasons = json.loads(lake.read_bytes(f"quarantine/{batch_id}/_reasons.json"))
    assert {r["reason"] for r in reasons} == BAD_BATCH_REASONS
    for r in reasons:  # byte-for-byte copies of the landing objects
        name = r["key"].split("/")[-1]
        assert r["copy"] == f"quarantine/{batch_id}/files/{name}"
        assert lake.read_bytes(r["copy"]) == lake.read_bytes(r["key"])
    assert report.accepted + report.quarantined + report.duplicates == report.files


def assert_partition_commit_is_validated_and_its_files_exist(lake, day: date):
    """The snapshot's files of ``day`` all exist, lie in the partition's folder, and the
    commit that made them records a passed GX validation whose Data Docs page exists."""
    commit = partition_commit(lake, day)
    assert commit.files and all(lake.exists(f"{PREDICTIONS}/{f}") for f in commit.files)
    assert all(f.startswith(f"dt={day}/") for f in commit.files)
    assert commit.metadata["validation"]["success"] is True
    assert lake.exists(commit.metadata["validation"]["docs_key"])
    return commit


def assert_same_predictions(lake, reference_lake, day: date) -> None:
    """Two runs over the same seeded inputs published the same predictions."""
    ours = read_partition(lake, day).sort_by("image_id").to_pydict()
    theirs = read_partition(reference_lake, day).sort_by("image_id").to_pydict()
    assert ours["image_id"] == theirs["image_id"]
    assert ours["predicted_class"] == theirs["predicted_class"]
    assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=1e-6)


def metadata_rows(home: Path, sql: str, *params) -> list[dict]:
    """Rows from a finished run's Airflow metadata DB (SQLite under ``<home>/airflow``)."""
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, params).fetchall()]
    finally:
        db.close()
