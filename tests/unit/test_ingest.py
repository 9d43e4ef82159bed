import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from mlcore.data import known_image_ids, read_shard
from mlcore.images import encode_png
from mlcore.ingest import BatchNotReady, BatchReport, ingest_batch, parse_labels, ready_batches
from mlcore.seed import seed_landing
from mlcore.validation import ValidationFailed
from tests.conftest import DAY


def _img(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8))  # near the reference mean


def _drop(lake, batch_id, files: dict[str, bytes], labels: str | None = None, ready=True):
    for name, data in files.items():
        lake.write_bytes(f"landing/{batch_id}/{name}", data)
    if labels is not None:
        lake.write_bytes(f"landing/{batch_id}/labels.csv", labels.encode())
    if ready:
        lake.write_bytes(f"landing/{batch_id}/_READY", b"")


def test_batch_without_ready_marker_is_never_read(lake, settings):
    _drop(lake, "b1", {"a.png": _img(1)}, ready=False)
    assert ready_batches(lake) == []
    with pytest.raises(BatchNotReady):
        ingest_batch(settings, lake, "b1", logical_date=DAY)


def test_every_file_is_accounted_for_and_bad_ones_quarantined_with_reasons(lake, settings):
    seeded = {b.batch_id: b for b in seed_landing(settings, lake, per_batch=12)}
    report = ingest_batch(settings, lake, "mixed-bad-01", logical_date=DAY)
    assert report.accepted + report.quarantined + report.duplicates == report.files
    assert report.quarantined == seeded["mixed-bad-01"].expected_bad
    assert report.duplicates == 1
    reasons = json.loads(lake.read_bytes("quarantine/mixed-bad-01/_reasons.json"))
    by_file = {r["key"].split("/")[-1]: r["reason"] for r in reasons}
    assert by_file == {
        "truncated.png": "truncated",
        "not-an-image.png": "unsupported_format",
        "bomb.png": "decompression_bomb",
        "blank.png": "intensity_out_of_range",
    }
    for name in by_file:  # byte-for-byte copies; landing untouched
        assert lake.read_bytes(f"quarantine/mixed-bad-01/files/{name}") == lake.read_bytes(
            f"landing/mixed-bad-01/{name}")
    assert len(lake.list("landing/mixed-bad-01")) == report.files + 1


def test_ingestion_is_once_only(lake, settings):
    _drop(lake, "b1", {f"{i}.png": _img(i) for i in range(5)})
    first = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert ready_batches(lake) == []
    again = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert again == first
    assert len(known_image_ids(lake)) == 5


def test_same_image_in_a_later_batch_is_a_recorded_duplicate(lake, settings):
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2)})
    _drop(lake, "b2", {"a-again.png": _img(1), "c.png": _img(3)})
    ingest_batch(settings, lake, "b1", logical_date=DAY)
    report = ingest_batch(settings, lake, "b2", logical_date=DAY)
    assert report.duplicate_keys == ["landing/b2/a-again.png"] and report.accepted == 1


def test_labels_become_curated_labels_and_unknown_label_is_quarantined(lake, settings):
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2), "c.png": _img(3)},
          labels="filename,label\na.png,Sneaker\nb.png,3\nc.png,Spaceship\nghost.png,Bag\n")
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert {r.key: r.reason for r in report.rejections} == {"landing/b1/c.png": "unknown_label"}
    assert [(i.reason, i.detail) for i in report.label_issues] == [("label_for_missing_file", "ghost.png")]
    table = read_shard(lake, report.shards[0]).to_pydict()
    assert dict(zip([k.split("/")[-1] for k in table["source_key"]], table["label"], strict=True)) == {
        "a.png": 7, "b.png": 3}


