"""Per-run work that does not grow with history: discovery, counters, realized accuracy."""

import json

import numpy as np

from mlcore.images import encode_png
from mlcore.ingest import listing_hash, ready_batches
from mlcore.layout import SEEN, ledger_key
from mlcore.storage import LocalLake, ObjectInfo


def _img(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 150, (28, 28), dtype=np.uint8))


class ListingLake(LocalLake):
    """Records every listing discovery asks for."""

    def __init__(self, root):
        super().__init__(root)
        self.listed: list[str] = []

    def list_info(self, prefix):
        self.listed.append(prefix)
        return super().list_info(prefix)


def _info(lake, path) -> ObjectInfo:
    st = path.stat()  # as LocalLake.list_info lists it
    return ObjectInfo(path.relative_to(lake.root).as_posix(), st.st_size,
                      f"{st.st_mtime_ns}-{st.st_ino}")


def _ingested(lake, n: int) -> None:
    """``n`` batches as ingestion leaves them (landing files, ledger, seen fingerprint),
    written directly: discovery reads nothing else."""
    for i in range(n):
        batch = f"old-{i:05d}"
        folder = lake.root / "landing" / batch
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(b"x")
        (folder / "_READY").write_bytes(b"")
        fp = listing_hash([_info(lake, folder / "_READY"), _info(lake, folder / "a.png")])
        (lake.root / ledger_key(batch)).parent.mkdir(parents=True, exist_ok=True)
        (lake.root / ledger_key(batch)).write_text(json.dumps({"batch_id": batch}))
        (lake.root / SEEN / batch).mkdir(parents=True)
        (lake.root / SEEN / batch / fp).write_bytes(b"")


def test_discovery_ignores_a_batch_without_ready_among_thousands_ingested(lake):
    _ingested(lake, 2000)
    lake.write_bytes("landing/uploading/a.png", _img(1))  # no _READY yet
    lake.write_bytes("landing/new/a.png", _img(2))
    lake.write_bytes("landing/new/_READY", b"")
    listing = ListingLake(lake.root)
    assert ready_batches(listing, tick=7) == ["new"]
    # Objects listed: the two batches the ledger does not know and one ledgered batch.
    batch_listings = [p for p in listing.listed if p.startswith("landing/")]
    assert sorted(batch_listings) == ["landing/new", "landing/old-00007", "landing/uploading"]


def test_a_changed_ledgered_batch_is_found_within_one_round(lake):
    _ingested(lake, 3)
    lake.write_bytes("landing/old-00001/late.png", _img(99))
    assert [ready_batches(lake, tick=t) for t in range(3)] == [[], ["old-00001"], []]
    assert ready_batches(lake, recheck_all=True) == ["old-00001"]


# --- counters and history -----------------------------------------------------------------


def _curate(lake, batch: str, day, n: int, labeled: int, seed: int) -> list[str]:
    """``n`` curated images (the first ``labeled`` with a label) and their ledger entry."""
    from mlcore.data import CuratedRow, write_shards

    rng = np.random.default_rng(seed)
    rows = [CuratedRow(f"{batch}-{i:04d}", rng.integers(0, 255, 784, dtype=np.uint8).tobytes(),
                       f"landing/{batch}/{i}.png", i % 10 if i < labeled else None)
            for i in range(n)]
    shards = write_shards(lake, rows, batch, ingested_at=day, shard_rows=50)
    lake.write_bytes(ledger_key(batch), json.dumps(
        {"batch_id": batch, "status": "ingested", "shards": shards, "label_shards": []}).encode())
    return [r.image_id for r in rows]


def _relabel(lake, batch: str, day, labels: dict[str, int]) -> None:
    """A later batch's labels for curated images, as ingestion records them (label shards
    and a feedback file)."""
    import pyarrow as pa

    from mlcore.data import CuratedRow, commit_shards, stage_shards
    from mlcore.layout import CURATED_LABELS, feedback_key
    from mlcore.storage import parquet_bytes

    rows = [CuratedRow(i, bytes(784), f"landing/{batch}/{i}.png", lab) for i, lab in labels.items()]
    keys = stage_shards(lake, rows, batch, ingested_at=day, shard_rows=100, prefix=CURATED_LABELS)
    commit_shards(lake, keys, batch, ingested_at=day, prefix=CURATED_LABELS)
    lake.write_bytes(ledger_key(batch), json.dumps(
        {"batch_id": batch, "status": "ingested", "shards": [], "label_shards": keys}).encode())
    lake.write_bytes(feedback_key(batch), parquet_bytes(pa.Table.from_pylist(
        [{"image_id": i, "label": lab, "source_key": "", "batch_id": batch, "labeled_at": day}
         for i, lab in labels.items()])))


