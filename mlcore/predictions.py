"""The prediction tables: Delta Lake tables in the lake, partitioned by ``dt``.

``predictions/`` (what consumers read) and ``predictions_shadow/`` (the challenger's, never
for consumers) are Delta tables. Every engine that reads Delta (deltalake, polars, DuckDB,
Spark, Trino) sees only committed snapshots, and past snapshots stay readable (time travel).

Protocol, in three steps that each leave the table readable whenever a process dies:

1. ``write_part``: a scoring task writes one data file to a key that is new for every run and
   every try (``dt=<day>/part-<run>-<shard>-<uuid>.parquet``), inside its partition's folder.
   No snapshot references it yet, so no reader sees it; an object a snapshot references is
   never written again.
2. ``commit_partition``: the files are validated with the GX ``predictions`` suite, then
   ``replace_partition``: one Delta commit removes the partition's files and adds the run's.
   The commit is a create-if-absent of ``_delta_log/<version>.json`` (``If-None-Match: *`` on
   S3): it lands whole or not at all, and of two writers one wins the version. Each commit
   also carries a Delta app transaction for its partition, so two runs for one date always
   conflict (even when the partition was empty) and the loser retries on the new snapshot:
   concurrent runs serialize, rows are never doubled.
3. ``vacuum``: files no snapshot inside the retention references (superseded parts, parts of
   killed runs) are deleted by Delta's own vacuum.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from mlcore.layout import PARTITION, PREDICTIONS, PREDICTIONS_REFUSED, PREDICTIONS_SHADOW

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from deltalake import DeltaTable

    from mlcore.registry import PinnedModel
    from mlcore.runtime import Runtime
    from mlcore.storage import Lake

log = logging.getLogger(__name__)

# The table names and the partition column are the lake layout's (mlcore.layout).
SHADOW = PREDICTIONS_SHADOW  # the challenger's predictions: same layout, never for consumers
# <table>/dt=<day>.json: the last refused commit of a day, so a reader learns why it is missing.
REFUSED_PREFIX = PREDICTIONS_REFUSED
COMMIT_ATTEMPTS = 20
# Commits between two Delta checkpoints. Opening the table replays every JSON commit since
# the last checkpoint (one GET each on S3); delta-rs checkpoints every 100 by default, which
# made every open of a nightly table cost up to 100 reads after 100 nights. A table gets
# about one commit a night, so a checkpoint per commit is one small write a night, and every
# open costs the same on the second night as after a year: the checkpoint and no commit.
CHECKPOINT_EVERY = 1


class PartitionIncomplete(RuntimeError):
    """The partition has no committed snapshot (yet, or at the requested time)."""


class ConcurrentCommit(RuntimeError):
    """The commit kept losing to other writers of the table and gave up; nothing was published."""


class TableMissing(PartitionIncomplete):
    """No table exists at this location (nothing was ever committed)."""


def prediction_schema(num_classes: int | None = None) -> pa.Schema:
    """The documented columns of every prediction row (``dt`` is the table's partition column);
    ``probabilities`` has ``num_classes`` entries (default: the deployment's default task's)."""
    import pyarrow as pa

    if num_classes is None:
        from mlcore.task import default_task

        num_classes = default_task().num_classes

    return pa.schema([
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("predicted_class", pa.int32(), nullable=False),
        pa.field("predicted_label", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32(), num_classes),
                 nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("model_run_id", pa.string(), nullable=False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("dag_run_id", pa.string(), nullable=False),
    ])


def stored_schema() -> pa.Schema:
    """The columns as the data files and the Delta log hold them: Delta has no fixed-size
    list, so ``probabilities`` is stored as a list (always of the task's class count), which every engine reads
    alike; :func:`read_partition` gives it back as ``fixed_size_list<float32>[classes]``."""
    import pyarrow as pa

    schema = prediction_schema()
    i = schema.get_field_index("probabilities")
    return schema.set(i, pa.field("probabilities", pa.list_(pa.float32()), nullable=False))


def table_schema() -> pa.Schema:
    import pyarrow as pa

    return stored_schema().append(pa.field(PARTITION, pa.string(), nullable=False))


def partition_dir(day: date, table: str = PREDICTIONS) -> str:
    """The lake folder of one partition: every data file of ``day`` lies under it."""
    return f"{table}/{PARTITION}={day:%Y-%m-%d}"


def _app_id(table: str, day: date) -> str:
    return f"mlcore/{table}/{PARTITION}={day:%Y-%m-%d}"


@dataclass(frozen=True)
class PartFile:
    """A data file written by a scoring task, not yet (or already) committed; ``shard``: the
    curated shard whose rows it holds."""

    key: str
    rows: int
    size: int
    shard: str = ""


@dataclass
class Commit:
    """One committed replacement of a partition: the snapshot ``version`` holds exactly ``files``."""

    table: str
    partition: str
    version: int
    rows: int
    files: list[str]
    metadata: dict = field(default_factory=dict)


def _safe(text: str, keep: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:keep] or "x"


UNIQUE_SUFFIX = "-unique"  # a data file rewritten without the ids an earlier shard holds


def shard_mark(shard: str) -> str:
    """The mark of curated shard ``shard`` in the names of the data files scored from it."""
    import hashlib

    return hashlib.sha256(shard.encode()).hexdigest()[:12]


def _mark_of(path: str) -> str:
    """``part-<run>-<mark>-<uuid>.parquet`` -> ``<mark>`` (neither mark nor uuid has a dash);
    ``""`` for a file not named by :func:`write_part`. A part rewritten without duplicate ids
    (``...-unique.parquet``, :func:`drop_duplicate_ids`) keeps its shard's mark."""
    parts = (path.rsplit("/", 1)[-1].removesuffix(".parquet").removesuffix(UNIQUE_SUFFIX)
             .rsplit("-", 2))
    return parts[-2] if len(parts) == 3 else ""


def write_part(lake: Lake, data: pa.Table, *, day: date, dag_run_id: str, shard: str,
               table: str = PREDICTIONS) -> PartFile:
    """Write one data file of ``day`` (without the ``dt`` column: Delta keeps partition values
    in its log). The key is new for every run and every try, so nothing is ever overwritten."""
    key = (f"{partition_dir(day, table)}/part-{_safe(dag_run_id)}-{shard_mark(shard)}-"
           f"{uuid.uuid4().hex}.parquet")
    body = _part_body(data)
    lake.write_bytes(key, body)
    return PartFile(key, data.num_rows, len(body), shard)


# Columns with few distinct values in a data file: dictionary-encoded. Parquet's default
# tries every column, and on the unique ids and the probabilities it builds a dictionary
# only to give up on it (measured: a quarter of the write time, a sixth of the file).
DICTIONARY_COLUMNS = ["batch_id", "predicted_class", "predicted_label", "model_name",
                      "model_version", "model_run_id", "scored_at", "dag_run_id"]


def _part_body(data: pa.Table) -> bytes:
    from mlcore.storage import parquet_bytes

    return parquet_bytes(data.select(stored_schema().names).cast(stored_schema()),
                         use_dictionary=DICTIONARY_COLUMNS)


def prediction_rows(rows: pa.Table, probabilities: np.ndarray, *, classes: tuple[str, ...],
                    model: PinnedModel, scored_at: datetime, run_id: str) -> pa.Table:
    """The table's rows for scored images (``rows``: their ``image_id``, ``source_key``,
    ``batch_id``) and the (N, classes) probabilities ``model`` gave them."""
    import numpy as np
    import pyarrow as pa

    probs = probabilities.astype(np.float32)
    predicted = pa.array(probs.argmax(axis=1).astype(np.int32))
    n = rows.num_rows

    def constant(value, type_: pa.DataType | None = None) -> pa.Array:
        # One value for every row, without a Python list of n (a list of n datetimes
        # took 30 ms a 50,000-row shard).
        return pa.repeat(pa.scalar(value, type_), n)

    return pa.Table.from_arrays(
        [
            rows.column("image_id"), rows.column("source_key"), rows.column("batch_id"),
            predicted, pa.array(classes, pa.string()).take(predicted),
            pa.array(probs.max(axis=1)),
            pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), len(classes)),
            constant(model.name), constant(model.version), constant(model.run_id),
            constant(scored_at, pa.timestamp("us", tz="UTC")), constant(run_id),
        ],
        schema=prediction_schema(len(classes)),
    )


