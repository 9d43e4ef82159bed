from collections import Counter
from dataclasses import replace
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
from mlcore.runtime import runtime_for
from mlcore.score import (
    ScoringRun,
    ScoringWindow,
    commit,
    input_shards,
    score_run,
    score_shard,
    score_shards,
)
from mlcore.storage import LocalLake, parquet_bytes, read_parquet
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


@pytest.fixture
def rt(settings):
    return runtime_for(settings)


def _run(pinned=PINNED, run_id="run-1", window=WINDOW, challenger=None) -> ScoringRun:
    return ScoringRun.of(window, pinned, run_id=run_id, challenger=challenger)


def _curate(lake, settings, n=7, labeled=2, when=DAY, batch="b1", images=None):
    """Curated rows as ingestion writes them: random pixels unless ``images`` are given."""
    if images is None:
        images = np.random.default_rng(len(batch)).integers(0, 255, (n, 28, 28), dtype=np.uint8)
    rows = [CuratedRow(f"{batch}-{i:03d}", img.tobytes(), f"landing/{batch}/{i}.png",
                       1 if i < labeled else None) for i, img in enumerate(images)]
    return write_shards(lake, rows, batch, ingested_at=when, shard_rows=settings.shard_rows)


def _score(rt, model, run=None):
    """What the mapped ``score_shard`` tasks of one run write (nothing committed yet)."""
    return score_shards(rt, run or _run(), model=model)


def _score_day(rt, model, run=None):
    return score_run(rt, run or _run(), model=model).commit


def _data_files(lake, prefix="predictions"):
    return {k for k in lake.list(prefix) if k.endswith(".parquet") and "/_delta_log/" not in k}


def test_only_unlabeled_images_of_the_interval_are_scored(lake, settings, rt, model):
    _curate(lake, settings, n=7, labeled=2)
    _curate(lake, settings, n=4, labeled=0, when=END + timedelta(hours=1), batch="later")
    commit = _score_day(rt, model)
    table = read_partition(lake, START.date())
    assert commit.rows == table.num_rows == 5
    assert set(table.column("image_id").to_pylist()) == {f"b1-{i:03d}" for i in range(2, 7)}


def test_schema_is_exactly_the_documented_one(lake, settings, rt, model):
    _curate(lake, settings)
    _score_day(rt, model)
    table = read_partition(lake, START.date())
    assert table.schema.equals(prediction_schema())
    assert set(table.column("scored_at").to_pylist()) == {END}  # the run's, not the wall clock
    assert partition_commit(lake, START.date()).metadata["model"]["version"] == "3"


def test_rerun_with_another_run_id_never_touches_the_committed_snapshot(lake, settings, rt,
                                                                        model):
    """Defect 1 of the manifest protocol: a rerun rewrote the committed part files (same key,
    new ``dag_run_id`` bytes), so a rerun killed before its commit broke the partition."""
    _curate(lake, settings)
    first = _score_day(rt, model, _run(run_id="scheduled__2026-11-22"))
    committed = {k: lake.read_bytes(k) for k in _data_files(lake)}
    before = read_partition(lake, START.date())

    rerun = _run(run_id="manual__rerun")
    scored = _score(rt, model, rerun)  # killed before commit
    assert not {s.part.key for s in scored.scored} & set(committed)  # new keys: nothing rewritten
    assert {k: lake.read_bytes(k) for k in committed} == committed
    during = read_partition(lake, START.date())
    assert during.equals(before) and set(during.column("dag_run_id").to_pylist()) == {
        "scheduled__2026-11-22"}

    second = commit(rt, rerun, scored=scored.scored, shards=scored.shards)
    after = read_partition(lake, START.date())
    assert second.version > first.version and after.num_rows == before.num_rows == 5
    assert sorted(after.column("image_id").to_pylist()) == sorted(
        before.column("image_id").to_pylist())  # no row lost, none doubled
    assert set(after.column("dag_run_id").to_pylist()) == {"manual__rerun"}
    assert read_partition(lake, START.date(), as_of=first.version).equals(before)  # time travel