def _predict(lake, day, ids: list[str], version: str) -> None:
    """Commit partition ``day`` of the predictions table: image k predicted as class k % 10."""
    import pyarrow as pa

    from mlcore.predictions import prediction_schema, replace_partition, write_part

    rows = [{"image_id": i, "source_key": "", "batch_id": "b", "predicted_class": k % 10,
             "predicted_label": "", "confidence": 0.5, "probabilities": [0.1] * 10,
             "model_name": "m", "model_version": version, "model_run_id": "r",
             "scored_at": day, "dag_run_id": "run"} for k, i in enumerate(ids)]
    part = write_part(lake, pa.Table.from_pylist(rows, prediction_schema()), day=day.date(),
                      dag_run_id="run", shard="s")
    replace_partition(lake, day.date(), [part])


def test_label_count_from_the_index_equals_the_full_scan(lake, settings):
    from datetime import timedelta

    from mlcore import label_index
    from mlcore.data import count_labeled
    from tests.conftest import DAY

    first = _curate(lake, "d1", DAY, 120, 30, 1)
    assert label_index.labeled_count(settings, lake) == count_labeled(lake) == 30
    _curate(lake, "d2", DAY + timedelta(days=1), 80, 10, 2)
    # Labels for images curated unlabeled, one already labeled, one labeled twice.
    _relabel(lake, "late-1", DAY + timedelta(days=2), {first[40]: 1, first[41]: 2, first[0]: 3})
    _relabel(lake, "late-2", DAY + timedelta(days=3), {first[40]: 4, first[50]: 5})
    assert label_index.labeled_count(settings, lake) == count_labeled(lake) == 43
    label_index.drop(settings)  # rebuilt from the ledger: the same figure
    assert label_index.labeled_count(settings, lake) == 43


def test_realized_accuracy_after_three_nights_equals_a_full_recomputation(lake):
    from datetime import timedelta

    from mlcore.monitor import REALIZED_STATE, fold_realized, realized_accuracy_full
    from tests.conftest import DAY

    ids = [f"img-{k:03d}" for k in range(60)]
    _predict(lake, DAY, ids[:30], "1")
    _predict(lake, DAY + timedelta(days=1), ids[30:], "2")
    for night, chunk in enumerate([ids[0:25], ids[25:40], ids[40:60]]):
        day = DAY + timedelta(days=2 + night)
        # Right for even positions, wrong for odd ones.
        _relabel(lake, f"fb-{night}", day, {
            i: (ids.index(i) % 10 if n % 2 == 0 else (ids.index(i) + 1) % 10)
            for n, i in enumerate(chunk)})
        folded = fold_realized(lake)
    assert folded == realized_accuracy_full(lake)
    assert folded == {"1": [30, 16], "2": [30, 15]}
    lake.delete(REALIZED_STATE)  # missing state: rebuilt from every feedback file
    assert fold_realized(lake) == folded


def test_a_label_for_an_image_not_scored_yet_counts_once_it_is(lake):
    from datetime import timedelta

    from mlcore.monitor import fold_realized, realized_accuracy_full
    from tests.conftest import DAY

    _relabel(lake, "early", DAY, {"img-0": 0, "img-1": 0})
    _predict(lake, DAY, ["img-0"], "1")
    assert fold_realized(lake) == {"1": [1, 1]}
    _predict(lake, DAY + timedelta(days=1), ["x", "img-1"], "1")  # img-1 predicted 1: wrong
    assert fold_realized(lake) == realized_accuracy_full(lake) == {"1": [2, 1]}


