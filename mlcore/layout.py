"""The lake layout: every key and prefix the platform reads or writes, built here.

The prefixes are the contract with users and consumers (``docs/architecture.md``), so they
live in one module: a literal copied into a second module drifts apart from the first.
Keys are relative to the lake root (a task's lake is rooted under ``tasks/<task>/``), and
building one does no I/O. Batch ids name landing keys as the user spelled them; the
platform's own records use :func:`mlcore.batch_ids.safe_name`.

```
landing/<batch_id>/...               user uploads (+ labels.csv, _READY); never modified
quarantine/<batch>/                  _reasons.json, files/<copies of rejected files>
curated/images/dt=<day>/batch=<batch>/part-NNNNN.parquet   committed by the batch's ledger entry
curated/labels/..., curated/holdout/...   labels supplied later, holdout batches (same layout)
feedback/labels/batch=<batch>.parquet
predictions/, predictions_shadow/    Delta tables, partitioned by dt
monitoring/<figure>/                 small Delta tables (drift, shadow agreement, accuracy)
validation/results/, validation/data_docs/   GX results and the Data Docs site
mlflow/<experiment>/                 MLflow artifacts when the lake is the artifact store
_state/...                           ledgers, listings seen, attempts, conflicts, audit
```
"""

from __future__ import annotations

from datetime import date, datetime

from mlcore.batch_ids import safe_name

# --- what users write -------------------------------------------------------------------
LANDING = "landing"
READY_MARKER = "_READY"  # an upload is complete once this empty object exists
LABELS_FILE = "labels.csv"

# --- what the platform writes -------------------------------------------------------------
QUARANTINE = "quarantine"
CURATED_IMAGES = "curated/images"
# Labels a later batch supplied for images already curated: same schema as the image
# shards, read by training (never by scoring), so each image keeps one row in curated/images.
CURATED_LABELS = "curated/labels"
# Images of batches marked holdout (batch.json, mlcore.batch_meta): same schema, read only
# by training's holdout evaluation; neither training nor scoring lists this prefix.
CURATED_HOLDOUT = "curated/holdout"
BATCH_META_FILE = "batch.json"  # a batch's own metadata (holdout marking), never an image
CURATED_PREFIXES = (CURATED_IMAGES, CURATED_LABELS, CURATED_HOLDOUT)  # where a batch's parts go
# A curated folder's own commit record, for parts no ledger entry names: lakes written
# before the ledger entry became a batch's one commit, and shards written outside ingestion
# (mlcore.data.write_shards). A batch's ledger entry, when there is one, overrides it.
COMMIT_FILE = "_COMMITTED.json"
FEEDBACK_LABELS = "feedback/labels"
PREDICTIONS = "predictions"
PREDICTIONS_SHADOW = "predictions_shadow"  # the challenger's: same layout, never for consumers
PARTITION = "dt"  # the partition column of curated shards and of every table
MONITORING = "monitoring"
DRIFT = f"{MONITORING}/drift"  # one row per partition
SHADOW_AGREEMENT = f"{MONITORING}/shadow_agreement"  # one row per partition
REALIZED_ACCURACY = f"{MONITORING}/realized_accuracy"  # one row per model version
VALIDATION_RESULTS = "validation/results"
DATA_DOCS = "validation/data_docs"
MLFLOW = "mlflow"

# --- the platform's own state -------------------------------------------------------------
STATE = "_state"
# <batch>.json: what ingestion decided, with content hash; for an ingested batch also its
# commit: the one write that makes every part it names (all prefixes) visible at once.
LEDGER = f"{STATE}/ingest"
SEEN = f"{STATE}/ingest_seen"  # <batch>/<listing hash>: listings already handled
INGEST_FILES = f"{STATE}/ingest_files"  # <batch>.parquet: key, size, version, sha256 per object
ATTEMPTS = f"{STATE}/ingest_attempts"  # <batch>.json: the dates an attempt wrote under
INGEST_HISTORY = f"{STATE}/ingest_history"  # ledger entries released by ``reprocess``
CONFLICTS = f"{STATE}/conflicts"
AUDIT = f"{STATE}/audit"
PREDICTIONS_REFUSED = f"{STATE}/predictions_refused"  # <table>/dt=<day>.json: last refusal
REALIZED_STATE = f"{STATE}/realized_accuracy.json"  # what realized accuracy folded so far
DOCS_INDEX = f"{STATE}/data_docs_index"  # <generation>.json: the rows the Data Docs index lists


# --- landing ---------------------------------------------------------------------------------
def landing_batch(batch_id: str) -> str:
    """The folder a user uploads a batch into (no trailing slash)."""
    return f"{LANDING}/{batch_id}"


def landing_file(batch_id: str, name: str) -> str:
    return f"{LANDING}/{batch_id}/{name}"


def ready_marker(batch_id: str) -> str:
    return landing_file(batch_id, READY_MARKER)


def is_landing_key(key: str) -> bool:
    return key.startswith(f"{LANDING}/")


# --- ingestion state and quarantine --------------------------------------------------------
def ledger_key(batch_id: str) -> str:
    return f"{LEDGER}/{safe_name(batch_id)}.json"


def ledger_batch_name(key: str) -> str | None:
    """The ``safe_name`` a ledger key records, or ``None`` for any other key."""
    name = key.removeprefix(f"{LEDGER}/")
    if name == key or "/" in name or not name.endswith(".json"):
        return None
    return name.removesuffix(".json")