def test_rescore_all_writes_only_into_its_own_partition(lake, settings, rt, model):
    """Defect 2: ``rescore_all`` wrote its files under ``dt=1970-01-01`` (the widened window's
    start), where a second ``rescore_all`` for another day overwrote them."""
    _curate(lake, settings)
    _curate(lake, settings, n=3, labeled=0, when=DAY - timedelta(days=5), batch="older")
    day1 = ScoringWindow.resolve(START, END, rescore_all=True)
    _score_day(rt, model, _run(run_id="rescore-1", window=day1))
    assert all(k.startswith(f"{PARTITION}/") for k in _data_files(lake))
    first = read_partition(lake, START.date())
    assert first.num_rows == 5 + 3

    day2 = ScoringWindow.resolve(START + timedelta(days=1), END + timedelta(days=1),
                                 rescore_all=True)
    _score_day(rt, model, _run(run_id="rescore-2", window=day2))
    folders = {k.split("/")[1] for k in _data_files(lake)}
    assert folders == {"dt=2026-11-22", "dt=2026-11-23"}  # no phantom 1970 partition
    assert read_partition(lake, START.date()).equals(first)
    assert read_partition(lake, day2.day).num_rows == 8


def test_a_commit_killed_midway_never_blocks_later_runs(lake, settings, rt, model):
    """Defect 3: a run killed between claiming a generation and writing ``_manifest.json``
    made every later run for the date lose with ``ConcurrentCommit``. A Delta commit is one
    create-if-absent of the next log entry: a killed commit leaves at most a staging file and
    unreferenced data files, and later runs with other run ids commit."""
    _curate(lake, settings)
    _score_day(rt, model, _run(run_id="run-1"))
    _score(rt, model, _run(run_id="killed"))  # its data files, never committed
    log_dir = lake.root / "predictions" / "_delta_log"
    (log_dir / "_commit_0123abcd.json.tmp").write_text('{"commitInfo":{}}')  # a killed writer's
    (log_dir / "00000000000000000002.json#1").write_text('{"add":')  # staging files, torn
    for run in ("run-2", "run-3"):
        committed = _score_day(rt, model, _run(run_id=run))
        table = read_partition(lake, START.date())
        assert set(table.column("dag_run_id").to_pylist()) == {run} and table.num_rows == 5
    assert committed.version == 3


def test_a_retried_commit_of_the_same_run_publishes_once(lake, settings, rt, model):
    """The commit task died after its commit landed: its Airflow retry finds the partition
    already holding its files and does not commit again."""
    _curate(lake, settings)
    scored = _score(rt, model)
    first = commit(rt, _run(), scored=scored.scored, shards=scored.shards)
    retried = commit(rt, _run(), scored=scored.scored, shards=scored.shards)
    assert retried.version == first.version and retried.files == first.files
    assert len(history(lake)) == first.version + 1
    assert read_partition(lake, START.date()).num_rows == first.rows


def test_partition_never_committed_does_not_exist(lake, settings, rt, model):
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date())
    _curate(lake, settings)
    _score(rt, model)  # data files without a commit are not a partition
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date())
    _score_day(rt, model)
    with pytest.raises(PartitionIncomplete):
        read_partition(lake, START.date() + timedelta(days=1))


def test_an_empty_night_commits_an_empty_partition(lake, rt, model):
    result = score_run(rt, _run(), model=model)
    assert result.shards == [] and result.scored == []
    assert result.commit.rows == 0 and read_partition(lake, START.date()).num_rows == 0


def test_labels_arriving_after_scoring_give_the_realized_accuracy(lake, settings, rt, model):
    from mlcore.images import encode_png
    from mlcore.ingest import ingest_batch
    from mlcore.monitor import realized_accuracy

    rng = np.random.default_rng(5)
    pngs = {f"{i}.png": encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8)) for i in range(6)}
    for name, data in pngs.items():
        lake.write_bytes(f"landing/new/{name}", data)
    lake.write_bytes("landing/new/_READY", b"")
    ingest_batch(settings, lake, "new", logical_date=START + timedelta(hours=9))
    _score_day(rt, model)
    assert realized_accuracy(rt) == []  # no feedback yet; the next run folds only the new one
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
    [row] = realized_accuracy(rt)
    assert row == {"model_version": "3", "labeled_predictions": 3, "realized_accuracy": 2 / 3}
    assert read_rows(lake, "monitoring/realized_accuracy").to_pylist() == [row]