@pytest.mark.parametrize(("raw", "reason"), [
    (b"filename,label\nb.png,1\na.png,1\na.png,1\n", "duplicate_label_row"),
    (b"filename,label\nb.png,1\na.png,1\na.png,2\n", "conflicting_labels"),
    (b"filename,label\nb.png,1\na.png,1,extra\n", "labels_malformed"),
    (b"filename,label\nb.png,1\na.png,\"unterminated\n", "labels_malformed"),
    (b"filename,label\nb.png,1\na.png,\"Coat\"x\n", "labels_malformed"),
    (b"filename,label\nb.png,1\na.png,Sandal\xff\n", "labels_encoding"),
])
def test_labels_csv_problems_get_a_clear_reason_against_that_row_only(raw, reason):
    labels, issues = parse_labels(raw, {"a.png", "b.png"})
    last_line = raw.count(b"\n")
    assert [(i.key, i.reason) for i in issues] == [(f"labels.csv:{last_line}", reason)]
    assert labels["b.png"] == 1  # the other rows keep their labels


def test_batch_level_failure_quarantines_whole_batch_and_names_rules(lake, settings):
    bad = {f"junk-{i}.png": b"not an image at all" * 5 for i in range(3)}
    bad["junk-0.png"] += b"0"  # distinct bytes so none is a duplicate
    bad["junk-1.png"] += b"1"
    _drop(lake, "b1", {**bad, "ok.png": _img(1)})
    with pytest.raises(ValidationFailed) as err:
        ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert "reject_rate" in str(err.value)
    assert err.value.docs_url.startswith(settings.data_docs_url + "/validations/batch_summary/b1/")
    reasons = json.loads(lake.read_bytes("quarantine/b1/_reasons.json"))
    assert len(reasons) == 4 and {r["reason"] for r in reasons} == {"unsupported_format", "batch_rejected"}
    assert known_image_ids(lake) == set()
    assert Path(urlparse(err.value.docs_location).path).is_file()  # the Data Docs page exists
    with pytest.raises(ValidationFailed) as again:  # a retry fails the same way, same page
        ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert again.value.docs_url == err.value.docs_url


def test_rejected_batch_can_be_reprocessed_after_a_threshold_change(lake, settings):
    from mlcore import audit
    from mlcore.ingest import reprocess

    bad = {f"junk-{i}.png": b"not an image" * 9 + bytes([i]) for i in range(2)}
    _drop(lake, "b1", {**bad, "ok.png": _img(1)})
    with pytest.raises(ValidationFailed):
        ingest_batch(settings, lake, "b1", logical_date=DAY)
    reprocess(lake, "b1", actor="carol", at=DAY, reason="reject rate limit raised for this supplier")
    assert ready_batches(lake) == ["b1"]
    looser = settings.model_copy(update={"max_reject_rate": 0.9})
    report = ingest_batch(looser, lake, "b1", logical_date=DAY)
    assert (report.status, report.accepted, report.quarantined) == ("ingested", 1, 2)
    [entry] = audit.entries(lake, action="quarantine_reprocess")
    assert (entry.actor, entry.target) == ("carol", "batch/b1")


def test_batch_labeled_with_one_class_only_fails_the_label_distribution_rule(lake, settings):
    files = {f"{i}.png": _img(100 + i) for i in range(25)}
    labels = "filename,label\n" + "".join(f"{i}.png,Bag\n" for i in range(25))
    _drop(lake, "all-bags", files, labels=labels)
    with pytest.raises(ValidationFailed, match="label_distribution"):
        ingest_batch(settings, lake, "all-bags", logical_date=DAY)


def test_contents_changed_after_ingestion_are_recorded_not_mixed_in(lake, settings):
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2)})
    first = ingest_batch(settings, lake, "b1", logical_date=DAY)
    lake.write_bytes("landing/b1/late.png", _img(3))  # a file added under the same batch id
    again = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert again.status == "conflict"
    assert [k for k in lake.list("_state/conflicts") if k.startswith("_state/conflicts/b1-")]
    assert len(known_image_ids(lake)) == 2  # late.png was not curated
    assert BatchReport.from_json(lake.read_bytes("_state/ingest/b1.json")) == first
