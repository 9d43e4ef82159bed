"""Ingestion probed as an attacker and as a busy site would: poison batches, hostile names,
bad labels rows, changes after ingestion, large files, kills and concurrent duplicates."""

import json
import os
import resource
import signal
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mlcore.claims import Claims, open_claims
from mlcore.data import (
    CuratedRow,
    count_labeled,
    labeled_curated,
    list_shards,
    read_shard,
    shards_for_dates,
    stage_shards,
)
from mlcore.images import encode_png
from mlcore.ingest import (
    BatchRejected,
    BatchReport,
    ingest_batch,
    ledger_key,
    mean_intensity,
    parse_labels,
    ready_batches,
)
from mlcore.layout import CURATED_LABELS
from mlcore.storage import LocalLake
from mlcore.validation import ValidationFailed
from tests.concurrency import run_together
from tests.conftest import DAY


def _img(seed: int, high: int = 150) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, high, (28, 28), dtype=np.uint8))


def _drop(lake, batch_id, files: dict[str, bytes], labels: bytes | str | None = None):
    for name, data in files.items():
        lake.write_bytes(f"landing/{batch_id}/{name}", data)
    if labels is not None:
        lake.write_bytes(f"landing/{batch_id}/labels.csv",
                         labels.encode() if isinstance(labels, str) else labels)
    lake.write_bytes(f"landing/{batch_id}/_READY", b"")


def _ledger(lake, batch_id) -> BatchReport:
    return BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))


def _curated_ids(lake) -> list[str]:
    return [i for k in list_shards(lake) for i in read_shard(lake, k, ["image_id"]).column("image_id").to_pylist()]


def _in_child(fn) -> int:
    """Run ``fn`` in a forked process; its wait status (a SIGKILL shows as such)."""
    [status] = run_together(fn)
    return status


# --- 7: no poison batch -------------------------------------------------------------------


@pytest.mark.parametrize("batch_id", ["x" * 250, "bad id!", "-starts-with-dash"])
def test_invalid_batch_id_gets_one_ledger_entry_and_is_not_retried(lake, settings, batch_id):
    _drop(lake, batch_id, {"a.png": _img(1)})
    assert ready_batches(lake) == [batch_id]
    with pytest.raises(BatchRejected, match="invalid_batch_id"):
        ingest_batch(settings, lake, batch_id, logical_date=DAY)
    report = _ledger(lake, batch_id)
    assert (report.status, report.reason, report.files, report.quarantined) == (
        "rejected", "invalid_batch_id", 1, 1)
    assert lake.list("validation") == []  # checked before anything else is written
    assert ready_batches(lake) == []
    with pytest.raises(BatchRejected):  # a cleared task fails the same way, once more
        ingest_batch(settings, lake, batch_id, logical_date=DAY)


def test_superscript_and_non_ascii_digits_are_unknown_labels_not_crashes(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(4)}
    _drop(lake, "b1", files, labels="filename,label\n0.png,²\n1.png,٣\n2.png,０\n3.png,3\n")
    report = ingest_batch(settings.model_copy(update={"max_reject_rate": 0.9}), lake, "b1", logical_date=DAY)
    assert {r.key.split("/")[-1]: r.reason for r in report.rejections} == {
        "0.png": "unknown_label", "1.png": "unknown_label", "2.png": "unknown_label"}
    assert read_shard(lake, report.shards[0], ["label"]).column("label").to_pylist() == [3]


def test_symlink_in_a_batch_is_an_unsafe_entry_never_read(lake, settings, tmp_path):
    (tmp_path / "secret.png").write_bytes(_img(9))
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2)})
    (lake.root / "landing/b1/link.png").symlink_to(tmp_path / "secret.png")
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert [(r.key, r.reason) for r in report.rejections] == [("landing/b1/link.png", "unsafe_entry")]
    assert (report.files, report.accepted) == (3, 2)
    assert not lake.list("quarantine/b1/files")  # recorded, never copied
    assert ready_batches(lake) == []


