"""Batches marked holdout (batch.json), drift without a reference, conversions on record."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from mlcore.data import list_shards, read_shard, shard_pixels
from mlcore.images import encode_png
from mlcore.ingest import BatchRejected, BatchReport, ingest_batch, ledger_key
from mlcore.layout import CURATED_HOLDOUT
from mlcore.shapes import generate, write_batch
from mlcore.task import task_of
from tests.conftest import DAY


def _shapes_batch(lake, settings, batch_id, n=30, seed=1, holdout=False, labeled=True):
    task = task_of(settings)
    images, labels = generate(task.classes, n, seed)
    write_batch(lake, batch_id, images, labels if labeled else None, task.classes, holdout=holdout)
    return images, labels


def test_holdout_batch_is_curated_apart_and_its_metadata_file_is_no_image(lake, shapes_settings):
    images, labels = _shapes_batch(lake, shapes_settings, "hold", holdout=True)
    _shapes_batch(lake, shapes_settings, "train", seed=2)
    hold = ingest_batch(shapes_settings, lake, "hold", logical_date=DAY)
    train = ingest_batch(shapes_settings, lake, "train", logical_date=DAY)
    assert hold.holdout and not train.holdout
    # batch.json is accounted for like labels.csv: not a file, not quarantined.
    assert (hold.files, hold.accepted, hold.quarantined, hold.labeled) == (30, 30, 0, 30)
    assert hold.shards == [] and len(hold.holdout_shards) == 1
    assert hold.holdout_shards[0].startswith(f"{CURATED_HOLDOUT}/")
    # Training and scoring list curated/images: the holdout is not there.
    assert list_shards(lake) == train.shards
    assert list_shards(lake, CURATED_HOLDOUT) == hold.holdout_shards
    table = read_shard(lake, hold.holdout_shards[0])
    assert sorted(table.column("label").to_pylist()) == sorted(labels.tolist())
    assert {p.tobytes() for p in shard_pixels(table)} == {i.tobytes() for i in images}
    recorded = BatchReport.from_json(lake.read_bytes(ledger_key("hold")))
    assert recorded.holdout and recorded.holdout_shards == hold.holdout_shards


def test_changing_the_metadata_file_after_ingestion_is_a_recorded_conflict(lake, shapes_settings):
    _shapes_batch(lake, shapes_settings, "hold", holdout=True)
    ingest_batch(shapes_settings, lake, "hold", logical_date=DAY)
    # The uploader overwrites it (the platform itself never writes under landing/).
    (lake.root / "landing/hold/batch.json").write_bytes(b'{"holdout": false}')
    again = ingest_batch(shapes_settings, lake, "hold", logical_date=DAY)
    assert again.status == "conflict" and again.files == 30
    assert [(r.key, r.reason) for r in again.rejections] == [("landing/hold/batch.json", "changed")]


@pytest.mark.parametrize(("meta", "detail"), [
    (b"{not json", "not UTF-8 JSON"),
    (b'["holdout"]', "a JSON object is expected"),
    (b'{"holdout": "yes"}', "holdout must be true or false"),
    (b'{"holdout": true, "split": "test"}', "unknown fields ['split']"),
])
def test_unreadable_metadata_file_rejects_the_whole_batch(lake, shapes_settings, meta, detail):
    _shapes_batch(lake, shapes_settings, "b", n=10)
    lake.write_bytes("landing/b/batch.json", meta)
    with pytest.raises(BatchRejected, match="batch_meta_unreadable") as err:
        ingest_batch(shapes_settings, lake, "b", logical_date=DAY)
    assert detail in err.value.detail
    report = BatchReport.from_json(lake.read_bytes(ledger_key("b")))
    assert (report.files, report.quarantined, report.accepted) == (10, 10, 0)
    assert not any(r.key.endswith("batch.json") for r in report.rejections)
    assert list_shards(lake) == [] and list_shards(lake, CURATED_HOLDOUT) == []


def test_holdout_batch_without_labels_is_refused(lake, shapes_settings):
    _shapes_batch(lake, shapes_settings, "b", n=10, holdout=True, labeled=False)
    with pytest.raises(BatchRejected, match="holdout_refused.*needs labels.csv"):
        ingest_batch(shapes_settings, lake, "b", logical_date=DAY)


def test_holdout_batch_for_a_task_with_a_fixed_holdout_is_refused(lake, settings):
    rng = np.random.default_rng(0)
    for i in range(3):
        lake.write_bytes(f"landing/b/{i}.png", encode_png(rng.integers(0, 150, (28, 28), np.uint8)))
    lake.write_bytes("landing/b/labels.csv", b"filename,label\n0.png,Bag\n1.png,Bag\n2.png,Coat\n")
    lake.write_bytes("landing/b/batch.json", b'{"holdout": true}')
    lake.write_bytes("landing/b/_READY", b"")
    with pytest.raises(BatchRejected, match="holdout_refused.*fashion-mnist-test"):
        ingest_batch(settings, lake, "b", logical_date=DAY)


def test_drift_rule_is_skipped_with_a_reason_before_a_task_without_base_data_has_a_champion(
        lake, shapes_settings):
    task = task_of(shapes_settings)
    dark, labels = generate(task.classes, 40, seed=4)
    dark = (dark // 8).astype(np.uint8) + 2  # far from any intensity a reference would hold
    write_batch(lake, "dark", dark, labels, task.classes)
    report = ingest_batch(shapes_settings, lake, "dark", logical_date=DAY)
    assert report.status == "ingested" and report.accepted == 40
    assert report.drift_check.startswith("skipped: task shapes has no base data and no champion")


def test_fashion_mnist_batches_still_judge_drift_against_the_base_profile(lake, settings):
    from mlcore.validation import ValidationFailed

    bright = np.random.default_rng(0).integers(200, 256, (25, 28, 28), np.uint8)
    for i, img in enumerate(bright):
        lake.write_bytes(f"landing/b/{i}.png", encode_png(img))
    lake.write_bytes("landing/b/_READY", b"")
    with pytest.raises(ValidationFailed, match="input_drift"):
        ingest_batch(settings, lake, "b", logical_date=DAY)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_upload_to_the_grayscale_task_is_converted_and_the_ledger_says_so(lake, settings):
    rng = np.random.default_rng(1)
    lake.write_bytes("landing/b/rgb.png", _png(rng.integers(0, 150, (40, 50, 3), np.uint8)))
    lake.write_bytes("landing/b/gray.png", _png(rng.integers(0, 150, (28, 28), np.uint8)))
    lake.write_bytes("landing/b/_READY", b"")
    report = ingest_batch(settings, lake, "b", logical_date=DAY)
    assert (report.accepted, report.quarantined) == (2, 0)
    assert report.conversions == {"RGB->L": 1, "resized": 1}
    assert json.loads(lake.read_bytes(ledger_key("b")))["conversions"] == report.conversions
    [shard] = report.shards
    assert shard_pixels(read_shard(lake, shard)).shape == (2, 28, 28)


def test_grayscale_upload_to_the_rgb_task_is_converted_and_the_ledger_says_so(lake, shapes_settings):
    rng = np.random.default_rng(2)
    lake.write_bytes("landing/b/gray.png", _png(rng.integers(0, 150, (32, 32), np.uint8)))
    lake.write_bytes("landing/b/rgb.png", _png(rng.integers(0, 150, (32, 32, 3), np.uint8)))
    lake.write_bytes("landing/b/_READY", b"")
    report = ingest_batch(shapes_settings, lake, "b", logical_date=DAY)
    assert (report.accepted, report.quarantined) == (2, 0)
    assert report.conversions == {"L->RGB": 1}
    pixels = shard_pixels(read_shard(lake, report.shards[0]))
    assert pixels.shape == (2, 32, 32, 3)