def commit_partition(rt: Runtime, *, day: date, parts: list[PartFile], expected_rows: int,
                     validated_at: datetime, run_id: str, metadata: dict,
                     table: str = PREDICTIONS) -> Commit:
    """Validate the data files with the GX ``predictions`` suite, then make them partition
    ``day`` in one commit (:func:`replace_partition`), recording ``metadata`` and the
    validation. Nothing is published when validation fails: the reason is recorded for
    readers and the files stay unreferenced until vacuum.

    ``expected_rows`` is how many rows ``parts`` hold together. An image id that the parts
    of several shards hold (a duplicate in curated, as a lake curated before image-id claims
    may hold) is published once, from the first of those shards in key order (ingestion
    day, batch id, part): :func:`drop_duplicate_ids`. So such a duplicate never fails the
    night; how many rows were dropped is logged and recorded in the commit."""
    from mlcore import lineage
    from mlcore.validation import ValidationFailed, run_suite

    lake, settings = rt.lake, rt.settings
    parts, dropped = drop_duplicate_ids(lake, parts)
    if dropped:
        log.warning("%s for %s: %d rows dropped whose image id the data file of an earlier "
                    "shard already holds (each image is published once). Curated holds "
                    "duplicates, as a lake curated before image-id claims may: run `mlcore "
                    "ingest repair` to remove them.", table, day, dropped)
    parts = sorted(parts, key=lambda p: p.key)
    check = run_suite(lake, settings.gx_suites_dir, "predictions",
                      frame=_validation_frame(lake, parts, num_classes=rt.task.num_classes),
                      run_name=f"{table}-{day:%Y-%m-%d}", run_time=validated_at,
                      parameters={"expected_rows": expected_rows - dropped,
                                  "class_names": list(rt.task.classes)},
                      key_column="image_id")
    if not check.success:
        refused = ValidationFailed.for_page(f"{table} for {day}", check.failed_expectations,
                                            check.docs_key, lake=lake,
                                            data_docs_url=settings.data_docs_url)
        record_refusal(lake, day, table=table, failed_expectations=check.failed_expectations,
                       docs_url=refused.docs_url, dag_run_id=run_id)
        raise refused
    commit = replace_partition(lake, day, parts, table=table, metadata={
        **metadata,
        "validation": {"suite": check.suite, "success": check.success, "docs_key": check.docs_key},
        "dag_run_id": run_id,
        "duplicates_dropped": dropped,
    })
    lineage.report(lake, inputs=[p.key for p in parts], outputs=[commit.partition])
    return commit