def seen_folder(batch_id: str) -> str:
    return f"{SEEN}/{safe_name(batch_id)}"


def seen_key(batch_id: str, fingerprint: str) -> str:
    return f"{seen_folder(batch_id)}/{fingerprint}"


def ingest_files_key(batch_id: str) -> str:
    return f"{INGEST_FILES}/{safe_name(batch_id)}.parquet"


def attempts_key(batch_id: str) -> str:
    return f"{ATTEMPTS}/{safe_name(batch_id)}.json"


def ingest_history_key(batch_id: str, at: datetime, content_hash: str) -> str:
    return f"{INGEST_HISTORY}/{safe_name(batch_id)}/{at:%Y%m%dT%H%M%S}-{content_hash[:12]}.json"


def conflict_key(batch_id: str, digest: str) -> str:
    return f"{CONFLICTS}/{safe_name(batch_id)}-{digest[:12]}.json"


def feedback_key(batch_id: str) -> str:
    return f"{FEEDBACK_LABELS}/batch={batch_id}.parquet"


def quarantine_folder(batch_id: str) -> str:
    return f"{QUARANTINE}/{safe_name(batch_id)}"


def quarantine_reasons_key(batch_id: str) -> str:
    return f"{quarantine_folder(batch_id)}/_reasons.json"


def quarantine_copy_key(batch_id: str, landing_key: str) -> str:
    """Copies live under ``files/``: a user file named ``_reasons.json`` cannot collide with
    the reasons record next to it."""
    return f"{quarantine_folder(batch_id)}/files/{landing_key.split('/', 2)[2]}"


# --- curated shards ----------------------------------------------------------------------------
def curated_day(day: date | str, prefix: str = CURATED_IMAGES) -> str:
    """The folder of the shards ingested on ``day`` (a date or ``YYYY-MM-DD``)."""
    name = day.strftime("%Y-%m-%d") if isinstance(day, date) else day
    return f"{prefix}/{PARTITION}={name}"


def curated_batch(ingested_at: datetime, batch_id: str, prefix: str = CURATED_IMAGES) -> str:
    """Shards are grouped by ingestion date so scoring can select a data interval cheaply."""
    return f"{curated_day(ingested_at, prefix)}/batch={batch_id}"


def shard_key(ingested_at: datetime, batch_id: str, index: int, *,
              prefix: str = CURATED_IMAGES) -> str:
    return f"{curated_batch(ingested_at, batch_id, prefix)}/part-{index:05d}.parquet"


def commit_key(ingested_at: datetime, batch_id: str, prefix: str = CURATED_IMAGES) -> str:
    """A curated folder's own commit record (:data:`COMMIT_FILE`), for ledgerless parts."""
    return commit_record(curated_batch(ingested_at, batch_id, prefix))


def commit_record(folder: str) -> str:
    return f"{folder}/{COMMIT_FILE}"


def batch_of_folder(folder: str) -> str:
    """The batch id a curated ``.../batch=<id>`` folder holds."""
    return folder.rsplit("batch=", 1)[-1]


# --- validation ------------------------------------------------------------------------------
def validation_page(run: str) -> str:
    """The Data Docs page of one validation run (``run``: GX's result identifier path)."""
    return f"{DATA_DOCS}/validations/{run}.html"


def validation_result(run: str) -> str:
    """The stored GX result of one validation run (the page's data)."""
    return f"{VALIDATION_RESULTS}/{run}.json"


def validation_run_of_page(page: str) -> str:
    """The run a :func:`validation_page` key names."""
    prefix, suffix = f"{DATA_DOCS}/validations/", ".html"
    if not (page.startswith(prefix) and page.endswith(suffix)):
        raise ValueError(f"{page!r} is not a validation page under {DATA_DOCS}/validations/")
    return page[len(prefix) : -len(suffix)]


def docs_index_generation(number: int) -> str:
    """One generation of the Data Docs index state (see mlcore.data_docs_site)."""
    return f"{DOCS_INDEX}/{number:012d}.json"


def docs_index_generation_number(key: str) -> int:
    """The generation a :func:`docs_index_generation` key names."""
    return int(key.rsplit("/", 1)[-1].removesuffix(".json"))


def docs_page(path: str) -> str:
    """The lake key of a Data Docs page path (already neutralised, see mlcore.data_docs)."""
    return f"{DATA_DOCS}/{path}"


def docs_path(key: str) -> str:
    """The page path of a Data Docs key (the inverse of :func:`docs_page`)."""
    return key.removeprefix(f"{DATA_DOCS}/")


# --- audit, MLflow -----------------------------------------------------------------------------
def audit_key(at: str, action: str, digest: str) -> str:
    """One audit entry (``at``: ISO-8601 UTC): folders per day, names sort by time."""
    return f"{AUDIT}/{at[:10]}/{at}-{action}-{digest[:12]}.json"


def mlflow_artifacts(experiment: str) -> str:
    """Where an experiment's run artifacts live when the lake is the artifact store."""
    return f"{MLFLOW}/{experiment}"


def mlflow_model(experiment: str, model_id: str) -> str:
    return f"{mlflow_artifacts(experiment)}/models/{model_id}"
