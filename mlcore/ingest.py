"""Landing -> curated: every uploaded object ends accepted, quarantined (with a reason) or a
recorded duplicate, and the batch ledger says which. Landing objects are only ever read.

A batch commits once, with one write: its image ids are claimed (``mlcore.claims``), its
parts staged under every prefix (images, labels, holdout), then its ledger entry is written,
and that entry is the commit. It names every part of the batch, and readers (training,
scoring, the counters, the label index, discovery) trust a curated part only if the
batch's ledger entry names it (``mlcore.data.committed_parts``). So shards and ledger entry
become visible together or not at all: a kill before the ledger write leaves parts no
reader trusts and a batch discovery still offers; a kill after it leaves a committed batch
whose retry finds it ingested (and only tidies up: unnamed parts, the seen listing).

Claims and the commit. A claim row is a reservation made before the commit, read only by
ingestion itself (never by training, scoring or the counters). The invariant: every claim
belongs to a batch that either has an ``ingested`` ledger entry naming the image, or has
no ledger entry yet (an attempt running, or a killed one whose batch is still due). A
retry owns its own rows again (``Claims.claim`` reports only other batches' rows), and
releases those it no longer accepts; an attempt that ends rejected releases them all
before its ledger entry, and so does an error ledgered as ``ingest_error``
(:func:`record_failure`). Meanwhile another batch with the same image records it as a
duplicate of the batch that claimed it, which commits it on its retry.

Every failure that no retry can fix ends in a ledger entry with a reason, so a poison
batch is recorded once instead of failing every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING

from mlcore import lineage
from mlcore.batch_ids import batch_id_problem, safe_name
from mlcore.batch_meta import META_FILE, BatchMetaUnreadable, parse_batch_meta
from mlcore.data import (
    CuratedRow,
    drop_unnamed_parts,
    ledger_parts,
    read_shard,
    stage_shards,
    uncommit_shards,
)
from mlcore.images import FORMATS, MAX_SIDE, FileProfile, profile_image
from mlcore.labels import LabelsUnreadable, Rejection, parse_labels
from mlcore.layout import (
    CURATED_HOLDOUT,
    CURATED_IMAGES,
    CURATED_LABELS,
    CURATED_PREFIXES,
    LABELS_FILE,
    LANDING,
    LEDGER,
    READY_MARKER,
    attempts_key,
    commit_key,
    conflict_key,
    feedback_key,
    ingest_files_key,
    ingest_history_key,
    landing_batch,
    landing_file,
    ledger_batch_name,
    ledger_key,
    quarantine_copy_key,
    quarantine_folder,
    quarantine_reasons_key,
    ready_marker,
    seen_folder,
    seen_key,
)
from mlcore.storage import UnsafeKey, check_key
from mlcore.task import TaskSpec, task_of
from mlcore.validation import ValidationFailed, run_suite

if TYPE_CHECKING:
    from mlcore.claims import Claims
    from mlcore.data_profile import DataProfile
    from mlcore.settings import Settings
    from mlcore.storage import Lake, ObjectInfo

__all__ = ["LABELS_FILE", "BatchNotReady", "BatchRejected", "BatchReport", "Rejection",
           "ingest_batch", "ledger_key", "parse_labels", "ready_batches", "reprocess"]

log = logging.getLogger(__name__)

# A batch whose accepted images average further than this from the reference profile's
# mean intensity (the champion's training data; mlcore.data_profile) is drifted input.
INTENSITY_TOLERANCE = 30.0
MIN_JUDGED = 20  # batch rules on labels and intensity need this many images to judge
MAX_LABELS_BYTES = 64 << 20  # a labels.csv for 200k files is ~10 MB
# The batch-level files: accounted for in the content hash, never profiled as images.
BATCH_FILES = (LABELS_FILE, META_FILE)
LEDGER_ISSUES = 100  # label issues kept in the ledger; all of them are in the quarantine record


class BatchNotReady(RuntimeError):
    """The batch has no ``_READY`` marker yet: the upload may still be in progress."""


class BatchRejected(RuntimeError):
    """The batch was rejected as a whole for ``reason`` (recorded in its ledger entry);
    a retry cannot change that. Fix the upload and send it under a new batch id."""

    def __init__(self, batch_id: str, reason: str, detail: str):
        self.batch_id, self.reason, self.detail = batch_id, reason, detail
        super().__init__(f"batch {batch_id!r} rejected: {reason}: {detail}. Upload a corrected "
                         "batch under a new batch id.")


@dataclass
class BatchReport:
    """The ledger entry of one batch: what happened to each of its files, and the counts."""

    batch_id: str
    content_hash: str
    status: str  # ingested | rejected | conflict
    ingested_at: str
    files: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    labeled: int = 0
    shards: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    label_issues: list[Rejection] = field(default_factory=list)
    failed_expectations: list[str] = field(default_factory=list)
    docs_keys: list[str] = field(default_factory=list)
    reason: str = ""  # batch-level reason code when rejected outside the suites
    detail: str = ""
    listing_hash: str = ""
    label_shards: list[str] = field(default_factory=list)
    relabeled: int = 0  # labels supplied for images another batch curated
    label_issue_counts: dict[str, int] = field(default_factory=dict)
    holdout: bool = False  # marked holdout by batch.json: its images are in holdout_shards
    holdout_shards: list[str] = field(default_factory=list)
    drift_check: str = ""  # why the batch drift rule was skipped, when it was
    # Decoded files not already in the task's mode / size, e.g. {"RGB->L": 3, "resized": 2}.
    conversions: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        """Small enough for XCom: counts and ids only."""
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "files": self.files,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "labeled": self.labeled + self.relabeled,
            "shards": len(self.shards) + len(self.holdout_shards),
            "holdout": self.holdout,
        }

    @classmethod
    def from_json(cls, raw: bytes) -> BatchReport:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(raw).items() if k in known}
        for name in ("rejections", "label_issues"):
            data[name] = [Rejection(**r) for r in data.get(name, [])]
        return cls(**data)


# --- discovery ------------------------------------------------------------------------------


def listing_hash(infos: list[ObjectInfo]) -> str:
    """A fingerprint of a batch's listing (keys, sizes, versions): any change shows."""
    h = hashlib.sha256()
    for i in sorted(infos, key=lambda i: i.key):
        h.update(f"{i.key}\0{i.size}\0{i.version}\0{i.unsafe or ''}\n".encode())
    return h.hexdigest()