@pytest.mark.parametrize("brightness", [1, 0.5])
def test_a_drifted_night_warns_or_fails_as_configured(lake, settings, rt, model, caplog,
                                                      brightness):
    """Holdout images scored as a night's batch: unshifted they raise nothing; with their
    brightness halved, input drift breaches, which warns by default and fails on request."""
    from mlcore.data import load_fashion_mnist
    from mlcore.monitor import DriftDetected, monitor_partition

    holdout, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    night = (holdout[:600] * brightness).astype(np.uint8)
    _curate(lake, settings, labeled=0, images=night)
    scored = score_run(rt, _run(), model=model).scored

    def monitor(drift_action):
        configured = runtime_for(settings.model_copy(update={"drift_action": drift_action}))
        return monitor_partition(configured, _run(), scored=scored, model=model)

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
    w = ScoringWindow.resolve(START, END)
    assert (w.start, w.end, w.day) == (START, END, START.date())
    other = ScoringWindow.resolve(START, END, on_date="2026-11-01")
    assert other.start == datetime(2026, 11, 1, 3, tzinfo=UTC) and other.end - other.start == END - START
    assert str(other.day) == "2026-11-01"
    everything = ScoringWindow.resolve(START, END, rescore_all=True)
    assert everything.start.year == 1970 and everything.end == END and everything.day == START.date()


def test_the_date_param_selects_that_day_with_airflows_pendulum_datetimes():
    """Airflow passes pendulum datetimes; a shift back across month ends once landed on the
    day before the requested one."""
    import pendulum

    start = pendulum.datetime(2027, 1, 7, 3, tz="UTC")
    for on_date in ("2026-11-22", "2026-11-30", "2027-03-01", "2027-01-07"):
        w = ScoringWindow.resolve(start, start.add(days=1), on_date=on_date)
        assert str(w.day) == on_date and w.start.hour == 3 and w.end - w.start == timedelta(days=1)


def _commit_refused(lake, rt, scored, shards, reason):
    with pytest.raises(ValidationFailed, match=reason) as err:
        commit(rt, _run(), scored=scored, shards=shards)
    with pytest.raises(PartitionIncomplete, match="failed validation") as missing:
        read_partition(lake, START.date())  # nothing published, and the reader is told why
    assert err.value.docs_url in str(missing.value) and "rerun batch_score" in str(missing.value)
    assert Path(urlparse(err.value.docs_location).path).is_file()  # the Data Docs page exists
    return err.value


def _tampered(lake, scored, change):
    """``scored`` with its data file replaced by a copy whose table went through ``change``,
    as a buggy scorer would write it."""
    data = parquet_bytes(change(read_parquet(lake, scored.part.key)))
    key = scored.part.key.replace("part-", "part-tampered-")
    lake.write_bytes(key, data)
    return replace(scored, part=PartFile(key, scored.part.rows, len(data)))


@pytest.mark.parametrize(("column", "bad_values", "reason"), [
    ("probabilities", lambda n: [[0.5] * 10] * n, "probabilities_sum"),
    ("confidence", lambda n: [1.5] * n, "confidence_range"),
    ("predicted_label", lambda n: ["Hat"] * n, "label_set"),
])
def test_implausible_predictions_are_refused_before_publishing(lake, settings, rt, model, column,
                                                                bad_values, reason):
    import pyarrow as pa

    _curate(lake, settings)
    scored = _score(rt, model)

    def spoil(table):
        i = table.schema.get_field_index(column)
        return table.set_column(i, table.schema.field(i),
                                pa.array(bad_values(table.num_rows), table.schema.field(i).type))

    (ours,) = scored.scored
    refused = _commit_refused(lake, rt, [_tampered(lake, ours, spoil)], scored.shards, reason)
    assert len(refused.failed_expectations) == 1  # only the rule that was broken