# --- 3: labels row by row -------------------------------------------------------------------


def test_one_bad_labels_row_costs_that_row_only(lake, settings):
    files = {f"img-{i}.png": _img(i) for i in range(8)}
    rows = [f"img-{i}.png,{i}" for i in range(8)]
    rows[2] = 'img-2.png,"Coat"x'
    rows[5] = "img-5.png,Sandal\xff"
    raw = "\n".join(rows).encode().replace("Sandal\xc3\xbf".encode("latin-1"), b"Sandal\xff") + b"\n"
    _drop(lake, "b1", files, labels=raw)
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert report.labeled == 6 and report.accepted == 8
    # no header: line numbers are the file's own
    assert [(i.key, i.reason) for i in report.label_issues] == [
        ("labels.csv:3", "labels_malformed"), ("labels.csv:6", "labels_encoding")]


def test_unreadable_labels_file_rejects_the_batch_with_a_reason(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(3)}
    _drop(lake, "b1", files, labels="filename,label\n0.png,Bag\n".encode("utf-16"))
    with pytest.raises(BatchRejected, match="labels_unreadable"):
        ingest_batch(settings, lake, "b1", logical_date=DAY)
    report = _ledger(lake, "b1")
    assert (report.status, report.reason, report.accepted, report.quarantined) == (
        "rejected", "labels_unreadable", 0, 3)
    assert lake.read_bytes("quarantine/b1/files/labels.csv") == lake.read_bytes("landing/b1/labels.csv")
    assert _curated_ids(lake) == [] and ready_batches(lake) == []


def test_a_later_batch_labels_images_already_curated_for_training(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(4)}
    _drop(lake, "unlabeled", files)
    ingest_batch(settings, lake, "unlabeled", logical_date=DAY)
    assert count_labeled(lake) == 0
    _drop(lake, "labels", {"x0.png": files["0.png"], "x1.png": files["1.png"]},
          labels="filename,label\nx0.png,0\nx1.png,Bag\n")
    report = ingest_batch(settings, lake, "labels", logical_date=DAY)
    assert (report.duplicates, report.relabeled, report.summary()["labeled"]) == (2, 2, 2)
    assert report.label_shards and report.label_shards[0].startswith(CURATED_LABELS + "/")
    assert count_labeled(lake) == 2
    x, y, used = labeled_curated(lake)
    assert sorted(y.tolist()) == [0, 8] and len(x) == 2 and report.label_shards[0] in used
    assert len(_curated_ids(lake)) == 4  # each image still has one curated row


def test_a_200k_row_labels_file_with_problems_keeps_the_ledger_small(lake, settings):
    rows = "".join(f"ghost-{i}.png,Bag\n" for i in range(200_000))
    _drop(lake, "b1", {"a.png": _img(1)}, labels="filename,label\na.png,Bag\n" + rows)
    ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert len(lake.read_bytes(ledger_key("b1"))) < 100_000
    report = _ledger(lake, "b1")
    assert report.label_issue_counts == {"label_for_missing_file": 200_000}
    reasons = json.loads(lake.read_bytes("quarantine/b1/_reasons.json"))
    assert len(reasons) == 200_000  # the quarantine record keeps every issue


# --- 5: every object accounted for ----------------------------------------------------------


def test_names_like_lake_internals_are_accounted_for_and_never_collide(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(3)}
    files[".tmp-hidden.png"] = _img(7)
    files["_reasons.json"] = b'{"not": "an image"}' * 5
    _drop(lake, "b1", files)
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert report.files == 5 and report.accepted == 4 and report.quarantined == 1
    assert lake.read_bytes("quarantine/b1/files/_reasons.json") == files["_reasons.json"]
    [reason] = json.loads(lake.read_bytes("quarantine/b1/_reasons.json"))
    assert reason["key"] == "landing/b1/_reasons.json" and reason["copy"].endswith("files/_reasons.json")


