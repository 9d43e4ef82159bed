from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from mlcore.data import CuratedRow, write_shards
from mlcore.export import served_model
from mlcore.model import FashionCNN
from mlcore.predictions import (
    PartFile,
    PartitionIncomplete,
    history,
    partition_commit,
    prediction_schema,
    read_partition,
    read_rows,
)
from mlcore.registry import PinnedModel
from mlcore.score import (
    ScoringWindow,
    commit_partition,
    count_inputs,
    score_shard,
    shards_in_interval,
)
from mlcore.storage import parquet_bytes, read_parquet
from mlcore.validation import ValidationFailed
from tests.conftest import DAY

START = datetime(2026, 11, 22, 3, tzinfo=UTC)
END = START + timedelta(days=1)
WINDOW = ScoringWindow(START, END, START.date())
PINNED = PinnedModel("fashion-classifier", "3", "run-abc", "0" * 64)
PARTITION = "predictions/dt=2026-11-22"


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
    return write_shards(lake, rows, batch, ingested_at=when, shard_rows=settings.shard_rows)


def _score(lake, settings, model, pinned=PINNED, run_id="run-1", window=WINDOW):
    """What the mapped ``score_shard`` tasks of one run write (nothing committed yet)."""
    shards = shards_in_interval(lake, window.start, window.end)
    parts = [p for s in shards if (p := score_shard(lake, settings, pinned, s, window,
                                                    dag_run_id=run_id, model=model))]
    return parts, shards


def _commit(lake, settings, parts, shards, pinned=PINNED, run_id="run-1", window=WINDOW,
            expected=None):
    if expected is None:
        expected = count_inputs(lake, shards, window.start, window.end)
    return commit_partition(lake, settings, pinned, window, parts, shards=shards,
                            expected_rows=expected, dag_run_id=run_id)


def _score_day(lake, settings, model, pinned=PINNED, run_id="run-1", window=WINDOW):
    parts, shards = _score(lake, settings, model, pinned, run_id, window)
    return _commit(lake, settings, parts, shards, pinned, run_id, window)


def _data_files(lake, prefix="predictions"):
    return {k for k in lake.list(prefix) if k.endswith(".parquet") and "/_delta_log/" not in k}


def test_only_unlabeled_images_of_the_interval_are_scored(lake, settings, model):
    _curate(lake, settings, n=7, labeled=2)
    _curate(lake, settings, n=4, labeled=0, when=END + timedelta(hours=1), batch="later")
    commit = _score_day(lake, settings, model)
    table = read_partition(lake, START.date())
    assert commit.rows == table.num_rows == 5
    assert set(table.column("image_id").to_pylist()) == {f"b1-{i:03d}" for i in range(2, 7)}


def test_schema_is_exactly_the_documented_one(lake, settings, model):
    _curate(lake, settings)
    _score_day(lake, settings, model)
    assert read_partition(lake, START.date()).schema.equals(prediction_schema())
    assert partition_commit(lake, START.date()).metadata["model"]["version"] == "3"


def test_rerun_with_another_run_id_never_touches_the_committed_snapshot(lake, settings, model):
    """Defect 1 of the manifest protocol: a rerun rewrote the committed part files (same key,
    new ``dag_run_id`` bytes), so a rerun killed before its commit broke the partition."""
    _curate(lake, settings)
    first = _score_day(lake, settings, model, run_id="scheduled__2026-11-22")
    committed = {k: lake.read_bytes(k) for k in _data_files(lake)}
    before = read_partition(lake, START.date())

    parts, shards = _score(lake, settings, model, run_id="manual__rerun")  # killed before commit
    assert not {p.key for p in parts} & set(committed)  # new keys: nothing is rewritten
    assert {k: lake.read_bytes(k) for k in committed} == committed
    during = read_partition(lake, START.date())
    assert during.equals(before) and set(during.column("dag_run_id").to_pylist()) == {
        "scheduled__2026-11-22"}

    second = _commit(lake, settings, parts, shards, run_id="manual__rerun")
    after = read_partition(lake, START.date())
    assert second.version > first.version and after.num_rows == before.num_rows == 5
    assert sorted(after.column("image_id").to_pylist()) == sorted(
        before.column("image_id").to_pylist())  # no row lost, none doubled
    assert set(after.column("dag_run_id").to_pylist()) == {"manual__rerun"}
    assert read_partition(lake, START.date(), as_of=first.version).equals(before)  # time travel