def drop_duplicate_ids(lake: Lake, parts: list[PartFile]) -> tuple[list[PartFile], int]:
    """``parts`` in shard order with each image id kept only in the first shard holding it,
    and how many rows were dropped. Rows of one shard are never dropped for each other (a
    shard scored twice is a scoring fault the suite refuses, not a curated duplicate).

    Reads the ``image_id`` column of the night's own data files only (O(night), never the
    history; the files whole only when they lose rows). A part that loses rows is replaced by a new file named after it
    (``...-unique.parquet``, create-if-absent: a retry writes the same bytes, so a retried
    commit that already landed stays a no-op); the old file is left to vacuum.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.storage import read_columns, read_parquet

    parts = sorted(parts, key=lambda p: (p.shard or p.key, p.key))
    # Ranged reads of one column chunk, not whole files.
    ids = [read_columns(lake, part.key, ["image_id"]).column("image_id").combine_chunks()
           for part in parts]
    total = sum(len(col) for col in ids)
    if total == 0:
        return parts, 0
    every = pa.concat_arrays(ids)
    if pc.count_distinct(every).as_py() == total:  # the usual night: nothing to look at
        return parts, 0
    shard_of = [p.shard or p.key for p in parts]
    source = np.repeat([shard_of.index(s) for s in shard_of], [len(col) for col in ids])
    groups = pa.table({"image_id": every, "at": np.arange(total)}).group_by("image_id").aggregate(
        [("at", "min")])
    first = groups.column("at_min").to_numpy()[pc.index_in(every, groups.column("image_id"))
                                                .to_numpy()]
    keep = source == source[first]  # a row stays unless an earlier shard holds its id
    out, start = [], 0
    for part, col in zip(parts, ids, strict=True):
        mask, start = keep[start : start + len(col)], start + len(col)
        if mask.all():
            out.append(part)
        elif mask.any():
            rows = read_parquet(lake, part.key).filter(pa.array(mask))
            body, key = _part_body(rows), part.key.removesuffix(".parquet") + f"{UNIQUE_SUFFIX}.parquet"
            if not lake.write_if_absent(key, body):  # the same parts always give the same rows
                raise RuntimeError(f"{key} exists with other content; not overwritten")
            out.append(PartFile(key, rows.num_rows, len(body), part.shard))
    return out, total - int(keep.sum())


def _validation_frame(lake: Lake, parts: list[PartFile], *, num_classes: int) -> pd.DataFrame:
    """What the ``predictions`` suite checks, one row per prediction, kept compact (about 80
    bytes a row: Arrow-backed ids, categorical labels, one float per probability vector) so a
    night of millions of images validates in a few hundred MB."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.storage import read_parquet

    columns = ["image_id", "predicted_label", "confidence", "probabilities"]
    chunks = []
    for part in parts:
        data = read_parquet(lake, part.key, columns)
        probs = data.column("probabilities").combine_chunks()
        chunks.append(pa.table({
            "image_id": data.column("image_id"),
            "predicted_label": pc.dictionary_encode(data.column("predicted_label")),
            # float64: GX checks a range vectorized only for int and float64 columns; on
            # float32 it calls a Python function per row (0.25 s per 100,000 rows).
            "confidence": data.column("confidence").cast(pa.float64()),
            "prob_sum": np.asarray(probs.flatten()).reshape(-1, num_classes)
            .sum(axis=1, dtype=np.float64),
        }))
    if not chunks:
        return pd.DataFrame({c: [] for c in ["image_id", "predicted_label", "confidence",
                                             "prob_sum"]})
    return pa.concat_tables(chunks).to_pandas(
        types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get)