def _seen(lake: Lake, batch_id: str) -> set[str]:
    """The listing fingerprints of ``batch_id`` already handled (one small listing)."""
    folder = seen_folder(batch_id)
    return {key[len(folder) + 1 :] for key in lake.list(folder)}


def _mark_seen(lake: Lake, batch_id: str, fingerprint: str) -> None:
    lake.write_if_absent(seen_key(batch_id, fingerprint), b"")


def ledgered_names(lake: Lake) -> set[str]:
    """The ``safe_name`` of every batch with a ledger entry: one listing of small names."""
    names = (ledger_batch_name(k) for k in lake.list(LEDGER))
    return {n for n in names if n is not None}


def ready_batches(lake: Lake, tick: int = 0, recheck_all: bool = False) -> list[str]:
    """Batches with a ``_READY`` marker whose current listing was never handled: new batches,
    and ledgered batches whose objects changed since (their task records the conflict).

    A run costs O(new batches), not O(files ever uploaded): one delimiter listing of the
    batch folders (S3 ``CommonPrefixes``), one listing of the ledger's names, then the
    objects of each batch the ledger does not know (new, or still uploading) and of ONE
    ledgered batch, picked round robin by ``tick`` (the DAG passes its run's slot). So a
    change after ingestion is still found, within as many runs as there are ledgered
    batches (a day at 10-minute runs for 144 of them), without listing years of uploads
    every run. ``recheck_all`` re-verifies every ledgered batch at once (``mlcore ingest
    rebuild-index --recheck``)."""
    ledgered = ledgered_names(lake)
    names = lake.list_dirs(LANDING)
    old = [b for b in names if safe_name(b) in ledgered]
    check = [b for b in names if safe_name(b) not in ledgered]
    if recheck_all:
        check += old
    elif old:
        check.append(old[tick % len(old)])
    due = []
    for batch_id in sorted(check):
        prefix = landing_batch(batch_id)
        try:
            check_key(prefix)
        except UnsafeKey:  # its _READY could never be read either
            continue
        infos = lake.list_info(prefix)
        if not any(i.key == ready_marker(batch_id) and not i.unsafe for i in infos):
            continue
        if listing_hash(infos) not in _seen(lake, batch_id):
            due.append(batch_id)
    return due