# --- 9: the smaller points ------------------------------------------------------------------


def test_drift_rule_needs_a_minimum_batch_size():
    assert mean_intensity([250.0, 251.0, 249.0], 72.94) == pytest.approx(72.94)
    assert mean_intensity([250.0] * 20, 72.94) == 250.0


def test_a_small_dark_batch_is_not_rejected_as_drift(lake, settings):
    _drop(lake, "dark", {f"{i}.png": _img(i, high=8) for i in range(3)})
    assert ingest_batch(settings, lake, "dark", logical_date=DAY).accepted == 3


def test_reject_rate_counts_duplicates_in_the_batch_size(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(10)}
    _drop(lake, "first", files)
    ingest_batch(settings, lake, "first", logical_date=DAY)
    _drop(lake, "again", {**files, "junk.png": b"not an image" * 9})
    report = ingest_batch(settings, lake, "again", logical_date=DAY)  # 1 bad of 11 files: 9%, not 100%
    assert (report.status, report.duplicates, report.quarantined) == ("ingested", 10, 1)


def test_labels_without_header_keep_their_line_numbers():
    _, issues = parse_labels(b"a.png,1\nghost.png,2\n", {"a.png"})
    assert [(i.key, i.reason) for i in issues] == [("labels.csv:2", "label_for_missing_file")]


# --- 4: changes after ingestion -------------------------------------------------------------


@pytest.mark.parametrize("change", ["add", "replace", "append"])
def test_every_change_to_a_ledgered_batch_is_found_by_discovery(lake, settings, change, caplog):
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2)})
    first = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert ready_batches(lake) == []
    path = lake.root / "landing/b1/b.png"
    if change == "add":
        lake.write_bytes("landing/b1/late.png", _img(3))
    elif change == "replace":
        path.unlink()
        path.write_bytes(_img(4))
    else:
        with path.open("ab") as fh:
            fh.write(b"more")
    assert ready_batches(lake) == ["b1"]  # no retry needed to notice

    class CountingLake(LocalLake):
        reads: list = []

        def read_chunks(self, key, chunk=1 << 20):
            self.reads.append(key)
            return super().read_chunks(key, chunk)

    conflict = ingest_batch(settings, CountingLake(lake.root), "b1", logical_date=DAY)
    assert conflict.status == "conflict" and "changed after ingestion" in caplog.text
    changed = "landing/b1/late.png" if change == "add" else "landing/b1/b.png"
    assert [(r.key, r.reason) for r in conflict.rejections] == [
        (changed, "added" if change == "add" else "changed")]
    assert CountingLake.reads == [changed]  # only what changed is hashed again
    assert [k for k in lake.list("_state/conflicts") if k.startswith("_state/conflicts/b1-")]
    assert _ledger(lake, "b1") == first and len(_curated_ids(lake)) == 2
    assert ready_batches(lake) == []  # recorded once


def test_a_file_appended_while_the_batch_is_ingested_is_found_next_run(lake, settings):
    _drop(lake, "b1", {"a.png": _img(1), "b.png": _img(2)})

    class AppendingLake(LocalLake):
        def read_bytes(self, key):
            data = super().read_bytes(key)
            if key == "landing/b1/b.png" and not getattr(self, "done", False):
                self.done = True
                with (self.root / key).open("ab") as fh:
                    fh.write(b"late bytes")
            return data

    ingest_batch(settings, AppendingLake(lake.root), "b1", logical_date=DAY)
    assert ready_batches(lake) == ["b1"]
    assert ingest_batch(settings, lake, "b1", logical_date=DAY).status == "conflict"


# --- 6: size before bytes -------------------------------------------------------------------