def open_table(lake: Lake, table: str = PREDICTIONS,
               as_of: int | datetime | None = None) -> DeltaTable:
    """The table's current snapshot, or the one at ``as_of`` (a version, or a time: the last
    commit at or before it, which is what a consumer reading then saw)."""
    dt = _existing_table(lake, table)
    if dt is None:
        raise TableMissing(f"{table}: no table yet (nothing was ever committed)")
    if as_of is not None:
        try:
            dt.load_as_version(as_of)
        except Exception as exc:  # deltalake raises a plain error for "before the first commit"
            raise PartitionIncomplete(f"{table}: no snapshot at {as_of}: {exc}") from exc
    return dt


def _existing_table(lake: Lake, table: str) -> DeltaTable | None:
    """The table opened once (one log replay: ``is_deltatable`` first would be a second),
    or None when it has no commit yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from mlcore.storage import table_location

    loc = table_location(lake, table)
    try:
        return DeltaTable(loc.uri, storage_options=loc.storage_options)
    except TableNotFoundError:
        return None


def _ensure_table(lake: Lake, table: str) -> DeltaTable:
    """The table, created empty if absent. Two first writers may race for version 0: with no
    commit retries the loser fails (rather than re-creating the table as version 1) and opens
    the winner's table."""
    from deltalake import DeltaTable
    from deltalake.transaction import CommitProperties

    from mlcore.storage import table_location

    loc = table_location(lake, table)
    for _ in range(3):
        if (dt := _existing_table(lake, table)) is not None:
            return dt
        try:
            return DeltaTable.create(loc.uri, table_schema(), mode="ignore",
                                     partition_by=[PARTITION], name=table,
                                     storage_options=loc.storage_options,
                                     commit_properties=CommitProperties(max_commit_retries=0))
        except Exception as exc:  # lost the create race: the table exists now
            log.info("%s: creating the table raced with another writer (%s)", table, exc)
    return DeltaTable(loc.uri, storage_options=loc.storage_options)


