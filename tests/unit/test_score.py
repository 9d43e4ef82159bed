from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from mlcore.data import CuratedRow, write_shards
from mlcore.export import served_model
from mlcore.model import FashionCNN
from mlcore.registry import PinnedModel
from mlcore.score import (
    PartFile,
    PartitionIncomplete,
    commit_partition,
    count_inputs,
    prediction_schema,
    read_predictions,
    score_shard,
    shards_in_interval,
)
from mlcore.storage import parquet_bytes, read_parquet
from mlcore.validation import ValidationFailed
from tests.conftest import DAY

START = datetime(2026, 11, 22, 3, tzinfo=UTC)
END = START + timedelta(days=1)
PINNED = PinnedModel("fashion-classifier", "3", "run-abc", "0" * 64)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return served_model(FashionCNN().eval())  # the ONNX graph scoring serves


def _curate(lake, settings, n=7, labeled=2, when=DAY, batch="b1", images=None):
    """Curated rows as ingestion writes them: random pixels unless ``images`` are given."""
    if images is None:
        images = np.random.default_rng(len(batch)).integers(0, 255, (n, 28, 28), dtype=np.uint8)
    rows = [CuratedRow(f"{batch}-{i:03d}", img.tobytes(), f"landing/{batch}/{i}.png",
                       1 if i < labeled else None) for i, img in enumerate(images)]
    return write_shards(lake, rows, batch, when, settings.shard_rows)


def _score_day(lake, settings, model, pinned=PINNED):
    shards = shards_in_interval(lake, START, END)
    parts = [p for s in shards
             if (p := score_shard(lake, settings, pinned, s, START, END, END, "run-1", model))]
    return commit_partition(lake, settings, pinned, START.date(), parts, shards,
                            count_inputs(lake, shards, START, END), "run-1", END)


def test_only_unlabeled_images_of_the_interval_are_scored(lake, settings, model):
    _curate(lake, settings, n=7, labeled=2)
    _curate(lake, settings, n=4, labeled=0, when=END + timedelta(hours=1), batch="later")
    manifest = _score_day(lake, settings, model)
    table = read_predictions(lake, START.date())
    assert manifest["rows"] == table.num_rows == 5
    assert set(table.column("image_id").to_pylist()) == {f"b1-{i:03d}" for i in range(2, 7)}


def test_schema_is_exactly_the_documented_one(lake, settings, model):
    _curate(lake, settings)
    _score_day(lake, settings, model)
    assert read_predictions(lake, START.date()).schema.equals(prediction_schema())


def test_manifest_lists_exactly_the_files_present_and_rerun_is_identical(lake, settings, model):
    _curate(lake, settings)
    first = _score_day(lake, settings, model)
    files = [k for k in lake.list("predictions/dt=2026-11-22") if k.endswith(".parquet")]
    assert sorted(f["key"] for f in first["files"]) == files
    before = {k: lake.read_bytes(k) for k in files}
    second = _score_day(lake, settings, model)
    assert second["files"] == first["files"]
    assert {k: lake.read_bytes(k) for k in files} == before  # byte-identical rerun


def test_consumers_reading_the_manifest_files_get_exactly_the_manifest_rows(lake, settings,
                                                                           model):
    """The docs/consumers.md snippets (pandas, pyarrow.dataset, DuckDB) read the manifest's
    files, so a leftover part of a killed run beside them is never counted."""
    import json

    import duckdb
    import pandas as pd

    _curate(lake, settings)
    first_part = _score_day(lake, settings, model)["files"][0]["key"]
    lake.write_bytes("predictions/dt=2026-11-22/part-leftover.parquet", lake.read_bytes(first_part))
    expected = read_predictions(lake, START.date()).to_pandas()

    root = str(lake.root)
    manifest = json.load(open(f"{root}/predictions/dt=2026-11-22/_manifest.json"))
    files = [f"{root}/{f['key']}" for f in manifest["files"]]
    df = pd.concat(pd.read_parquet(p) for p in files)
    assert sorted(df["image_id"]) == sorted(expected["image_id"]) and len(df) == 5
    np.testing.assert_allclose(np.stack(df["probabilities"]).sum(axis=1), 1, atol=1e-4)

    dataset = ds.dataset(files, format="parquet")
    assert dataset.to_table().schema.equals(prediction_schema())
    assert dataset.count_rows() == manifest["rows"] == 5

    counts = duckdb.execute("SELECT predicted_label, count(*) FROM read_parquet(?) "
                            "GROUP BY 1 ORDER BY 1", [files]).fetchall()
    assert counts == sorted(expected["predicted_label"].value_counts().items())
    globbed = duckdb.execute("SELECT count(*) FROM read_parquet(?)",
                             [f"{root}/predictions/dt=2026-11-22/*.parquet"]).fetchone()[0]
    assert globbed == 10  # what ignoring the manifest would have read: the leftover twice over