def _peak_rss_of_ingest(lake_root: Path, settings, batch_id: str) -> int:
    r, w = os.pipe()

    def child():
        os.close(r)
        ingest_batch(settings, LocalLake(lake_root), batch_id, logical_date=DAY)
        os.write(w, str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).encode())

    assert _in_child(child) == 0
    os.close(w)
    with os.fdopen(r) as fh:
        return int(fh.read()) * 1024


def test_large_files_are_sized_from_metadata_and_never_held_or_copied(lake, settings):
    _drop(lake, "small", {f"{i}.png": _img(i) for i in range(3)})
    _drop(lake, "large", {f"{i}.png": _img(10 + i) for i in range(3)})
    for i in range(3):
        with (lake.root / f"landing/large/huge-{i}.png").open("wb") as fh:
            fh.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    small = _peak_rss_of_ingest(lake.root, settings, "small")
    large = _peak_rss_of_ingest(lake.root, settings, "large")
    assert large - small < 100 * 2**20, (small, large)
    report = _ledger(lake, "large")
    assert sorted(r.reason for r in report.rejections) == ["too_large"] * 3
    assert not lake.list("quarantine/large/files")
    reasons = json.loads(lake.read_bytes("quarantine/large/_reasons.json"))
    assert {r["copy"] for r in reasons} == {None} and str(1 << 30) in reasons[0]["detail"]


# --- 2 and 1: claims, atomic commit, kills --------------------------------------------------


def test_orphan_shard_of_a_killed_attempt_is_not_trusted_nor_a_duplicate(lake, settings):
    files = {f"{i}.png": _img(i) for i in range(5)}
    _drop(lake, "b1", files)
    # What a killed attempt leaves: a part written, nothing committed.
    import hashlib

    rows = [CuratedRow(hashlib.sha256(d).hexdigest(), bytes(784), f"landing/b1/{n}", None)
            for n, d in files.items()]
    stage_shards(lake, rows, "b1", ingested_at=DAY, shard_rows=2)
    assert list_shards(lake) == [] and shards_for_dates(lake, ["2026-11-22"]) == []
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert (report.status, report.accepted, report.duplicates) == ("ingested", 5, 0)
    assert sorted(_curated_ids(lake)) == sorted(r.image_id for r in rows)


KILL_POINTS = {
    "mid_profiling": lambda op, key, n: op == "read" and key.startswith("landing/") and n["read"] == 4,
    "after_first_shard": lambda op, key, n: op == "wrote" and key.endswith("part-00000.parquet"),
    "after_last_shard": lambda op, key, n: op == "wrote" and key.endswith("part-00002.parquet"),
    # The ledger entry is the batch's commit: killed just before it, and just after it.
    "before_commit": lambda op, key, n: op == "write" and key.startswith("_state/ingest/"),
    "after_commit": lambda op, key, n: op == "wrote" and key.startswith("_state/ingest/"),
}


class KillingLake(LocalLake):
    """A local lake whose process is SIGKILLed at one point of ingestion (no cleanup runs)."""

    def __init__(self, root, point):
        super().__init__(root)
        self.point, self.n = KILL_POINTS[point], {"read": 0}

    def _maybe_die(self, op, key):
        if self.point(op, key, self.n):
            os.kill(os.getpid(), signal.SIGKILL)

    def read_bytes(self, key):
        self.n["read"] += key.startswith("landing/")
        self._maybe_die("read", key)
        return super().read_bytes(key)

    def write_bytes(self, key, data):
        self._maybe_die("write", key)
        super().write_bytes(key, data)
        self._maybe_die("wrote", key)


def _readers_see(lake, settings) -> dict:
    """What every reader of curated data sees: training, scoring, the counters, the ledger."""
    from mlcore import label_index

    return {"ids": sorted(_curated_ids(lake)), "shards": list_shards(lake),
            "day": shards_for_dates(lake, ["2026-11-22"]), "labeled": count_labeled(lake),
            "indexed": label_index.labeled_count(settings, lake),
            "ledgered": lake.exists(ledger_key("b1"))}