# --- profiling ------------------------------------------------------------------------------


def _stream_sha256(lake: Lake, key: str) -> str:
    h = hashlib.sha256()
    for block in lake.read_chunks(key):
        h.update(block)
    return h.hexdigest()


def _unsafe_sha(info: ObjectInfo) -> str:
    """Stands in for the content of an entry that is never read."""
    return hashlib.sha256(f"unsafe\0{info.key}\0{info.version}".encode()).hexdigest()


def _profile(lake: Lake, info: ObjectInfo, settings: Settings, task: TaskSpec) -> FileProfile:
    """Size (from the listing) before bytes: a too-large file is hashed as a stream, never
    held; an unsafe entry (symlink, special file, bad key) is never read at all."""
    if info.unsafe:
        return FileProfile(info.key, _unsafe_sha(info), info.size, reason="unsafe_entry",
                           detail=info.unsafe)
    if info.size > settings.max_file_bytes:
        return FileProfile(info.key, _stream_sha256(lake, info.key), info.size, reason="too_large",
                           detail=f"{info.size} bytes > limit {settings.max_file_bytes}")
    data = lake.read_bytes(info.key)
    return profile_image(info.key, data, max_pixels=settings.max_image_pixels,
                         max_bytes=settings.max_file_bytes, task=task)


def content_hash(items: dict[str, str]) -> str:
    """Over every key and its content sha256."""
    h = hashlib.sha256()
    for key in sorted(items):
        h.update(f"{key}\0{items[key]}\n".encode())
    return h.hexdigest()


def _shas_of(lake: Lake, files: list[ObjectInfo], known: dict[tuple, str] | None = None
             ) -> dict[str, str]:
    """sha256 per object, streaming; an object whose (key, size, version) is in ``known``
    (recorded at ingestion) is not read again: only what changed is hashed."""
    shas = {}
    for info in files:
        if (info.key, info.size, info.version) in (known or {}):
            shas[info.key] = known[(info.key, info.size, info.version)]
        elif info.unsafe:
            shas[info.key] = _unsafe_sha(info)
        else:
            shas[info.key] = _stream_sha256(lake, info.key)
    return shas


def _content_hash_of(lake: Lake, files: list[ObjectInfo]) -> str:
    return content_hash(_shas_of(lake, files))


def _files_key(batch_id: str) -> str:
    return ingest_files_key(batch_id)


def _record_files(lake: Lake, batch_id: str, files: list[ObjectInfo], shas: dict[str, str]) -> None:
    import pyarrow as pa

    from mlcore.storage import parquet_bytes

    rows = [{"key": i.key, "size": i.size, "version": i.version, "sha256": shas[i.key]}
            for i in files if i.key in shas]
    schema = pa.schema([("key", pa.string()), ("size", pa.int64()), ("version", pa.string()),
                        ("sha256", pa.string())])
    lake.write_bytes(_files_key(batch_id), parquet_bytes(pa.Table.from_pylist(rows, schema)))


def _recorded_files(lake: Lake, batch_id: str) -> dict[tuple, str]:
    from mlcore.storage import read_parquet

    if not lake.exists(_files_key(batch_id)):
        return {}  # ingested before per-object records: hash everything
    t = read_parquet(lake, _files_key(batch_id)).to_pydict()
    return {(k, s, v): h for k, s, v, h in zip(t["key"], t["size"], t["version"], t["sha256"],
                                              strict=True)}


def _read_labels(lake: Lake, info: ObjectInfo | None, names: set[str], classes: tuple[str, ...]
                 ) -> tuple[dict[str, int], list[Rejection], str | None]:
    """(labels, row issues, why the file is unreadable or None)."""
    if info is None:
        return {}, [], None
    if info.unsafe:
        return {}, [], f"{LABELS_FILE} is not a readable object ({info.unsafe})"
    if info.size > MAX_LABELS_BYTES:
        return {}, [], f"{info.size} bytes > {MAX_LABELS_BYTES}"
    try:
        labels, issues = parse_labels(lake.read_bytes(info.key), names, classes=classes)
    except LabelsUnreadable as exc:
        return {}, [], str(exc)
    return labels, issues, None