def test_rows_from_two_model_versions_or_a_missing_shard_are_refused(lake, settings, rt, model):
    _curate(lake, settings)
    _curate(lake, settings, n=3, labeled=0, batch="b2")
    shards = input_shards(rt, _run())
    assert len(shards) == 2
    ours = score_shard(rt, _run(), shard=shards[0], model=model)
    newer = PinnedModel("fashion-classifier", "4", "run-def", "1" * 64)
    theirs = score_shard(rt, _run(newer), shard=shards[0], model=model)
    mixed = _commit_refused(lake, rt, [ours, theirs], shards[:1], "duplicate_rows")
    assert any("row_count" in f for f in mixed.failed_expectations)
    _commit_refused(lake, rt, [ours], shards, "row_count")  # the second shard's part is missing


class CountingLake(LocalLake):
    """A local lake that counts whole-object reads per key, and the bytes each file opened
    through its Arrow filesystem gave (ranged reads of column chunks), per path."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reads: Counter[str] = Counter()
        self.opens: dict[str, list[int]] = {}  # path -> bytes read, one entry per open

    def read_bytes(self, key: str) -> bytes:
        self.reads[key] += 1
        return super().read_bytes(key)

    def arrow_fs(self):
        from fsspec.implementations.local import LocalFileSystem
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        opens = self.opens

        class Counted(LocalFileSystem):
            cachable = False

            def _open(self, path, mode="rb", **kwargs):
                fh = super()._open(path, mode, **kwargs)
                read, sizes = fh.read, opens.setdefault(str(path), [])
                sizes.append(0)
                at = len(sizes) - 1

                def counted(*args):
                    data = read(*args)
                    sizes[at] += len(data)
                    return data

                fh.read = counted
                return fh

        return PyFileSystem(FSSpecHandler(Counted())), str(self.root)

    def shard_opens(self, shard: str) -> list[int]:
        """The bytes of each read of a curated shard, whichever way it was read."""
        whole = [(self.root / shard).stat().st_size] * self.reads[shard]
        return whole + [n for p, ns in self.opens.items() if p.endswith(shard) for n in ns]

    def pixel_reads(self, shards: list[str]) -> dict[str, int]:
        """How often each shard was read with its pixels (more than half its bytes)."""
        return {s: sum(n > (self.root / s).stat().st_size / 2 for n in self.shard_opens(s))
                for s in shards}


def _counting_runtime(settings):
    return runtime_for(settings, lake=CountingLake(settings.home / "lake"))


def _other_model(seed=1):
    """An untrained model: its predictions depend only on the seed. At a fixed architecture,
    so that seeds chosen to predict partly alike (test_shadow) stay so when the task spec's
    model changes."""
    torch.manual_seed(seed)
    return served_model(FashionCNN(widths=(32, 96, 192), hidden=512).eval())


CHALLENGER = PinnedModel("fashion-classifier", "4", "run-def", "1" * 64)


def test_a_run_reads_each_shard_once_with_champion_challenger_and_monitoring(lake, settings,
                                                                             model):
    """Issue 15: scoring, shadow scoring and drift monitoring share one read of each shard;
    the commit's independent row count reads two small columns, never the pixels."""
    from mlcore.monitor import monitor_partition
    from mlcore.shadow import commit_shadow

    for b in range(3):  # shards of 1,000 images: much larger than Parquet's footer read
        _curate(lake, settings, n=1000, labeled=100, batch=f"batch-{b}")
    rt = _counting_runtime(settings)
    run = _run(challenger=CHALLENGER)
    result = score_run(rt, run, model=model, challenger_model=_other_model())
    commit_shadow(rt, run, scored=result.scored, shards=result.shards)
    monitor_partition(rt, run, scored=result.scored, model=model)

    assert len(result.shards) == 3 and result.commit.rows == 3 * 900
    for shard in result.shards:
        size = (lake.root / shard).stat().st_size
        # One read with the pixels (scoring, shadow and monitoring share it) and the
        # count's read of the selection columns, not the pixels.
        pixels, columns = sorted(rt.lake.shard_opens(shard), reverse=True)
        assert pixels > size / 2 and 0 < columns < size / 4
    assert rt.lake.pixel_reads(result.shards) == dict.fromkeys(result.shards, 1)
    partition_reads = {k for k in rt.lake.reads if k.startswith(PARTITION)}
    assert len(partition_reads) == 3 and all(rt.lake.reads[k] == 1 for k in partition_reads)