NOTHING = {"ids": [], "shards": [], "day": [], "labeled": 0, "indexed": 0, "ledgered": False}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_matrix_a_retry_commits_exactly_the_batch(lake, settings, point):
    settings = settings.model_copy(update={"shard_rows": 4})
    files = {f"{i:02d}.png": _img(i) for i in range(10)}  # 3 shards of at most 4
    _drop(lake, "b1", files, labels="00.png,3\n01.png,5\n02.png,7\n")
    status = _in_child(lambda: ingest_batch(settings, KillingLake(lake.root, point), "b1", logical_date=DAY))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert ready_batches(lake) == ["b1"]
    before = _readers_see(lake, settings)
    if point == "after_commit":  # committed: every reader sees the whole batch already
        assert len(before["ids"]) == 10 and len(before["shards"]) == 3 and before["labeled"] == 3
        assert before["indexed"] == 3 and before["ledgered"]
    else:  # not committed: no reader sees any of it
        assert before == NOTHING
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)  # the retry
    assert (report.status, report.accepted, report.duplicates, len(report.shards)) == (
        "ingested", 10, 0, 3)
    after = _readers_see(lake, settings)
    assert len(after["ids"]) == len(set(after["ids"])) == 10 and after["labeled"] == 3
    assert after["shards"] == sorted(report.shards) and after["indexed"] == 3
    if point == "after_commit":
        assert after == before
    assert open_claims(settings).owned_by("b1") == set(after["ids"])
    assert sorted(lake.list("curated")) == sorted(report.shards)  # no leftovers, no folder records
    assert ready_batches(lake) == []


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_labels_for_curated_images_and_their_feedback_follow_the_commit(lake, settings, point):
    """A batch that labels images curated earlier: its label shards and the feedback file
    monitoring folds appear with its commit, never before; a retry after the commit writes
    the feedback the kill cut off."""
    from mlcore.layout import feedback_key

    files = {f"{i}.png": _img(i) for i in range(4)}
    _drop(lake, "b0", files)
    ingest_batch(settings, lake, "b0", logical_date=DAY)
    _drop(lake, "b1", files, labels="0.png,1\n1.png,2\n")
    status = _in_child(lambda: ingest_batch(settings, KillingLake(lake.root, point), "b1", logical_date=DAY))
    assert os.WIFSIGNALED(status) and not lake.exists(feedback_key("b1"))
    assert count_labeled(lake) == (2 if point == "after_commit" else 0)
    assert list_shards(lake, CURATED_LABELS) == (_ledger(lake, "b1").label_shards
                                                 if point == "after_commit" else [])
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert (report.relabeled, count_labeled(lake)) == (2, 2)
    feedback = read_shard(lake, feedback_key("b1"), ["image_id", "label"]).to_pydict()
    assert sorted(feedback["label"]) == [1, 2]


def test_a_new_run_after_a_kill_before_the_commit_commits_the_batch_once(lake, settings):
    from datetime import timedelta

    files = {f"{i:02d}.png": _img(i) for i in range(6)}
    _drop(lake, "b1", files)
    status = _in_child(lambda: ingest_batch(settings, KillingLake(lake.root, "before_commit"), "b1", logical_date=DAY))
    assert os.WIFSIGNALED(status) and _curated_ids(lake) == []
    report = ingest_batch(settings, lake, "b1", logical_date=DAY + timedelta(days=1))  # not a retry: a new run
    ids = _curated_ids(lake)
    assert report.accepted == 6 and len(ids) == len(set(ids)) == 6
    assert shards_for_dates(lake, ["2026-11-22"]) == [] and not lake.list("curated/images/dt=2026-11-22")