def _read_meta(lake: Lake, info: ObjectInfo | None):
    """The batch's ``batch.json`` (defaults when there is none)."""
    from mlcore.batch_meta import BatchMeta

    if info is None:
        return BatchMeta()
    if info.unsafe:
        raise BatchMetaUnreadable(f"not a readable object ({info.unsafe})")
    return parse_batch_meta(lake.read_bytes(info.key))


def _holdout_problem(task, label_info: ObjectInfo | None) -> str | None:
    """Why a batch marked holdout cannot be one for ``task``, or ``None``."""
    if task.holdout != "batches":
        return (f"task {task.name}'s holdout is {task.holdout!r}, not labeled batches; send "
                f"the batch without {META_FILE}")
    if label_info is None:
        return f"a holdout batch needs {LABELS_FILE}: an unlabeled image cannot judge a model"
    return None


def _conversions(profiles: list[FileProfile], task) -> dict[str, int]:
    """How many decoded uploads were converted to the task's mode and resized to its size."""
    out: Counter[str] = Counter()
    for p in profiles:
        if p.pixels is None:
            continue
        if p.mode != task.mode:
            out[f"{p.mode}->{task.mode}"] += 1
        if (p.width, p.height) != (task.width, task.height):
            out["resized"] += 1
    return dict(sorted(out.items()))


def max_label_share(labels: list[int | None], min_labeled: int = MIN_JUDGED) -> float:
    """Share of the most frequent class among labeled files: a batch labeled all "Bag" is
    suspect. Batches with fewer than ``min_labeled`` labels are too small to judge (0.0)."""
    known = [lab for lab in labels if lab is not None and lab >= 0]
    if len(known) < min_labeled:
        return 0.0
    return max(known.count(c) for c in set(known)) / len(known)


def mean_intensity(means: list[float], reference: float, min_images: int = MIN_JUDGED) -> float:
    """Mean intensity of the accepted images; batches smaller than ``min_images`` are too
    small to judge drift by (a few images average anywhere), so they get the reference."""
    if len(means) < min_images:
        return reference
    return sum(means) / len(means)


# --- ingestion ------------------------------------------------------------------------------