def test_partition_without_manifest_does_not_exist(lake):
    with pytest.raises(PartitionIncomplete):
        read_predictions(lake, START.date())


def test_tampered_part_file_is_refused_by_the_reader(lake, settings, model):
    _curate(lake, settings)
    manifest = _score_day(lake, settings, model)
    key = manifest["files"][0]["key"]
    (lake.root / key).write_bytes(lake.read_bytes(key) + b"x")
    with pytest.raises(PartitionIncomplete):
        read_predictions(lake, START.date())


def test_two_concurrent_commits_for_one_date_only_one_publishes(lake, settings, model):
    from mlcore.score import ConcurrentCommit

    _curate(lake, settings)
    shards = shards_in_interval(lake, START, END)
    parts = [score_shard(lake, settings, PINNED, s, START, END, END, "run-1", model) for s in shards]
    expected = count_inputs(lake, shards, START, END)
    # Both runs read "no manifest yet" before either commits: simulate by pre-claiming generation 1.
    assert lake.write_if_absent("predictions/dt=2026-11-22/_manifests/000001.json", b"{}")
    with pytest.raises(ConcurrentCommit):
        commit_partition(lake, settings, PINNED, START.date(), parts, shards, expected, "run-2", END)
    assert not lake.exists("predictions/dt=2026-11-22/_manifest.json")


def test_a_retried_commit_of_the_same_run_publishes(lake, settings, model):
    """The commit task died after claiming its generation but before ``_manifest.json``: its
    Airflow retry writes the identical generation record and must publish, not lose a race
    against itself."""
    _curate(lake, settings)
    shards = shards_in_interval(lake, START, END)
    parts = [score_shard(lake, settings, PINNED, s, START, END, END, "run-1", model) for s in shards]
    expected = count_inputs(lake, shards, START, END)
    first = commit_partition(lake, settings, PINNED, START.date(), parts, shards, expected,
                             "run-1", END)
    lake.delete("predictions/dt=2026-11-22/_manifest.json")  # as if the first try died here
    retried = commit_partition(lake, settings, PINNED, START.date(), parts, shards, expected,
                               "run-1", END)
    assert retried == first and retried["generation"] == 1
    assert read_predictions(lake, START.date()).num_rows == first["rows"]


def test_parts_of_a_superseded_model_are_cleaned_after_two_generations(lake, settings, model):
    _curate(lake, settings)
    first = _score_day(lake, settings, model)
    newer = PinnedModel("fashion-classifier", "4", "run-def", "1" * 64)
    _score_day(lake, settings, model, newer)
    third = _score_day(lake, settings, model, newer)
    present = {k for k in lake.list("predictions/dt=2026-11-22") if k.endswith(".parquet")}
    assert present == {f["key"] for f in third["files"]}
    assert not present & {f["key"] for f in first["files"]}
    assert third["generation"] == 3