def test_a_batch_an_older_version_killed_after_its_folder_commit_record_is_committed_once(
        lake, settings):
    """Before the ledger was the commit, each curated folder had its own commit record, and a
    kill before the ledger left the batch's shards visible. Such a lake stays readable; the
    batch, still due, is then committed exactly once and its folder records go."""
    import hashlib

    from mlcore.data import commit_shards
    from mlcore.layout import COMMIT_FILE

    files = {f"{i}.png": _img(i) for i in range(5)}
    _drop(lake, "b1", files)
    rows = [CuratedRow(hashlib.sha256(d).hexdigest(), bytes(784), f"landing/b1/{n}", None)
            for n, d in files.items()]
    keys = stage_shards(lake, rows, "b1", ingested_at=DAY, shard_rows=2)
    commit_shards(lake, keys, "b1", ingested_at=DAY)  # what the older version committed
    assert list_shards(lake) == keys and ready_batches(lake) == ["b1"]
    report = ingest_batch(settings, lake, "b1", logical_date=DAY)
    assert (report.accepted, report.duplicates) == (5, 0)
    assert sorted(_curated_ids(lake)) == sorted(r.image_id for r in rows)
    assert list_shards(lake) == report.shards
    assert not [k for k in lake.list("curated") if k.endswith(COMMIT_FILE)]


class FailingLake(LocalLake):
    """A local lake whose disk fails when the first curated part is written (after claims)."""

    def write_bytes(self, key, data):
        if key.startswith("curated/"):
            raise OSError("disk gone")
        super().write_bytes(key, data)


def test_an_error_ledgered_as_ingest_error_releases_its_claims(lake, settings):
    """A batch that failed on every try never commits: the images it had claimed are
    accepted by the next batch that brings them, not counted as its duplicates."""
    from mlcore.ingest_steps import IngestFailedEveryTry, ingest_ready_batch
    from mlcore.runtime import runtime_for

    files = {f"{i}.png": _img(i) for i in range(4)}
    _drop(lake, "broken", files)
    rt = runtime_for(settings)
    vars(rt)["lake"] = FailingLake(lake.root)  # the runtime's cached lake
    with pytest.raises(IngestFailedEveryTry, match="disk gone"):
        ingest_ready_batch(rt, "broken", logical_date=DAY, last_try=True)
    assert _ledger(lake, "broken").reason == "ingest_error"
    assert open_claims(settings).owned_by("broken") == set() and _curated_ids(lake) == []
    _drop(lake, "again", files)
    assert ingest_batch(settings, lake, "again", logical_date=DAY).accepted == 4


def test_quarantine_reprocess_after_a_kill_accepts_the_batch(lake, settings):
    from mlcore.ingest import reprocess

    files = {f"{i}.png": _img(i) for i in range(4)}
    _drop(lake, "b1", {**files, "junk.png": b"junk" * 30, "junk2.png": b"junk2" * 30,
                       "junk3.png": b"junk3" * 30, "junk4.png": b"junk4" * 30,
                       "junk5.png": b"junk5" * 30})
    with pytest.raises(ValidationFailed):
        ingest_batch(settings, lake, "b1", logical_date=DAY)
    reprocess(lake, "b1", actor="carol", at=DAY, reason="limit raised")
    looser = settings.model_copy(update={"max_reject_rate": 0.9})
    status = _in_child(lambda: ingest_batch(looser, KillingLake(lake.root, "before_commit"), "b1", logical_date=DAY))
    assert os.WIFSIGNALED(status)
    report = ingest_batch(looser, lake, "b1", logical_date=DAY)
    assert (report.accepted, report.duplicates, report.quarantined) == (4, 0, 5)


def _ingest_fresh(root: Path, settings, batch_id: str) -> None:
    ingest_batch(settings, LocalLake(root), batch_id, logical_date=DAY)  # its own lake, as a worker has