def ingest_batch(settings: Settings, lake: Lake, batch_id: str, *, logical_date: datetime,
                 claims: Claims | None = None, reference: DataProfile | None = None
                 ) -> BatchReport:
    """Ingest one ready batch, once. Re-running returns the recorded report unchanged.
    ``reference``: the data profile drift is judged against (default: the base data's)."""
    from mlcore.claims import open_claims
    from mlcore.data_profile import no_champion_reference

    task = task_of(settings)
    claims = claims or open_claims(settings)
    task = task_of(settings)
    reference = reference if reference is not None else no_champion_reference(task)
    prefix = landing_batch(batch_id) + "/"
    infos = lake.list_info(prefix)
    if not any(i.key == ready_marker(batch_id) for i in infos):
        raise BatchNotReady(f"{batch_id}: no {READY_MARKER} marker yet; upload still in progress?")
    fingerprint = listing_hash(infos)
    files = [i for i in infos if i.key != ready_marker(batch_id)]

    if lake.exists(ledger_key(batch_id)):
        return _already_ingested(lake, settings, batch_id, logical_date, files, fingerprint)

    at = logical_date.isoformat()
    if problem := batch_id_problem(batch_id):
        report = BatchReport(batch_id, _content_hash_of(lake, files), "rejected", at,
                             listing_hash=fingerprint, files=len(files))
        profiles = [FileProfile(i.key, "", i.size, reason="batch_rejected",
                                detail=f"invalid_batch_id: {problem}") for i in files]
        return _reject_whole(lake, claims, report, logical_date, profiles, "invalid_batch_id",
                             problem)

    label_info = next((i for i in files if i.key == prefix + LABELS_FILE), None)
    meta_info = next((i for i in files if i.key == prefix + META_FILE), None)
    images = [i for i in files if i.key[len(prefix):] not in BATCH_FILES]
    names = {i.key[len(prefix):] for i in images}
    labels, label_issues, unreadable = _read_labels(lake, label_info, names, task.classes)
    profiles = [_profile(lake, info, settings, task) for info in images]
    shas = {p.key: p.sha256 for p in profiles}
    for info in (label_info, meta_info):
        if info is not None:
            shas[info.key] = (_stream_sha256(lake, info.key) if not info.unsafe
                              else _unsafe_sha(info))
    report = BatchReport(batch_id, content_hash(shas), "ingested", at, listing_hash=fingerprint,
                         files=len(images))
    report.conversions = _conversions(profiles, task)
    _set_label_issues(report, label_issues)
    if unreadable:
        _set_label_issues(report, [Rejection(LABELS_FILE, "labels_unreadable", unreadable)])
        return _reject_whole(lake, claims, report, logical_date, profiles, "labels_unreadable",
                             unreadable)
    try:
        report.holdout = _read_meta(lake, meta_info).holdout
    except BatchMetaUnreadable as exc:
        return _reject_whole(lake, claims, report, logical_date, profiles,
                             "batch_meta_unreadable", f"{META_FILE}: {exc}")
    if report.holdout and (problem := _holdout_problem(task, label_info)):
        return _reject_whole(lake, claims, report, logical_date, profiles, "holdout_refused",
                             problem)

    def label_of(p: FileProfile) -> int | None:
        return labels.get(p.key[len(prefix):])

    # Same bytes twice in one batch: the first key in sorted order wins.
    unique: list[FileProfile] = []
    in_batch: set[str] = set()
    for prof in sorted(profiles, key=lambda p: p.key):
        if prof.sha256 in in_batch and prof.reason is None:
            report.duplicate_keys.append(prof.key)
        else:
            in_batch.add(prof.sha256)
            unique.append(prof)

    import pandas as pd

    frame = pd.DataFrame([p.row() for p in unique], columns=list(FileProfile.__dataclass_fields__)[:-1])
    frame["image_id"] = frame["sha256"]
    frame["label"] = pd.array([label_of(p) for p in unique], dtype="Int64")
    rows = run_suite(lake, settings.gx_suites_dir, "file_profiles", frame=frame, run_name=batch_id,
                     run_time=logical_date, parameters={
                         "max_file_bytes": settings.max_file_bytes, "max_side": MAX_SIDE,
                         "image_formats": list(FORMATS),
                         "class_indexes": list(range(task.num_classes))})
    report.docs_keys.append(rows.docs_key)
    by_key = {p.key: p for p in unique}
    rejected = {
        k: Rejection(k, by_key[k].reason or reasons[0], by_key[k].detail or ", ".join(reasons))
        for k, reasons in sorted(rows.failures.items())
    }
    passed = [p for p in unique if p.key not in rejected]

    # Batch rules judge what was uploaded (duplicates of earlier batches included), so the
    # verdict never depends on which concurrent batch claims an image first.
    if reference is None:
        # No base data and no champion yet: nothing to judge drift against; the first
        # champion's training data profile is the reference from then on.
        report.drift_check = (f"skipped: task {task.name} has no base data and no champion "
                              "yet, so no reference profile")
        reference_mean, tolerance = 127.5, 127.5  # the whole 0-255 range: the rule passes
    else:
        reference_mean, tolerance = reference.intensity_mean, INTENSITY_TOLERANCE
    summary = pd.DataFrame([{
        "key": batch_id,
        "n_files": len(images),
        "reject_rate": len(rejected) / max(len(images), 1),
        "max_label_share": max_label_share([label_of(p) for p in passed]),
        "accepted_mean_intensity": mean_intensity([p.mean for p in passed], reference_mean),
    }])
    batch = run_suite(lake, settings.gx_suites_dir, "batch_summary", frame=summary,
                      run_name=batch_id, run_time=logical_date, parameters={
        "max_batch_files": settings.max_batch_files,
        "max_reject_rate": settings.max_reject_rate,
        "max_label_share": settings.max_label_share,
        "intensity_mean_min": reference_mean - tolerance,
        "intensity_mean_max": reference_mean + tolerance,
    })
    report.docs_keys.append(batch.docs_key)
    if not batch.success:
        report.status = "rejected"
        report.failed_expectations = batch.failed_expectations
        for p in passed:
            rejected[p.key] = Rejection(p.key, "batch_rejected", "; ".join(batch.failed_expectations))
        report.rejections = list(rejected.values())
        _finish_rejected(lake, claims, report, logical_date)
        raise ValidationFailed.for_page(f"batch {batch_id}", report.failed_expectations,
                                        batch.docs_key, lake=lake,
                                        data_docs_url=settings.data_docs_url)

    # Claim, do not check: the unique constraint decides between concurrent batches.
    taken = claims.claim(batch_id, [p.sha256 for p in passed])
    mine = {p.sha256 for p in passed} - set(taken)
    stale = claims.owned_by(batch_id) - mine  # an earlier attempt under other settings
    if stale:
        claims.release(batch_id, stale)
    accepted = [p for p in passed if p.sha256 in mine]
    late = [p for p in passed if p.sha256 in taken]
    report.duplicate_keys = sorted(report.duplicate_keys + [p.key for p in late])
    report.rejections = list(rejected.values())
    report.accepted, report.quarantined = len(accepted), len(rejected)
    report.duplicates = len(report.duplicate_keys)
    assert report.accepted + report.quarantined + report.duplicates == report.files

    curated = [CuratedRow(p.sha256, p.pixels, p.key, label_of(p)) for p in accepted]
    # A holdout batch's labels never reach training, not even for images curated earlier.
    relabels = [CuratedRow(p.sha256, p.pixels, p.key, label) for p in late
                if (label := label_of(p)) is not None and label >= 0 and not report.holdout]
    report.labeled = sum(r.label is not None for r in curated)
    report.relabeled = len(relabels)
    # Stage everything, then commit with one write: the ledger entry names every part.
    _withdraw_other_attempts(lake, batch_id, keep=logical_date)
    staged = stage_shards(lake, curated, batch_id, ingested_at=logical_date,
                          shard_rows=settings.shard_rows, task=task,
                          prefix=CURATED_HOLDOUT if report.holdout else CURATED_IMAGES)
    if report.holdout:
        report.holdout_shards = staged
    else:
        report.shards = staged
    report.label_shards = stage_shards(lake, relabels, batch_id, ingested_at=logical_date,
                                       shard_rows=settings.shard_rows, prefix=CURATED_LABELS,
                                       task=task)
    _quarantine(lake, report)
    _record_files(lake, batch_id, files, shas)
    lake.write_bytes(ledger_key(batch_id), _dump(report))  # the commit point
    _finish_committed(lake, report)
    _mark_seen(lake, batch_id, fingerprint)
    lineage.report(lake, inputs=[prefix.rstrip("/")], outputs=report.shards + report.label_shards
                   + report.holdout_shards
                   + ([quarantine_folder(batch_id)] if report.quarantined else []))
    log.info("batch %s: %s", batch_id, report.summary())
    return report