def _relative(table: str, key: str) -> str:
    prefix = f"{table}/"
    if not key.startswith(f"{prefix}{PARTITION}="):
        raise ValueError(f"{key} is not a data file of table {table}")
    return key[len(prefix):]


def _partition_files(dt: DeltaTable, day: date) -> set[str]:
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()  # arro3 -> pyarrow
    values = actions.get(f"partition.{PARTITION}", [])
    return {p for p, v in zip(actions.get("path", []), values, strict=True)
            if v == f"{day:%Y-%m-%d}"}


def replace_partition(lake: Lake, day: date, parts: list[PartFile], *, table: str = PREDICTIONS,
                      metadata: dict | None = None, attempts: int = COMMIT_ATTEMPTS) -> Commit:
    """Make ``parts`` the whole of partition ``day`` in one atomic commit.

    A retry of a commit that already landed (the task died after committing) finds the
    partition holding exactly these files and returns that commit instead of a second one.
    """
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties, Transaction

    partition = f"{PARTITION}={day:%Y-%m-%d}"
    where = partition_dir(day, table)
    paths = sorted(_relative(table, p.key) for p in parts)
    rows = sum(p.rows for p in parts)
    # commit_id finds this commit's version in the history, whoever committed around it.
    info = {**(metadata or {}), "partition": partition, "rows": rows,
            "commit_id": uuid.uuid4().hex}
    # modificationTime is the wall clock of the commit, as every Delta writer records it; no
    # rule of ours (retention included) reads it.
    adds = [AddAction(_relative(table, p.key), p.size, {PARTITION: f"{day:%Y-%m-%d}"},
                      int(time.time() * 1000), True, json.dumps({"numRecords": p.rows}))
            for p in sorted(parts, key=lambda p: p.key)]
    app_id = _app_id(table, day)
    for attempt in range(attempts):
        dt = _ensure_table(lake, table)
        if paths and _partition_files(dt, day) == set(paths):
            log.info("%s/%s already holds these %d files (version %d): nothing to commit",
                     table, partition, len(paths), dt.version())
            return Commit(table, where, dt.version(), rows, paths, info)
        txn = Transaction(app_id, (dt.transaction_version(app_id) or 0) + 1)
        try:
            dt.create_write_transaction(
                adds, "overwrite", table_schema(), partition_by=[PARTITION],
                partition_filters=[(PARTITION, "=", f"{day:%Y-%m-%d}")],
                commit_properties=CommitProperties(custom_metadata={"mlcore": info},
                                                   app_transactions=[txn]))
        except CommitFailedError as exc:
            # Another run committed this partition (or the table) first: retry on its snapshot.
            log.info("%s/%s: commit attempt %d lost to a concurrent writer (%s); retrying",
                     table, partition, attempt + 1, exc)
            time.sleep(min(0.05 * 2 ** attempt, 2.0))
            continue
        commit = Commit(table, where, _version_of(dt, info["commit_id"]), rows, paths, info)
        _checkpoint_now_and_then(dt, table)
        log.info("committed %s/%s as version %d: %d rows in %d files", table, partition,
                 commit.version, rows, len(paths))
        return commit
    raise ConcurrentCommit(f"{table}/{partition}: gave up after {attempts} conflicting commits")


