"""Drop a batch into ``landing/`` and ask what became of it (``mlcore batch upload|status``).

The upload follows the data contract so nobody has to remember it: every file is sent in
parallel and read back (size and SHA-256) before ``_READY`` is written, last, and only when
every file is verified. Nothing is ever sent for a batch id that is already ready or
ingested. A rerun of an interrupted upload compares what is stored with the local files
and sends only what is missing or different, so a batch is never half-uploaded with a
``_READY`` marker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlcore.data_docs import page_url
from mlcore.ingest import BatchReport
from mlcore.layout import (
    CONFLICTS,
    LABELS_FILE,
    READY_MARKER,
    landing_batch,
    landing_file,
    ledger_key,
    quarantine_folder,
    ready_marker,
)
from mlcore.storage import UnsafeKey, check_key
from mlcore.usage import BATCH_ID, UsageError

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake

class UploadRefused(UsageError):
    """The upload would break the contract (an existing batch id, stray objects); nothing sent."""


class UploadNotVerified(RuntimeError):
    """A stored object does not match the local file; ``_READY`` was not written."""


@dataclass(frozen=True)
class FileResult:
    name: str
    size: int
    sha256: str
    sent: bool  # False: already stored with the same size and checksum (a resumed upload)


@dataclass
class UploadResult:
    batch_id: str
    files: int
    sent: int
    kept: int
    bytes_sent: int
    ready_key: str


def batch_files(src: Path, labels: Path | None = None) -> dict[str, Path]:
    """The objects a batch upload of ``src`` creates: name (relative POSIX path) -> local file.

    Hidden files (``.DS_Store``, editor swap files) and a local ``_READY`` are left out: the
    marker is the uploader's to write. ``labels`` is sent as ``labels.csv``.
    """
    if not src.is_dir():
        raise UsageError(f"expected a folder of images to upload, got {str(src)!r}")
    files: dict[str, Path] = {}
    for path in sorted(src.rglob("*")):
        name = path.relative_to(src).as_posix()
        if not path.is_file() or any(p.startswith(".") for p in name.split("/")):
            continue
        if name == READY_MARKER:
            continue
        files[name] = path
    if labels is not None:
        if not labels.is_file():
            raise UsageError(f"--labels: expected a CSV file (filename,label), got {str(labels)!r}")
        if LABELS_FILE in files and files[LABELS_FILE].resolve() != labels.resolve():
            raise UsageError(f"{src}/{LABELS_FILE} exists and --labels names another file: "
                             "give one of them")
        files[LABELS_FILE] = labels
    if not any(name != LABELS_FILE for name in files):
        raise UsageError(f"{str(src)!r} holds no files to upload")
    for name in files:
        try:
            check_key(landing_file("x", name))
        except UnsafeKey:
            raise UsageError(f"{name!r} cannot be a lake key; rename it") from None
    return files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_batch(lake: Lake, batch_id: str, files: dict[str, Path], *, workers: int = 8,
                 on_file: Callable[[FileResult], None] | None = None) -> UploadResult:
    """Send ``files`` to ``landing/<batch_id>/``, verify each, then write ``_READY``."""
    if not BATCH_ID.match(batch_id):
        raise UsageError(f"invalid batch id {batch_id!r}: letters, digits, '-', '_', '.'")
    prefix = landing_batch(batch_id) + "/"
    if lake.exists(ready_marker(batch_id)) or lake.exists(ledger_key(batch_id)):
        raise UploadRefused(f"batch {batch_id} already exists (its upload is complete): "
                            "upload new or changed files under a new --batch-id")
    stored = set(lake.list(prefix))
    strays = sorted(stored - {prefix + name for name in files})
    if strays:
        shown = ", ".join(k[len(prefix):] for k in strays[:3]) + (" ..." if len(strays) > 3 else "")
        raise UploadRefused(f"{prefix} already holds {len(strays)} object(s) that are "
                            f"not in this upload ({shown}): use a new --batch-id")

    def send(name: str) -> FileResult:
        data = files[name].read_bytes()
        want = (len(data), _sha256(data))
        key = prefix + name
        if key in stored and lake.digest(key) == want:
            return FileResult(name, *want, sent=False)
        lake.put_upload(key, data)
        got = lake.digest(key)
        if got != want:
            raise UploadNotVerified(f"{key}: stored {got} but sent {want}; rerun to resend it")
        return FileResult(name, *want, sent=True)

    results: list[FileResult] = []
    names = iter(sorted(files))
    # A bounded window of reads in flight: memory stays flat whatever the batch size.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: set[Future] = set()
        while True:
            for name in names:
                pending.add(pool.submit(send, name))
                if len(pending) >= 2 * max(1, workers):
                    break
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                result = fut.result()  # the first failure stops the upload: no _READY
                results.append(result)
                if on_file:
                    on_file(result)
    # Every file is stored and verified: only now is the batch complete.
    if not lake.write_if_absent(ready_marker(batch_id), b""):
        raise UploadRefused(f"{ready_marker(batch_id)} appeared during the upload with other "
                            "content: someone else is writing this batch id")
    sent = [r for r in results if r.sent]
    return UploadResult(batch_id, len(results), len(sent), len(results) - len(sent),
                        sum(r.size for r in sent), ready_marker(batch_id))


# --- status -----------------------------------------------------------------------------


@dataclass
class BatchStatus:
    """What became of one batch, from landing, the ingestion ledger and conflict records."""

    batch_id: str
    state: str  # not_found | not_ready | ready | ingested | rejected | conflict
    uploaded_files: int
    next_step: str
    counts: dict[str, int] = field(default_factory=dict)
    ingested_at: str | None = None
    quarantined: list[dict] = field(default_factory=list)  # key, reason, detail
    failed_expectations: list[str] = field(default_factory=list)
    data_docs: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _conflict_keys(lake: Lake, batch_id: str) -> list[str]:
    # Records are <batch_id>-<12 hex>.json; batch ids may themselves contain "-".
    return [k for k in lake.list(CONFLICTS)
            if k.rsplit("/", 1)[-1].removesuffix(".json").rsplit("-", 1)[0] == batch_id]


def batch_status(settings: Settings, lake: Lake, batch_id: str) -> BatchStatus:
    """The state of ``batch_id``, its counts, every quarantined file with its reason, and
    the Data Docs pages of its validation runs (as links people can open)."""
    landing = lake.list(landing_batch(batch_id) + "/")
    uploaded = len([k for k in landing if k != ready_marker(batch_id)])
    if not lake.exists(ledger_key(batch_id)):
        if not landing:
            return BatchStatus(batch_id, "not_found", 0,
                               f"nothing under {landing_batch(batch_id)}/: upload it with "
                               f"`mlcore batch upload DIR --batch-id {batch_id}`")
        if ready_marker(batch_id) not in landing:
            return BatchStatus(batch_id, "not_ready", uploaded,
                               "the upload is incomplete (no _READY): rerun the same "
                               "`mlcore batch upload` to finish it")
        return BatchStatus(batch_id, "ready", uploaded,
                           "waiting for ingest_landing (runs every 10 minutes)")
    report = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
    # Read fields defensively: the ledger may gain fields, and older entries lack some.
    counts = {name: int(getattr(report, name, 0) or 0)
              for name in ("files", "accepted", "quarantined", "duplicates", "labeled")}
    quarantined = [{"key": getattr(r, "key", ""), "reason": getattr(r, "reason", ""),
                    "detail": getattr(r, "detail", "")}
                   for r in [*getattr(report, "rejections", []), *getattr(report, "label_issues", [])]]
    docs = [page_url(settings.data_docs_url, k) for k in getattr(report, "docs_keys", [])]
    conflicts = _conflict_keys(lake, batch_id)
    state = "conflict" if conflicts else report.status
    steps = {
        "ingested": "done: accepted images are curated; quarantined files are in "
                    f"{quarantine_folder(batch_id)}/ with their reasons",
        "rejected": "the whole batch failed a batch-level rule: read the Data Docs page; fix "
                    "the data and upload a new batch, or `mlcore quarantine reprocess` if the "
                    "rule was too strict",
        "conflict": f"files under landing/{batch_id}/ changed after ingestion and were not "
                    "ingested: upload the changes under a new batch id",
    }
    return BatchStatus(batch_id, state, uploaded, steps.get(state, ""), counts,
                       getattr(report, "ingested_at", None), quarantined,
                       list(getattr(report, "failed_expectations", [])), docs, conflicts)


def render_status(status: BatchStatus) -> str:
    """The status for people: state, counts, then one line per quarantined file."""
    lines = [f"batch {status.batch_id}: {status.state.replace('_', ' ')}"]
    if status.counts:
        c = status.counts
        lines.append(f"  {c['files']} files: {c['accepted']} accepted ({c['labeled']} labeled), "
                     f"{c['quarantined']} quarantined, {c['duplicates']} duplicates"
                     f"  (ingested {status.ingested_at})")
    else:
        lines.append(f"  {status.uploaded_files} file(s) uploaded")
    if status.failed_expectations:
        lines.append(f"  failed rules: {', '.join(status.failed_expectations)}")
    lines += [f"  quarantined {q['key'].split('/', 2)[-1]}: {q['reason']}"
              + (f" ({q['detail']})" if q["detail"] else "") for q in status.quarantined]
    lines += [f"  data docs   {url}" for url in status.data_docs]
    lines += [f"  conflict    {key}" for key in status.conflicts]
    lines.append(f"  next: {status.next_step}")
    return "\n".join(lines)
