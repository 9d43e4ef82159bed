"""Landing -> curated: every uploaded file ends accepted, quarantined (with a reason) or a
recorded duplicate, and the batch ledger says which. Landing objects are only ever read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mlcore import lineage
from mlcore.data import CLASSES, CuratedRow, known_image_ids, write_shards
from mlcore.images import FileProfile, profile_image
from mlcore.validation import ValidationFailed, run_suite

if TYPE_CHECKING:
    from mlcore.data_profile import DataProfile
    from mlcore.settings import Settings
    from mlcore.storage import Lake

log = logging.getLogger(__name__)

LANDING = "landing"
READY_MARKER = "_READY"
LABELS_FILE = "labels.csv"
LEDGER_PREFIX = "_state/ingest"
FEEDBACK_PREFIX = "feedback/labels"
# A batch whose accepted images average further than this from the reference profile's
# mean intensity (the champion's training data; mlcore.data_profile) is drifted input.
INTENSITY_TOLERANCE = 30.0


class BatchNotReady(RuntimeError):
    """The batch has no ``_READY`` marker yet: the upload may still be in progress."""


@dataclass
class Rejection:
    key: str
    reason: str
    detail: str = ""


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

    def summary(self) -> dict:
        """Small enough for XCom: counts and ids only."""
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "files": self.files,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "labeled": self.labeled,
            "shards": len(self.shards),
        }

    @classmethod
    def from_json(cls, raw: bytes) -> BatchReport:
        data = json.loads(raw)
        for name in ("rejections", "label_issues"):
            data[name] = [Rejection(**r) for r in data[name]]
        return cls(**data)


def ledger_key(batch_id: str) -> str:
    return f"{LEDGER_PREFIX}/{batch_id}.json"


def ready_batches(lake: Lake) -> list[str]:
    """Batch ids that carry a ``_READY`` marker and have no ledger entry yet."""
    ready = sorted(
        key.split("/")[1]
        for key in lake.list(LANDING)
        if key.count("/") == 2 and key.endswith(f"/{READY_MARKER}")
    )
    return [b for b in ready if not lake.exists(ledger_key(b))]


def parse_labels(raw: bytes, filenames: set[str]) -> tuple[dict[str, int], list[Rejection]]:
    """``labels.csv`` (``filename,label``; label is a class name or index) -> filename -> class.

    Unknown labels map to -1 so the row-level suite rejects that file; every other problem
    is reported against the CSV without touching the files it names.
    """
    key = LABELS_FILE
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return {}, [Rejection(key, "labels_encoding", f"not UTF-8: {exc}")]
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        return {}, [Rejection(key, "labels_malformed", str(exc))]
    if rows and [c.strip().lower() for c in rows[0]] == ["filename", "label"]:
        rows = rows[1:]
    by_name = {name.lower(): i for i, name in enumerate(CLASSES)}
    labels: dict[str, int] = {}
    issues: list[Rejection] = []
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            issues.append(Rejection(f"{key}:{line_no}", "labels_malformed", f"{len(row)} fields"))
            continue
        name, value = row[0].strip(), row[1].strip()
        if name not in filenames:
            issues.append(Rejection(f"{key}:{line_no}", "label_for_missing_file", name))
            continue
        label = int(value) if value.isdigit() and int(value) < len(CLASSES) else by_name.get(
            value.lower(), -1
        )
        if name in labels:
            reason = "duplicate_label_row" if labels[name] == label else "conflicting_labels"
            issues.append(Rejection(f"{key}:{line_no}", reason, name))
            if labels[name] != label:
                labels[name] = -1
            continue
        labels[name] = label
    return labels, issues


def max_label_share(labels: list[int | None], min_labeled: int = 20) -> float:
    """Share of the most frequent class among labeled files: a batch labeled all "Bag" is
    suspect. Batches with fewer than ``min_labeled`` labels are too small to judge (0.0)."""
    known = [lab for lab in labels if lab is not None and lab >= 0]
    if len(known) < min_labeled:
        return 0.0
    return max(known.count(c) for c in set(known)) / len(known)


def content_hash(items: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(items):
        h.update(f"{key}\0{hashlib.sha256(items[key]).hexdigest()}\n".encode())
    return h.hexdigest()


def ingest_batch(lake: Lake, settings: Settings, batch_id: str, logical_date: datetime,
                 reference: DataProfile | None = None) -> BatchReport:
    """Ingest one ready batch, once. Re-running returns the recorded report unchanged.
    ``reference``: the data profile drift is judged against (default: the base data's)."""
    import pandas as pd

    from mlcore.data_profile import base_profile

    reference_mean = (reference or base_profile()).intensity_mean

    prefix = f"{LANDING}/{batch_id}/"
    keys = lake.list(prefix)
    if prefix + READY_MARKER not in keys:
        raise BatchNotReady(f"{batch_id}: no {READY_MARKER} marker yet; upload still in progress?")
    blobs = {k: lake.read_bytes(k) for k in keys if k != prefix + READY_MARKER}
    digest = content_hash(blobs)

    if lake.exists(ledger_key(batch_id)):
        previous = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
        if previous.content_hash == digest:
            if previous.status == "rejected":  # a retry or a cleared task must fail the same way
                raise ValidationFailed.for_page(f"batch {batch_id}", previous.failed_expectations,
                                                previous.docs_keys[-1], lake, settings.data_docs_url)
            log.info("batch %s already ingested; nothing to do", batch_id)
            return previous
        conflict = BatchReport(batch_id, digest, "conflict", logical_date.isoformat())
        lake.write_bytes(f"_state/conflicts/{batch_id}-{digest[:12]}.json", _dump(conflict))
        log.warning("batch %s changed after ingestion; upload changes under a new batch id",
                    batch_id)
        return conflict

    report = BatchReport(batch_id, digest, "ingested", logical_date.isoformat())
    images = {k: v for k, v in blobs.items() if k != prefix + LABELS_FILE}
    report.files = len(images)
    labels: dict[str, int] = {}
    if prefix + LABELS_FILE in blobs:
        labels, report.label_issues = parse_labels(
            blobs[prefix + LABELS_FILE], {k[len(prefix):] for k in images}
        )

    profiles = [
        profile_image(k, v, settings.max_image_pixels, settings.max_file_bytes)
        for k, v in images.items()
    ]
    seen = known_image_ids(lake)
    unique: list[FileProfile] = []
    for prof in profiles:
        if prof.sha256 in seen:
            report.duplicate_keys.append(prof.key)
        else:
            seen.add(prof.sha256)
            unique.append(prof)

    frame = pd.DataFrame([p.row() for p in unique], columns=list(FileProfile.__dataclass_fields__)[:-1])
    frame["image_id"] = frame["sha256"]
    frame["label"] = pd.array([labels.get(p.key[len(prefix):]) for p in unique], dtype="Int64")
    rows = run_suite(lake, settings.gx_suites_dir, "file_profiles", frame, batch_id, logical_date,
                     {"max_file_bytes": settings.max_file_bytes})
    report.docs_keys.append(rows.docs_key)
    by_key = {p.key: p for p in unique}
    rejected = {
        k: Rejection(k, by_key[k].reason or reasons[0], by_key[k].detail or ", ".join(reasons))
        for k, reasons in sorted(rows.failures.items())
    }
    accepted = [p for p in unique if p.key not in rejected]

    summary = pd.DataFrame([{
        "key": batch_id,
        "n_files": len(images),
        "reject_rate": len(rejected) / max(len(unique), 1),
        "max_label_share": max_label_share([labels.get(p.key[len(prefix):]) for p in accepted]),
        "accepted_mean_intensity": (
            sum(p.mean for p in accepted) / len(accepted) if accepted else reference_mean
        ),
    }])
    batch = run_suite(lake, settings.gx_suites_dir, "batch_summary", summary, batch_id, logical_date, {
        "max_batch_files": settings.max_batch_files,
        "max_reject_rate": settings.max_reject_rate,
        "max_label_share": settings.max_label_share,
        "intensity_mean_min": reference_mean - INTENSITY_TOLERANCE,
        "intensity_mean_max": reference_mean + INTENSITY_TOLERANCE,
    })
    report.docs_keys.append(batch.docs_key)
    if not batch.success:
        report.status = "rejected"
        report.failed_expectations = batch.failed_expectations
        for p in accepted:
            rejected[p.key] = Rejection(p.key, "batch_rejected", "; ".join(batch.failed_expectations))
        accepted = []

    report.rejections = list(rejected.values())
    report.accepted, report.quarantined = len(accepted), len(rejected)
    report.duplicates = len(report.duplicate_keys)
    assert report.accepted + report.quarantined + report.duplicates == report.files

    curated = [
        CuratedRow(p.sha256, p.pixels, p.key, labels.get(p.key[len(prefix):])) for p in accepted
    ]
    report.labeled = sum(r.label is not None for r in curated)
    report.shards = write_shards(lake, curated, batch_id, logical_date, settings.shard_rows)
    _record_late_labels(lake, batch_id, logical_date, prefix, profiles, report, labels)
    _quarantine(lake, batch_id, report, images, blobs.get(prefix + LABELS_FILE))
    lake.write_bytes(ledger_key(batch_id), _dump(report))
    lineage.report(lake, inputs=[prefix.rstrip("/")], outputs=report.shards
                   + ([f"quarantine/{batch_id}"] if report.quarantined else []))
    log.info("batch %s: %s", batch_id, report.summary())
    if report.status == "rejected":
        raise ValidationFailed.for_page(f"batch {batch_id}", report.failed_expectations,
                                        batch.docs_key, lake, settings.data_docs_url)
    return report


def _record_late_labels(lake: Lake, batch_id: str, at: datetime, prefix: str,
                        profiles: list[FileProfile], report: BatchReport,
                        labels: dict[str, int]) -> None:
    """Labels that arrive for images already curated (duplicates) are feedback: they let
    monitoring measure how right past predictions were. Written to ``feedback/labels/``."""
    import pyarrow as pa

    from mlcore.storage import parquet_bytes

    dup = set(report.duplicate_keys)
    rows = [{"image_id": p.sha256, "label": labels[p.key[len(prefix):]], "source_key": p.key,
             "batch_id": batch_id, "labeled_at": at}
            for p in profiles if p.key in dup and labels.get(p.key[len(prefix):], -1) >= 0]
    if rows:
        lake.write_bytes(f"{FEEDBACK_PREFIX}/batch={batch_id}.parquet",
                         parquet_bytes(pa.Table.from_pylist(rows)))


def _quarantine(lake: Lake, batch_id: str, report: BatchReport, images: dict[str, bytes],
                labels_csv: bytes | None) -> None:
    """Copy rejected files byte for byte next to a reasons record; landing stays untouched."""
    if not report.rejections and not report.label_issues:
        return
    base = f"quarantine/{batch_id}"
    for rej in report.rejections:
        lake.write_bytes(f"{base}/{rej.key.split('/', 2)[2]}", images[rej.key])
    if report.label_issues and labels_csv is not None:
        lake.write_bytes(f"{base}/{LABELS_FILE}", labels_csv)
    reasons = [asdict(r) for r in report.rejections + report.label_issues]
    lake.write_bytes(f"{base}/_reasons.json", json.dumps(reasons, indent=2).encode())


def _dump(report: BatchReport) -> bytes:
    return json.dumps(asdict(report), indent=2, sort_keys=True).encode()


def reprocess(lake: Lake, batch_id: str, actor: str, at: datetime, reason: str) -> str:
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
    archive = f"_state/ingest_history/{batch_id}/{at:%Y%m%dT%H%M%S}-{previous.content_hash[:12]}.json"
    lake.write_bytes(archive, lake.read_bytes(key))
    lake.delete(key)
    audit.record(lake, actor, at, "quarantine_reprocess", f"batch/{batch_id}", reason,
                 previous_status=previous.status, quarantined=previous.quarantined)
    return archive