def _checkpoint_now_and_then(dt: DeltaTable, table: str) -> None:
    """A checkpoint every ``CHECKPOINT_EVERY`` versions, so opening the table reads one
    checkpoint and fewer than that many commits, however many nights it holds."""
    if dt.version() % CHECKPOINT_EVERY:
        return
    try:
        dt.create_checkpoint()
    except Exception as exc:  # the commit has landed; a missing checkpoint only costs reads
        log.warning("%s: checkpoint at version %d failed: %s", table, dt.version(), exc)


def _version_of(dt: DeltaTable, commit_id: str) -> int:
    """The version of our commit ``commit_id``: almost always the newest, so the history is
    read one commit first (each is a GET on S3), then wider when others committed after us."""
    dt.update_incremental()
    for limit in (1, 50):
        for entry in dt.history(limit=limit):
            if (entry.get("mlcore") or {}).get("commit_id") == commit_id:
                return entry["version"]
    raise LookupError(f"commit {commit_id} is not among the table's last 50 commits")


def committed(dt: DeltaTable, day: date, table: str = PREDICTIONS) -> bool:
    """Whether this snapshot has a committed partition ``day`` (possibly with no rows): every
    mlcore commit of a partition records its app transaction, which snapshots keep."""
    return dt.transaction_version(_app_id(table, day)) is not None


def _refused_key(table: str, day: date) -> str:
    return f"{REFUSED_PREFIX}/{table}/{PARTITION}={day:%Y-%m-%d}.json"


def record_refusal(lake: Lake, day: date, *, table: str = PREDICTIONS,
                   failed_expectations: list[str], docs_url: str, dag_run_id: str) -> None:
    """Remember why a commit of ``day`` was refused (overwritten by the next refusal)."""
    lake.write_bytes(_refused_key(table, day), json.dumps({
        "failed_expectations": failed_expectations, "docs_url": docs_url,
        "dag_run_id": dag_run_id}).encode())


def _check_committed(dt: DeltaTable, table: str, day: date, as_of=None) -> None:
    if not committed(dt, day, table):
        when = f" at {as_of}" if as_of is not None else ""
        raise PartitionIncomplete(f"{table}/{PARTITION}={day:%Y-%m-%d} has no committed "
                                  f"snapshot{when}: not committed yet (batch_score has not "
                                  "published it; see the Airflow UI)")


def _refusal_said(lake: Lake, table: str, day: date, missing: PartitionIncomplete
                  ) -> PartitionIncomplete:
    """``missing``, or the reason the last commit of ``day`` was refused, if it was."""
    if not lake.exists(_refused_key(table, day)):
        return missing
    refused = json.loads(lake.read_bytes(_refused_key(table, day)))
    return PartitionIncomplete(
        f"{table}/{PARTITION}={day:%Y-%m-%d} is not published: run {refused['dag_run_id']} "
        f"produced predictions that failed validation "
        f"({', '.join(refused['failed_expectations'])}); see {refused['docs_url']}, fix the "
        "cause and rerun batch_score for that date")


def iter_partition(lake: Lake, day: date, *, table: str = PREDICTIONS,
                   columns: list[str] | None = None,
                   as_of: int | datetime | None = None) -> Iterator[pa.Table]:
    """The snapshot's files of ``day`` one at a time (bounded memory however big the night)."""
    try:
        dt = open_table(lake, table, as_of)
        _check_committed(dt, table, day, as_of)
    except PartitionIncomplete as missing:
        if as_of is not None:
            raise
        raise _refusal_said(lake, table, day, missing) from None
    dataset = dt.to_pyarrow_dataset(partitions=[(PARTITION, "=", f"{day:%Y-%m-%d}")])
    # By path: the same snapshot always reads in the same order (row N is one row).
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        yield fragment.to_table(columns=columns or prediction_schema().names,
                                schema=dataset.schema)