def _withdraw_other_attempts(lake: Lake, batch_id: str, keep: datetime | None) -> None:
    """Delete what earlier attempts of this uncommitted batch left: parts under another
    ingestion date (a new run, not an Airflow retry, took the batch up again), and folder
    commit records a version before the ledger was the commit may have written (they made a
    killed attempt's parts visible; this batch is not committed until its ledger entry is).
    Then record ``keep`` as the date this attempt writes under."""
    key = attempts_key(batch_id)
    dates = json.loads(lake.read_bytes(key)) if lake.exists(key) else []
    for day in dates:
        if keep is None or day != keep.isoformat():
            at = datetime.fromisoformat(day)
            for curated in CURATED_PREFIXES:
                uncommit_shards(lake, batch_id, at, prefix=curated)
    if keep is not None:
        for curated in CURATED_PREFIXES:
            if lake.exists(marker := commit_key(keep, batch_id, curated)):
                lake.delete(marker)
        lake.write_bytes(key, json.dumps([keep.isoformat()]).encode())


def _finish_committed(lake: Lake, report: BatchReport, *, redo: bool = False) -> None:
    """What follows the commit, derived from it: drop the batch's parts the ledger entry
    does not name (a killed attempt's, never visible), and write the feedback file of its
    label shards. A kill here loses nothing: a retry finds the batch committed (``redo``)
    and writes the feedback if it is missing; it deletes nothing, since it cannot tell a
    lake an older version wrote from one this version did (leftovers are never read)."""
    at = datetime.fromisoformat(report.ingested_at)
    if not redo:
        drop_unnamed_parts(lake, report.batch_id, ingested_at=at,
                           named=ledger_parts(asdict(report)))
    if report.label_shards and not (redo and lake.exists(feedback_key(report.batch_id))):
        _record_feedback(lake, report.batch_id, at, report.label_shards)