def test_rebuild_index_on_a_lake_from_before_gives_what_the_full_scans_give(
        lake, settings, monkeypatch, capsys):
    from datetime import timedelta

    from mlcore import label_index
    from mlcore.cli import main
    from mlcore.data import count_labeled
    from mlcore.monitor import REALIZED_STATE, fold_realized, realized_accuracy_full
    from tests.conftest import DAY

    # A lake as today's code leaves it: shards, ledgers, feedback, predictions, no index.
    ids = _curate(lake, "d1", DAY, 60, 20, 3)
    _predict(lake, DAY, ids, "1")
    _relabel(lake, "late", DAY + timedelta(days=1), {i: 0 for i in ids[20:40]})
    _ingested(lake, 2)
    lake.write_bytes("landing/old-00000/late.png", _img(5))  # changed after ingestion
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    monkeypatch.delenv("MLCORE_LAKE_URI", raising=False)
    assert main(["ingest", "rebuild-index", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    full = realized_accuracy_full(lake)
    assert count_labeled(lake) == 40
    assert done == {"labeled_images": 40,
                    "realized": {"1": {"labeled_predictions": 20, "right": full["1"][1]}},
                    "batches_due": ["old-00000"], "data_docs_validations": 0}
    assert lake.exists(REALIZED_STATE)
    assert label_index.labeled_count(settings, lake) == 40 and fold_realized(lake) == full


def _score(lake, batch: str, day, ids: list[str], version: str = "1") -> str:
    """Partition ``day`` as scoring commits it: one data file per shard of ``batch``'s day
    (the keys scoring lists); image k predicted as class k % 10. Returns the file's key."""
    import pyarrow as pa

    from mlcore.data import shards_for_dates
    from mlcore.predictions import prediction_schema, replace_partition, write_part

    [shard] = shards_for_dates(lake, [f"{day:%Y-%m-%d}"])
    rows = [{"image_id": i, "source_key": "", "batch_id": batch, "predicted_class": k % 10,
             "predicted_label": "", "confidence": 0.5, "probabilities": [0.1] * 10,
             "model_name": "m", "model_version": version, "model_run_id": "r",
             "scored_at": day, "dag_run_id": "run"} for k, i in enumerate(ids)]
    part = write_part(lake, pa.Table.from_pylist(rows, prediction_schema()), day=day.date(),
                      dag_run_id="run", shard=shard)
    replace_partition(lake, day.date(), [part])
    return part.key


def test_realized_accuracy_through_the_claims_opens_only_the_files_of_the_labeled_batches(
        lake, settings):
    """Issue 15: each night's fold finds its labels' predictions through the claims (image ->
    batch) and the ledger (batch -> shards), equals the full recomputation, and never opens
    a partition whose images got no label."""
    from datetime import timedelta

    import pyarrow as pa
    import pytest

    from mlcore.claims import open_claims
    from mlcore.monitor import fold_realized, realized_accuracy_full
    from tests.conftest import DAY

    claims = open_claims(settings)
    ids, files = {}, {}
    for b in range(4):
        day = DAY + timedelta(days=b)
        ids[b] = _curate(lake, f"b{b}", day, 20, 0, b)
        claims.claim(f"b{b}", ids[b])
        if b < 3:  # b3 is curated but not scored yet
            files[b] = _score(lake, f"b{b}", day, ids[b])

    def labels(b, ks):  # right for even k, wrong for odd k
        return {ids[b][k]: k % 10 if k % 2 == 0 else (k + 1) % 10 for k in ks}

    def night(n, batch_labels):
        _relabel(lake, f"fb-{n}", DAY + timedelta(days=5 + n), batch_labels)
        return fold_realized(lake, claims=claims)

    assert night(0, {**labels(0, range(10)), "never-ingested": 3}) == {"1": [10, 5]}
    assert night(1, {**labels(2, range(10)), **labels(3, range(5))}) == {"1": [20, 10]}
    _score(lake, "b3", DAY + timedelta(days=3), ids[3])  # b3's pending labels count now
    folded = night(2, labels(1, range(10)))
    assert folded == realized_accuracy_full(lake) == {"1": [35, 18]}

    lake.write_bytes(files[1], b"not parquet")  # b1 gets no label tonight: never opened
    with pytest.raises(pa.ArrowInvalid):  # what opening it would do
        realized_accuracy_full(lake)
    assert night(3, labels(0, range(10, 20))) == {"1": [45, 23]}