def test_labels_arriving_after_scoring_give_the_realized_accuracy(lake, settings, model):
    from mlcore.images import encode_png
    from mlcore.ingest import ingest_batch
    from mlcore.monitor import realized_accuracy

    rng = np.random.default_rng(5)
    pngs = {f"{i}.png": encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8)) for i in range(6)}
    for name, data in pngs.items():
        lake.write_bytes(f"landing/new/{name}", data)
    lake.write_bytes("landing/new/_READY", b"")
    ingest_batch(lake, settings, "new", START + timedelta(hours=9))
    _score_day(lake, settings, model)
    predicted = dict(zip(*read_predictions(lake, START.date()).select(
        ["source_key", "predicted_class"]).to_pydict().values(), strict=True))
    # Later, the same files come back with labels: two right, one wrong.
    truth = {n: predicted[f"landing/new/{n}"] for n in ("0.png", "1.png")}
    truth["2.png"] = (predicted["landing/new/2.png"] + 1) % 10
    for name in truth:
        lake.write_bytes(f"landing/labels-later/{name}", pngs[name])
    lake.write_bytes("landing/labels-later/labels.csv",
                     ("filename,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items())).encode())
    lake.write_bytes("landing/labels-later/_READY", b"")
    report = ingest_batch(lake, settings, "labels-later", END + timedelta(hours=1))
    assert report.duplicates == 3
    [row] = realized_accuracy(settings, lake)
    assert row == {"model_version": "3", "labeled_predictions": 3, "realized_accuracy": 2 / 3}
    assert read_parquet(lake, "monitoring/realized_accuracy.parquet").num_rows == 1


@pytest.mark.parametrize("brightness", [1, 0.5])
def test_a_drifted_night_warns_or_fails_as_configured(lake, settings, model, caplog, brightness):
    """Holdout images scored as a night's batch: unshifted they raise nothing; with their
    brightness halved, input drift breaches, which warns by default and fails on request."""
    from mlcore.data import load_fashion_mnist
    from mlcore.monitor import DriftDetected, monitor_partition

    holdout, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    night = (holdout[:600] * brightness).astype(np.uint8)
    _curate(lake, settings, labeled=0, images=night)
    _score_day(lake, settings, model)
    shards = shards_in_interval(lake, START, END)

    def monitor(drift_action):
        configured = settings.model_copy(update={"drift_action": drift_action})
        return monitor_partition(configured, lake, PINNED, START.date(), shards, START, END,
                                 model=model)

    report = monitor("warn")
    assert report.scored.rows == 600 and sum(report.scored.intensity_counts) == 600
    stored = read_parquet(lake, "monitoring/dt=2026-11-22/drift.parquet").to_pylist()[0]
    assert stored["intensity_psi"] == pytest.approx(report.intensity_psi)
    if brightness == 1:
        assert report.breached == [] and report.intensity_psi < 0.1
        monitor("fail")  # nothing to fail on
        return
    assert "intensity_psi" in report.breached and report.intensity_psi > settings.drift_threshold
    assert "drift on 2026-11-22: " in caplog.text and stored["breached"]
    with pytest.raises(DriftDetected, match="intensity_psi"):
        monitor("fail")


def test_scoring_window_defaults_to_the_data_interval_and_follows_params():
    from mlcore.score import ScoringWindow

    w = ScoringWindow.resolve(START, END)
    assert (w.start, w.end, w.day) == (START, END, START.date())
    other = ScoringWindow.resolve(START, END, on_date="2026-11-01")
    assert other.start == datetime(2026, 11, 1, 3, tzinfo=UTC) and other.end - other.start == END - START
    assert str(other.day) == "2026-11-01"
    everything = ScoringWindow.resolve(START, END, rescore_all=True)
    assert everything.start.year == 1970 and everything.end == END and everything.day == START.date()
    assert ScoringWindow.from_xcom(w.to_xcom()) == w


def _commit_refused(lake, settings, parts, shards, expected, reason):
    with pytest.raises(ValidationFailed, match=reason) as err:
        commit_partition(lake, settings, PINNED, START.date(), parts, shards, expected, "run-1",
                         END)
    assert not lake.exists("predictions/dt=2026-11-22/_manifest.json")  # nothing published
    assert Path(urlparse(err.value.docs_location).path).is_file()  # the Data Docs page exists
    return err.value


def _tampered_part(lake, part, change):
    """A copy of ``part`` whose table went through ``change``, as a buggy scorer would write."""
    import hashlib

    data = parquet_bytes(change(read_parquet(lake, part.key)))
    key = part.key.replace("part-", "part-tampered-")
    lake.write_bytes(key, data)
    return PartFile(key, part.rows, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(("column", "bad_values", "reason"), [
    ("probabilities", lambda n: [[0.5] * 10] * n, "probabilities_sum"),
    ("confidence", lambda n: [1.5] * n, "confidence_range"),
    ("predicted_label", lambda n: ["Hat"] * n, "label_set"),
])
def test_implausible_predictions_are_refused_before_publishing(lake, settings, model, column,
                                                                bad_values, reason):
    import pyarrow as pa

    _curate(lake, settings)
    shards = shards_in_interval(lake, START, END)
    (part,) = [score_shard(lake, settings, PINNED, s, START, END, END, "run-1", model)
               for s in shards]

    def spoil(table):
        i = table.schema.get_field_index(column)
        return table.set_column(i, table.schema.field(i),
                                pa.array(bad_values(table.num_rows), table.schema.field(i).type))

    refused = _commit_refused(lake, settings, [_tampered_part(lake, part, spoil)], shards,
                              count_inputs(lake, shards, START, END), reason)
    assert len(refused.failed_expectations) == 1  # only the rule that was broken


def test_rows_from_two_model_versions_or_a_missing_shard_are_refused(lake, settings, model):
    _curate(lake, settings)
    shards = shards_in_interval(lake, START, END)
    expected = count_inputs(lake, shards, START, END)
    ours = score_shard(lake, settings, PINNED, shards[0], START, END, END, "run-1", model)
    newer = PinnedModel("fashion-classifier", "4", "run-def", "1" * 64)
    theirs = score_shard(lake, settings, newer, shards[0], START, END, END, "run-1", model)
    mixed = _commit_refused(lake, settings, [ours, theirs], shards, expected, "duplicate_rows")
    assert any("row_count" in f for f in mixed.failed_expectations)
    _commit_refused(lake, settings, [ours], shards, expected + 1, "row_count")