def _set_label_issues(report: BatchReport, issues: list[Rejection]) -> None:
    """The ledger keeps the first issues and a count per reason (a 200k-row labels.csv with
    problems must not make a 25 MB ledger); the quarantine record keeps them all."""
    report.label_issue_counts = dict(Counter(i.reason for i in issues))
    report.label_issues = issues  # all of them in memory; _dump keeps the first LEDGER_ISSUES


def _already_ingested(lake: Lake, settings: Settings, batch_id: str, logical_date: datetime,
                      files: list[ObjectInfo], fingerprint: str) -> BatchReport:
    """A ledgered batch seen again: a retry (same content: the recorded outcome again) or a
    change after ingestion (recorded as a conflict with a warning, never mixed in)."""
    previous = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
    recorded_files = _recorded_files(lake, batch_id)
    shas = _shas_of(lake, files, recorded_files)
    digest = content_hash(shas)
    if previous.content_hash == digest:
        _mark_seen(lake, batch_id, fingerprint)
        if previous.status == "rejected":  # a retry or a cleared task must fail the same way
            if previous.reason:
                raise BatchRejected(batch_id, previous.reason, previous.detail)
            raise ValidationFailed.for_page(f"batch {batch_id}", previous.failed_expectations,
                                            previous.docs_keys[-1], lake=lake,
                                            data_docs_url=settings.data_docs_url)
        _finish_committed(lake, previous, redo=True)  # a kill may have come after the commit
        log.info("batch %s already ingested; nothing to do", batch_id)
        return previous
    before = {k: h for (k, _, _), h in recorded_files.items()}
    added = sorted(set(shas) - set(before))
    removed = sorted(set(before) - set(shas))
    changed = sorted(k for k in set(shas) & set(before) if shas[k] != before[k])
    conflict = BatchReport(batch_id, digest, "conflict", logical_date.isoformat(),
                           files=sum(1 for i in files
                                     if not i.key.endswith(tuple(f"/{f}" for f in BATCH_FILES))),
                           listing_hash=fingerprint)
    conflict.reason = "changed_after_ingestion"
    conflict.detail = (f"{len(added)} added, {len(removed)} removed, {len(changed)} changed "
                       f"(ledger content hash {previous.content_hash[:12]}, now {digest[:12]})")
    conflict.rejections = ([Rejection(k, "added") for k in added] + [Rejection(k, "removed") for k in removed]
                           + [Rejection(k, "changed") for k in changed])[:LEDGER_ISSUES]
    lake.write_bytes(conflict_key(batch_id, digest), _dump(conflict))
    _mark_seen(lake, batch_id, fingerprint)
    log.warning("batch %s changed after ingestion (%s); the change is not ingested: upload "
                "changes under a new batch id", batch_id, conflict.detail)
    return conflict


def _reject_whole(lake: Lake, claims: Claims, report: BatchReport, logical_date: datetime,
                  profiles: list[FileProfile], reason: str, detail: str) -> BatchReport:
    """Reject a batch outside the suites (bad id, unreadable labels): every file is
    quarantined, the ledger names the reason, and the task fails once."""
    report.status, report.reason, report.detail = "rejected", reason, detail
    report.rejections = [Rejection(p.key, p.reason or "batch_rejected", p.detail or
                                   f"{reason}: {detail}") for p in profiles]
    # A bad id cannot name quarantine copies; its reasons record still lists every file.
    _finish_rejected(lake, claims, report, logical_date, copy=reason != "invalid_batch_id")
    raise BatchRejected(report.batch_id, reason, detail)


def _finish_rejected(lake: Lake, claims: Claims, report: BatchReport, logical_date: datetime,
                     copy: bool = True) -> None:
    report.accepted, report.quarantined = 0, len(report.rejections)
    report.duplicates = len(report.duplicate_keys)
    assert report.quarantined + report.duplicates == report.files
    # An earlier attempt under other settings may have claimed or committed: withdraw it.
    claims.release(report.batch_id)
    if copy:
        _withdraw_other_attempts(lake, report.batch_id, keep=None)
        for curated in CURATED_PREFIXES:
            uncommit_shards(lake, report.batch_id, logical_date, prefix=curated)
    _quarantine(lake, report, copy_files=copy)
    lake.write_bytes(ledger_key(report.batch_id), _dump(report))
    _mark_seen(lake, report.batch_id, report.listing_hash)
    log.warning("batch %s rejected: %s", report.batch_id, report.reason or report.failed_expectations)