def read_partition(lake: Lake, day: date, *, table: str = PREDICTIONS,
                   columns: list[str] | None = None,
                   as_of: int | datetime | None = None) -> pa.Table:
    """Partition ``day`` as committed now (or at ``as_of``): the documented columns, or ``columns``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = list(iter_partition(lake, day, table=table, columns=columns, as_of=as_of))
    probs = [t.column("probabilities") for t in tables
             if "probabilities" in t.column_names and t.num_rows]
    # The table's own class count (each task's table holds its task's), else the default's.
    schema = prediction_schema(pc.list_value_length(probs[0]).to_pylist()[0] if probs else None)
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).cast(schema)  # probabilities: back to fixed_size_list[classes]


def scan(lake: Lake, *, table: str = PREDICTIONS, columns: list[str] | None = None,
         filter=None, as_of: int | datetime | None = None) -> pa.Table:
    """Rows of every committed partition matching ``filter`` (a pyarrow expression), with ``dt``."""
    try:
        dt = open_table(lake, table, as_of)
    except TableMissing:

        schema = table_schema()
        return (schema.empty_table().select(columns) if columns else schema.empty_table())
    return dt.to_pyarrow_dataset().to_table(columns=columns, filter=filter)


def scan_shards(lake: Lake, shards: list[str], *, table: str = PREDICTIONS,
                columns: list[str] | None = None, filter=None) -> pa.Table:
    """Rows matching ``filter`` in the current snapshot's data files scored from curated
    ``shards`` (found by the shard mark in their names): only those files are opened,
    however many partitions the table holds."""
    import pyarrow as pa

    marks = {shard_mark(s) for s in shards}
    try:
        dataset = open_table(lake, table).to_pyarrow_dataset()
    except TableMissing:
        dataset = None
    fragments = [f for f in (dataset.get_fragments() if dataset else [])
                 if _mark_of(f.path) in marks]
    if not fragments:
        schema = table_schema()
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    return pa.concat_tables([f.to_table(columns=columns, filter=filter, schema=dataset.schema)
                             for f in sorted(fragments, key=lambda f: f.path)])


def committed_days(lake: Lake, *, table: str = PREDICTIONS) -> list[date]:
    """The partitions the current snapshot holds rows for."""
    try:
        dt = open_table(lake, table)
    except TableMissing:
        return []
    return sorted(date.fromisoformat(p[PARTITION]) for p in dt.partitions())


def partition_commit(lake: Lake, day: date, *, table: str = PREDICTIONS) -> Commit:
    """The commit that made partition ``day`` what it is now, with what it recorded (model,
    inputs, validation, run id). Raises :class:`PartitionIncomplete` if there is none."""
    dt = open_table(lake, table)
    _check_committed(dt, table, day)
    partition = f"{PARTITION}={day:%Y-%m-%d}"
    files = sorted(_partition_files(dt, day))
    for entry in dt.history():
        info = entry.get("mlcore") or {}
        if info.get("partition") == partition:
            return Commit(table, partition_dir(day, table), entry["version"], info.get("rows", 0),
                          files, info)
    raise PartitionIncomplete(f"{table}/{partition}: no mlcore commit in the table history")


def history(lake: Lake, *, table: str = PREDICTIONS) -> list[dict[str, Any]]:
    """Every commit, newest first: version, time, operation and what mlcore recorded."""
    return [{"version": e["version"], "timestamp": e["timestamp"],
             "operation": e.get("operation"), **(e.get("mlcore") or {})}
            for e in open_table(lake, table).history()]


def vacuum(lake: Lake, *, table: str = PREDICTIONS, retention_hours: float) -> list[str]:
    """Delete files that no snapshot of the last ``retention_hours`` references: files removed
    by a commit longer ago than that, and files no commit ever added (killed runs) that are
    older than that. Time travel inside the retention keeps working."""
    try:
        dt = open_table(lake, table)
    except TableMissing:
        return []
    deleted = dt.vacuum(retention_hours=int(retention_hours), dry_run=False,
                        enforce_retention_duration=False, full=True)
    log.info("vacuumed %s: %d files older than %sh and in no live snapshot", table,
             len(deleted), retention_hours)
    return deleted


# --- Small tables (monitoring figures) -----------------------------------------------------


def overwrite_rows(lake: Lake, key: str, rows: pa.Table, *, day: date | None = None) -> None:
    """Replace a small Delta table's rows (or only partition ``day``'s) in one commit; earlier
    versions stay readable."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from mlcore.storage import table_location

    loc = table_location(lake, key)
    if day is None:
        write_deltalake(loc.uri, rows, mode="overwrite", schema_mode="overwrite",
                        storage_options=loc.storage_options)
        return
    if PARTITION in rows.column_names:
        rows = rows.drop_columns([PARTITION])
    rows = rows.append_column(PARTITION, pa.array([f"{day:%Y-%m-%d}"] * rows.num_rows))
    write_deltalake(loc.uri, rows, mode="overwrite", partition_by=[PARTITION],
                    predicate=f"{PARTITION} = '{day:%Y-%m-%d}'",
                    storage_options=loc.storage_options)