def test_two_batches_with_shared_images_ingested_at_once_never_both_accept(settings, tmp_path):
    shared = {f"s{i}.png": _img(100 + i) for i in range(6)}
    for round_no in range(10):
        home = tmp_path / f"round-{round_no}"
        s = settings.model_copy(update={"home": home})
        lake = LocalLake(home / "lake")
        for b in ("left", "right"):
            _drop(lake, b, {**shared, f"{b}-own.png": _img(200 + round_no + (b == "left") * 50)})
        statuses = run_together(*(partial(_ingest_fresh, lake.root, s, b)
                                  for b in ("left", "right")))
        assert statuses == [0, 0]
        ids = _curated_ids(lake)
        assert len(ids) == len(set(ids)) == 8, round_no
        left, right = _ledger(lake, "left"), _ledger(lake, "right")
        assert left.accepted + right.accepted == 8 and left.duplicates + right.duplicates == 6


def test_repair_removes_duplicates_an_old_lake_let_in(lake, settings, monkeypatch):
    """A lake written before claims: two batches curated the same images (the old race), and
    their shards have no folder commit records (their ledger entries commit them);
    ``mlcore ingest repair`` removes the duplicates, once."""
    from mlcore.cli import main
    from mlcore.layout import COMMIT_FILE

    shared = {f"s{i}.png": _img(300 + i) for i in range(3)}
    for b, own in (("old-a", _img(400)), ("old-b", _img(401))):
        _drop(lake, b, {**shared, f"{b}.png": own})
        ingest_batch(settings, lake, b, logical_date=DAY)
    open_claims(settings).release("old-a")
    open_claims(settings).release("old-b")
    # Rebuild what the old code wrote: old-b accepted the shared images too, no commit records.
    import hashlib

    rows = [CuratedRow(hashlib.sha256(d).hexdigest(), bytes(784), f"landing/old-b/{n}", None)
            for n, d in {**shared, "old-b.png": _img(401)}.items()]
    from mlcore.data import write_shards

    report_b = _ledger(lake, "old-b")
    report_b.shards = write_shards(lake, rows, "old-b", ingested_at=DAY, shard_rows=settings.shard_rows)
    report_b.accepted, report_b.duplicates, report_b.duplicate_keys = 4, 0, []
    from mlcore.ingest import _dump

    lake.write_bytes(ledger_key("old-b"), _dump(report_b))
    for key in lake.list("curated"):
        if key.endswith(COMMIT_FILE):
            lake.delete(key)
    ids = _curated_ids(lake)  # legacy shards are still read through their ledgers
    assert len(ids) == 8 and len(set(ids)) == 5
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    assert main(["ingest", "repair", "--json"]) == 0
    ids = _curated_ids(lake)
    assert len(ids) == len(set(ids)) == 5
    assert (_ledger(lake, "old-b").accepted, _ledger(lake, "old-b").duplicates) == (1, 3)
    assert list_shards(lake) == sorted(_ledger(lake, "old-a").shards + _ledger(lake, "old-b").shards)
    _drop(lake, "new", {"again.png": shared["s0.png"]})
    assert ingest_batch(settings, lake, "new", logical_date=DAY).duplicates == 1  # claims now cover the lake


def _claim_in_fresh_process(url: str, batch_id: str) -> None:
    assert Claims(url).claim(batch_id, [f"{batch_id}-{i}" for i in range(3)]) == {}


def test_processes_that_race_to_create_the_claims_table_all_claim(tmp_path):
    """The first batches of a deployment open a claims database nobody has created yet,
    at the same moment: each must get its claims, none a 'table already exists'."""
    for round_no in range(15):
        url = f"sqlite:///{tmp_path / f'claims-{round_no}.db'}"
        batches = [f"b{round_no}-{k}" for k in range(4)]
        statuses = run_together(*(partial(_claim_in_fresh_process, url, b) for b in batches))
        assert statuses == [0] * len(batches)
        claims = Claims(url)
        assert all(claims.owned_by(b) == {f"{b}-{i}" for i in range(3)} for b in batches)