def _record_feedback(lake: Lake, batch_id: str, at: datetime, label_shards: list[str]) -> None:
    """Labels that arrive for images already curated are also feedback: they let monitoring
    measure how right past predictions were. Written to ``feedback/labels/`` from the
    committed label shards, so monitoring never folds labels of an uncommitted attempt."""
    import pyarrow as pa

    from mlcore.storage import parquet_bytes

    rows = [{"image_id": i, "label": label, "source_key": source, "batch_id": batch_id,
             "labeled_at": at}
            for key in label_shards
            for i, label, source in zip(*read_shard(lake, key, ["image_id", "label", "source_key"])
                                        .to_pydict().values(), strict=True)]
    if rows:
        lake.write_bytes(feedback_key(batch_id),
                         parquet_bytes(pa.Table.from_pylist(rows)))


def _quarantine(lake: Lake, report: BatchReport, copy_files: bool = True) -> None:
    """Copy rejected files byte for byte next to a reasons record; landing stays untouched.

    Too-large files and unsafe entries are recorded (key, size, reason), not copied."""
    issues = report.label_issues
    if not report.rejections and not issues:
        return
    reasons = []
    for rej in report.rejections:
        copy = None
        if copy_files and rej.reason not in ("too_large", "unsafe_entry"):
            copy = quarantine_copy_key(report.batch_id, rej.key)
            try:
                lake.write_bytes(copy, lake.read_bytes(rej.key))
            except FileNotFoundError:  # removed from landing since it was listed
                copy = None
        reasons.append({**asdict(rej), "copy": copy})
    labels_key = landing_file(report.batch_id, LABELS_FILE)
    if copy_files and issues and lake.exists(labels_key):
        lake.write_bytes(quarantine_copy_key(report.batch_id, labels_key), lake.read_bytes(labels_key))
    reasons += [{**asdict(i), "copy": None} for i in issues]
    lake.write_bytes(quarantine_reasons_key(report.batch_id), json.dumps(reasons, indent=1).encode())


def _dump(report: BatchReport) -> bytes:
    data = asdict(report)
    data["label_issues"] = data["label_issues"][:LEDGER_ISSUES]
    return json.dumps(data, indent=2, sort_keys=True).encode()


def record_failure(lake: Lake, batch_id: str, *, logical_date: datetime, exc: BaseException,
                   claims: Claims) -> None:
    """An error no retry fixed: record the batch as rejected (``ingest_error``) so the next
    run does not take it up again; ``quarantine reprocess`` releases it once fixed. Its
    claims are released first: a batch that never commits must not make other batches'
    copies of its images duplicates."""
    if lake.exists(ledger_key(batch_id)):
        return
    claims.release(batch_id)
    infos = lake.list_info(landing_batch(batch_id) + "/") if not batch_id_problem(batch_id) else []
    report = BatchReport(batch_id, "", "rejected", logical_date.isoformat(), reason="ingest_error",
                         listing_hash=listing_hash(infos))
    report.failed_expectations = [f"{type(exc).__name__}: {exc}"[:2000]]
    lake.write_bytes(ledger_key(batch_id), _dump(report))
    _mark_seen(lake, batch_id, report.listing_hash)


def reprocess(lake: Lake, batch_id: str, *, actor: str, at: datetime, reason: str) -> str:
    """Release a batch for ingestion again (after a threshold or suite fix); returns the archive key.

    The ledger entry moves to ``_state/ingest_history/`` and the action is audited; the next
    ``ingest_landing`` run (or a manual trigger with ``batch_id``) validates the batch anew.
    """
    from mlcore import audit

    key = ledger_key(batch_id)
    if not lake.exists(key):
        raise LookupError(f"batch {batch_id} has no ledger entry: it was never ingested")
    previous = BatchReport.from_json(lake.read_bytes(key))
    if previous.accepted:
        raise ValueError(f"batch {batch_id} already has {previous.accepted} accepted images; "
                         "upload the corrected files as a new batch instead")
    archive = ingest_history_key(batch_id, at, previous.content_hash)
    lake.write_bytes(archive, lake.read_bytes(key))
    lake.delete(key)
    for seen in lake.list(seen_folder(batch_id)):
        lake.delete(seen)
    audit.record(lake, "quarantine_reprocess", f"batch/{batch_id}", actor=actor, at=at,
                 reason=reason, previous_status=previous.status, quarantined=previous.quarantined)
    return archive