def test_rescore_all_writes_only_into_its_own_partition(lake, settings, model):
    """Defect 2: ``rescore_all`` wrote its files under ``dt=1970-01-01`` (the widened window's
    start), where a second ``rescore_all`` for another day overwrote them."""
    _curate(lake, settings)
    _curate(lake, settings, n=3, labeled=0, when=DAY - timedelta(days=5), batch="older")
    day1 = ScoringWindow.resolve(START, END, rescore_all=True)
    _score_day(lake, settings, model, run_id="rescore-1", window=day1)
    assert all(k.startswith(f"{PARTITION}/") for k in _data_files(lake))
    first = read_partition(lake, START.date())
    assert first.num_rows == 5 + 3

    day2 = ScoringWindow.resolve(START + timedelta(days=1), END + timedelta(days=1),
                                 rescore_all=True)
    _score_day(lake, settings, model, run_id="rescore-2", window=day2)
    folders = {k.split("/")[1] for k in _data_files(lake)}
    assert folders == {"dt=2026-11-22", "dt=2026-11-23"}  # no phantom 1970 partition
    assert read_partition(lake, START.date()).equals(first)
    assert read_partition(lake, day2.day).num_rows == 8


def test_a_commit_killed_midway_never_blocks_later_runs(lake, settings, model):
    """Defect 3: a run killed between claiming a generation and writing ``_manifest.json``
    made every later run for the date lose with ``ConcurrentCommit``. A Delta commit is one
    create-if-absent of the next log entry: a killed commit leaves at most a staging file and
    unreferenced data files, and later runs with other run ids commit."""
    _curate(lake, settings)
    _score_day(lake, settings, model, run_id="run-1")
    _score(lake, settings, model, run_id="killed")  # its data files, never committed
    log_dir = lake.root / "predictions" / "_delta_log"
    (log_dir / "_commit_0123abcd.json.tmp").write_text('{"commitInfo":{}}')  # a killed writer's
    (log_dir / "00000000000000000002.json#1").write_text('{"add":')  # staging files, torn
    for run in ("run-2", "run-3"):
        commit = _score_day(lake, settings, model, run_id=run)
        table = read_partition(lake, START.date())
        assert set(table.column("dag_run_id").to_pylist()) == {run} and table.num_rows == 5
    assert commit.version == 3


def test_a_retried_commit_of_the_same_run_publishes_once(lake, settings, model):
    """The commit task died after its commit landed: its Airflow retry finds the partition
    already holding its files and does not commit again."""
    _curate(lake, settings)
    parts, shards = _score(lake, settings, model)
    first = _commit(lake, settings, parts, shards)
    retried = _commit(lake, settings, parts, shards)
    assert retried.version == first.version and retried.files == first.files
    assert len(history(lake)) == first.version + 1
    assert read_partition(lake, START.date()).num_rows == first.rows


def test_partition_never_committed_does_not_exist(lake, settings, model):
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date())
    _curate(lake, settings)
    _score(lake, settings, model)  # data files without a commit are not a partition
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date())
    _score_day(lake, settings, model)
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date() + timedelta(days=1))


def test_an_empty_night_commits_an_empty_partition(lake, settings, model):
    commit = _commit(lake, settings, [], [])
    assert commit.rows == 0 and read_partition(lake, START.date()).num_rows == 0