def test_the_drift_folded_from_the_shard_profiles_equals_the_whole_partitions(lake, settings, rt,
                                                                             model):
    """The night's histograms as the scoring tasks return them add up to the histograms of
    the committed partition's probabilities and of the scored images' pixels (what drift
    monitoring used to re-read), so the drift figures are unchanged."""
    import pyarrow.compute as pc

    from mlcore.data import load_fashion_mnist, read_shard, shard_pixels
    from mlcore.drift_profile import Profile, image_means
    from mlcore.monitor import compare, monitor_partition

    holdout, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    _curate(lake, settings, labeled=30, images=holdout[:300], batch="b1")
    _curate(lake, settings, labeled=0, images=holdout[300:500] // 2, batch="b2")
    _curate(lake, settings, labeled=0, images=holdout[500:520], batch="later",
            when=END + timedelta(hours=2))
    result = score_run(rt, _run(), model=model)
    report = monitor_partition(rt, _run(), scored=result.scored, model=model)

    probs = read_partition(lake, START.date(), columns=["probabilities"]).column("probabilities")
    whole = Profile.of(np.asarray(probs.combine_chunks().flatten()).reshape(-1, 10), [])
    for shard in input_shards(rt, _run()):
        table = read_shard(lake, shard, ["pixels", "label", "ingested_at"])
        ts = table.column("ingested_at")
        keep = pc.and_(pc.and_(pc.greater_equal(ts, START), pc.less(ts, END)),
                       pc.is_null(table.column("label")))
        pixels = shard_pixels(table.filter(keep))
        whole += Profile.of(np.zeros((0, 10), np.float32), image_means(pixels))
    assert report.scored == whole and whole.rows == 270 + 200
    expected = compare(report.baseline, whole, settings.drift_threshold)
    assert (report.class_psi, report.confidence_js, report.intensity_psi) == (
        expected.class_psi, expected.confidence_js, expected.intensity_psi)


def test_a_run_and_its_shard_results_cross_xcom_whole(lake, settings, rt, model, tmp_path):
    """Tasks pass the dataclasses themselves: Airflow's serde, with the project's
    airflow.cfg allow-list, gives back a ScoringRun and ScoredShards with their nested
    records (not dicts)."""
    import pickle
    import subprocess
    import sys

    import pendulum

    from mlcore.airflow_local import airflow_env

    _curate(lake, settings)
    start = pendulum.datetime(2026, 11, 22, 3, tz="UTC")
    run = _run(window=ScoringWindow.resolve(start, start.add(days=1)), challenger=CHALLENGER)
    [scored] = score_shards(rt, run, model=model, challenger_model=model).scored
    (tmp_path / "records.pkl").write_bytes(pickle.dumps([run, scored, None]))
    code = ("import json, pickle, sys\n"
            "from airflow.sdk.serde import deserialize, serialize\n"
            "records = pickle.loads(open(sys.argv[1], 'rb').read())\n"
            "back = deserialize(json.loads(json.dumps(serialize(records))))\n"
            "assert back == records, (back, records)\n"
            "print(type(back[0].window).__name__, type(back[1].profile).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "records.pkl")],
                          env=airflow_env(settings), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ScoringWindow", "Profile"]


def test_images_curated_twice_are_published_once_and_the_night_commits(lake, settings, rt,
                                                                       model, caplog):
    """An old lake (curated before image-id claims) holds 4 images in two committed shards:
    scored through the DAG's steps, the night still commits, each image once (from the first
    shard in key order), and the warning gives the count and the repair."""
    import logging

    from deltalake import DeltaTable

    from mlcore.shadow import commit_shadow
    from mlcore.storage import table_location

    images = np.random.default_rng(7).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    first, second = [[CuratedRow(f"img-{i}", images[i].tobytes(), f"landing/{b}/{i}.png", None)
                      for i in ids] for b, ids in (("b1", range(6)), ("b2", range(2, 6)))]
    write_shards(lake, second, "b2", ingested_at=DAY, shard_rows=settings.shard_rows)
    write_shards(lake, first, "b1", ingested_at=DAY, shard_rows=settings.shard_rows)
    run = _run(challenger=CHALLENGER)
    shards = input_shards(rt, run)  # the DAG's steps: list, score each shard, commit
    scored = [score_shard(rt, run, shard=s, model=model, challenger_model=_other_model())
              for s in reversed(shards)]  # mapped tasks finish in any order
    with caplog.at_level(logging.WARNING, logger="mlcore.predictions"):
        committed = commit(rt, run, scored=scored, shards=shards)
        commit_shadow(rt, run, scored=scored, shards=shards)
    assert committed.rows == 6 and committed.metadata["duplicates_dropped"] == 4
    assert "4 rows dropped" in caplog.text and "mlcore ingest repair" in caplog.text
    for table_name in ("predictions", "predictions_shadow"):  # what a consumer reads
        rows = DeltaTable(table_location(lake, table_name).uri).to_pyarrow_table().to_pydict()
        assert sorted(rows["image_id"]) == [f"img-{i}" for i in range(6)]
        assert set(rows["batch_id"]) == {"b1"}  # batch=b1 sorts before batch=b2
    assert read_partition(lake, START.date()).num_rows == 6
    again = commit(rt, run, scored=scored, shards=shards)  # a retried commit task
    assert again.version == committed.version and again.files == committed.files


def test_a_part_rewritten_without_duplicates_is_still_found_by_its_shard(lake, settings, rt,
                                                                         model):
    """Realized accuracy finds a night's rows by the shard they were scored from: a part that
    lost some rows to an earlier shard's copies is rewritten and must still be found."""
    from mlcore.predictions import scan_shards

    images = np.random.default_rng(8).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    first, second = [[CuratedRow(f"img-{i}", images[i].tobytes(), f"landing/{b}/{i}.png", None)
                      for i in ids] for b, ids in (("b1", range(4)), ("b2", range(2, 6)))]
    write_shards(lake, first, "b1", ingested_at=DAY, shard_rows=settings.shard_rows)
    write_shards(lake, second, "b2", ingested_at=DAY, shard_rows=settings.shard_rows)
    run = _run()
    shards = input_shards(rt, run)
    scored = [score_shard(rt, run, shard=s, model=model) for s in shards]
    committed = commit(rt, run, scored=scored, shards=shards)
    assert committed.rows == 6 and committed.metadata["duplicates_dropped"] == 2
    b2 = [s for s in shards if "b2" in s]
    found = scan_shards(lake, b2, columns=["image_id"]).column("image_id").to_pylist()
    assert sorted(found) == ["img-4", "img-5"]


def test_a_shards_pixels_are_scored_from_the_read_buffer_not_a_copy():
    """A 50,000-row shard's pixels are 40 MB: ``shard_pixels`` views Arrow's buffer (a copy
    put the scoring task over its memory goal), and still joins a table of several chunks."""
    import pyarrow as pa

    from mlcore.data import shard_pixels
    from mlcore.task import default_task

    spec = default_task()
    images = np.random.default_rng(3).integers(0, 256, (6, *spec.shape), dtype=np.uint8)
    column = pa.array([i.tobytes() for i in images], pa.binary(spec.pixel_bytes))
    one_chunk = pa.table({"pixels": column})
    before = pa.total_allocated_bytes()
    pixels = shard_pixels(one_chunk, spec)
    assert pa.total_allocated_bytes() == before  # nothing allocated: a view
    assert (pixels == images).all()
    several = pa.table({"pixels": pa.chunked_array([column[:2], column[2:]])})
    assert (shard_pixels(several, spec) == images).all()