def read_rows(lake: Lake, key: str, *, day: date | None = None) -> pa.Table:
    """A small Delta table's current rows (only partition ``day``'s, without ``dt``, if given)."""
    dt = open_table(lake, key)
    if day is None:
        return dt.to_pyarrow_table()
    return dt.to_pyarrow_table(partitions=[(PARTITION, "=", f"{day:%Y-%m-%d}")]).drop_columns(
        [PARTITION])


# --- Migration from the manifest protocol --------------------------------------------------

OLD_MANIFEST = "_manifest.json"


def migrate_manifests(lake: Lake, *, table: str = PREDICTIONS) -> list[Commit]:
    """Convert partitions of the old manifest protocol (``<table>/dt=…/_manifest.json``) into
    commits of the Delta table, once: each manifest's files (checked against their sha256)
    are rewritten as new data files and committed as that partition, then the manifest files
    are deleted. Partitions the table already holds are left alone; the old part files are
    unreferenced, so the next vacuum removes them."""
    import hashlib

    from mlcore.storage import parquet_table

    commits = []
    for key in lake.list(table):
        if not key.endswith(f"/{OLD_MANIFEST}") or "/_delta_log/" in key:
            continue
        manifest = json.loads(lake.read_bytes(key))
        day = date.fromisoformat(key.split(f"{PARTITION}=")[1].split("/")[0])
        try:
            already = committed(open_table(lake, table), day, table)
        except TableMissing:
            already = False
        if not already:
            parts = []
            for f in manifest["files"]:
                data = lake.read_bytes(f["key"])
                if hashlib.sha256(data).hexdigest() != f["sha256"]:
                    raise PartitionIncomplete(f"{f['key']} does not match its manifest checksum")
                rows = parquet_table(data)
                parts.append(write_part(lake, rows, day=day, shard=f["key"],
                                        dag_run_id=manifest.get("dag_run_id") or "migrated",
                                        table=table))
            commits.append(replace_partition(lake, day, parts, table=table, metadata={
                "migrated_from": f"{OLD_MANIFEST} generation {manifest.get('generation')}",
                **{k: manifest[k] for k in ("model", "code_version", "validation", "dag_run_id")
                   if k in manifest}}))
        prefix = key.rsplit("/", 1)[0]
        for old in lake.list(f"{prefix}/_manifests"):
            lake.delete(old)
        lake.delete(key)  # last: an interrupted migration is simply run again
    return commits