def test_labels_arriving_after_scoring_give_the_realized_accuracy(lake, settings, model):
    from mlcore.images import encode_png
    from mlcore.ingest import ingest_batch
    from mlcore.monitor import realized_accuracy

    rng = np.random.default_rng(5)
    pngs = {f"{i}.png": encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8)) for i in range(6)}
    for name, data in pngs.items():
        lake.write_bytes(f"landing/new/{name}", data)
    lake.write_bytes("landing/new/_READY", b"")
    ingest_batch(settings, lake, "new", logical_date=START + timedelta(hours=9))
    _score_day(lake, settings, model)
    predicted = dict(zip(*read_partition(lake, START.date()).select(
        ["source_key", "predicted_class"]).to_pydict().values(), strict=True))
    # Later, the same files come back with labels: two right, one wrong.
    truth = {n: predicted[f"landing/new/{n}"] for n in ("0.png", "1.png")}
    truth["2.png"] = (predicted["landing/new/2.png"] + 1) % 10
    for name in truth:
        lake.write_bytes(f"landing/labels-later/{name}", pngs[name])
    lake.write_bytes("landing/labels-later/labels.csv",
                     ("filename,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items())).encode())
    lake.write_bytes("landing/labels-later/_READY", b"")
    report = ingest_batch(settings, lake, "labels-later", logical_date=END + timedelta(hours=1))
    assert report.duplicates == 3
    [row] = realized_accuracy(settings, lake)
    assert row == {"model_version": "3", "labeled_predictions": 3, "realized_accuracy": 2 / 3}
    assert read_rows(lake, "monitoring/realized_accuracy").to_pylist() == [row]


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
    stored = read_rows(lake, "monitoring/drift", day=START.date()).to_pylist()[0]
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


def test_the_date_param_selects_that_day_with_airflows_pendulum_datetimes():
    """Airflow passes pendulum datetimes; a shift back across month ends once landed on the
    day before the requested one."""
    import pendulum

    from mlcore.score import ScoringWindow

    start = pendulum.datetime(2027, 1, 7, 3, tz="UTC")
    for on_date in ("2026-11-22", "2026-11-30", "2027-03-01", "2027-01-07"):
        w = ScoringWindow.resolve(start, start.add(days=1), on_date=on_date)
        assert str(w.day) == on_date and w.start.hour == 3 and w.end - w.start == timedelta(days=1)


def _commit_refused(lake, settings, parts, shards, expected, reason):
    with pytest.raises(ValidationFailed, match=reason) as err:
        _commit(lake, settings, parts, shards, expected=expected)
    with pytest.raises(PartitionIncomplete, match="failed validation") as missing:
        read_partition(lake, START.date())  # nothing published, and the reader is told why
    assert err.value.docs_url in str(missing.value) and "rerun batch_score" in str(missing.value)
    assert Path(urlparse(err.value.docs_location).path).is_file()  # the Data Docs page exists
    return err.value


def _tampered_part(lake, part, change):
    """A copy of ``part`` whose table went through ``change``, as a buggy scorer would write."""
    data = parquet_bytes(change(read_parquet(lake, part.key)))
    key = part.key.replace("part-", "part-tampered-")
    lake.write_bytes(key, data)
    return PartFile(key, part.rows, len(data))


@pytest.mark.parametrize(("column", "bad_values", "reason"), [
    ("probabilities", lambda n: [[0.5] * 10] * n, "probabilities_sum"),
    ("confidence", lambda n: [1.5] * n, "confidence_range"),
    ("predicted_label", lambda n: ["Hat"] * n, "label_set"),
])
def test_implausible_predictions_are_refused_before_publishing(lake, settings, model, column,
                                                                bad_values, reason):
    import pyarrow as pa

    _curate(lake, settings)
    (part,), shards = _score(lake, settings, model)

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
    ours = score_shard(lake, settings, PINNED, shards[0], WINDOW, dag_run_id="run-1", model=model)
    newer = PinnedModel("fashion-classifier", "4", "run-def", "1" * 64)
    theirs = score_shard(lake, settings, newer, shards[0], WINDOW, dag_run_id="run-1",
                         model=model)
    mixed = _commit_refused(lake, settings, [ours, theirs], shards, expected, "duplicate_rows")
    assert any("row_count" in f for f in mixed.failed_expectations)
    _commit_refused(lake, settings, [ours], shards, expected + 1, "row_count")
