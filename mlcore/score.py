"""Batch scoring: curated shards -> ``predictions/dt=YYYY-MM-DD/`` with a manifest written last.

Which images a run scores: those whose ``ingested_at`` lies in the run's data interval
``[start, end)``. ``ingested_at`` is the logical date of the ingestion run that accepted
them, so the rule never depends on the wall clock.

Commit protocol: part files go to keys derived from (shard, model version, input hash), so
a rerun with the same inputs rewrites identical bytes; ``_manifest.json`` is written last
and lists the files with their row counts and sha256. Readers trust only the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from mlcore import lineage
from mlcore.data import CLASSES, read_shard, shard_pixels, shards_for_dates
from mlcore.storage import parquet_bytes

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlcore.registry import PinnedModel
    from mlcore.settings import Settings
    from mlcore.storage import Lake

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
SHADOW = "predictions_shadow"  # the challenger's predictions: same layout, never for consumers
MANIFEST = "_manifest.json"


class PartitionIncomplete(RuntimeError):
    """A partition has no manifest, or its files do not match it."""


class ConcurrentCommit(RuntimeError):
    """Another run committed this partition at the same time; this run did not publish."""


def prediction_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("predicted_class", pa.int32(), nullable=False),
        pa.field("predicted_label", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32(), 10), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("model_run_id", pa.string(), nullable=False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("dag_run_id", pa.string(), nullable=False),
    ])


def partition_prefix(day: date, root: str = PREDICTIONS) -> str:
    return f"{root}/dt={day:%Y-%m-%d}"


@dataclass(frozen=True)
class ScoringWindow:
    """What one run scores: images ingested in ``[start, end)``, published as partition ``day``."""

    start: datetime
    end: datetime
    day: date

    @classmethod
    def resolve(cls, start: datetime, end: datetime, on_date: str = "",
                rescore_all: bool = False) -> ScoringWindow:
        """The run's data interval, or the same-shaped interval of ``on_date`` (YYYY-MM-DD);
        ``rescore_all`` widens it back to the beginning (everything ingested before ``end``)."""
        if on_date:
            shift = datetime.combine(date.fromisoformat(on_date), start.timetz()) - start
            start, end = start + shift, end + shift
        day = start.date()
        if rescore_all:
            start = datetime(1970, 1, 1, tzinfo=start.tzinfo)
        return cls(start, end, day)

    def to_xcom(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "day": self.day.isoformat()}

    @classmethod
    def from_xcom(cls, raw: dict) -> ScoringWindow:
        return cls(datetime.fromisoformat(raw["start"]), datetime.fromisoformat(raw["end"]),
                   date.fromisoformat(raw["day"]))


def shards_in_interval(lake: Lake, start: datetime, end: datetime) -> list[str]:
    """Curated shards that may hold images ingested in ``[start, end)``."""
    days, day = [], start.date()
    while datetime.combine(day, datetime.min.time(), start.tzinfo) < end:
        days.append(f"{day:%Y-%m-%d}")
        day += timedelta(days=1)
    return shards_for_dates(lake, days)


def inputs_hash(shards: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(shards)).encode()).hexdigest()


def rows_to_score(lake: Lake, shard: str, start: datetime, end: datetime,
                  columns: list[str]) -> pa.Table:
    """The shard's unlabeled rows ingested in ``[start, end)`` (labeled rows train, not score)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_shard(lake, shard, [*columns, "label", "ingested_at"])
    ts = table.column("ingested_at")
    keep = pc.and_(
        pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type))),
        pc.is_null(table.column("label")),
    )
    return table.filter(keep).select(columns)


def count_inputs(lake: Lake, shards: list[str], start: datetime, end: datetime) -> int:
    """How many rows the partition must hold: the validation's expected row count."""
    return sum(rows_to_score(lake, s, start, end, ["image_id"]).num_rows for s in shards)


@dataclass
class PartFile:
    key: str
    rows: int
    sha256: str


def score_shard(
    lake: Lake,
    settings: Settings,
    pinned: PinnedModel,
    shard: str,
    start: datetime,
    end: datetime,
    scored_at: datetime,
    dag_run_id: str,
    model=None,
    root: str = PREDICTIONS,
) -> PartFile | None:
    """Score one shard's rows in the interval into one part file; ``None`` if it has none.

    ``model``: the pinned version's served graph (:func:`mlcore.serving.load_served`;
    callers scoring many shards load it once); by default it is loaded here.
    """
    import pyarrow as pa

    from mlcore.serving import load_served

    table = rows_to_score(lake, shard, start, end,
                          ["image_id", "pixels", "source_key", "batch_id"])
    if table.num_rows == 0:
        return None
    table = table.sort_by("image_id")
    model = model or load_served(settings, lake, pinned)  # int8 ONNX, sha256-checked, no torch
    probs = model.predict_proba(shard_pixels(table), settings.score_batch_size).astype(np.float32)
    classes = probs.argmax(axis=1).astype(np.int32)
    n = table.num_rows
    out = pa.Table.from_arrays(
        [
            table.column("image_id"), table.column("source_key"), table.column("batch_id"),
            pa.array(classes),
            pa.array(np.asarray(CLASSES, dtype=object)[classes], pa.string()),
            pa.array(probs.max(axis=1)),
            pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), 10),
            pa.array([pinned.name] * n), pa.array([pinned.version] * n),
            pa.array([pinned.run_id] * n),
            pa.array([scored_at] * n, pa.timestamp("us", tz="UTC")),
            pa.array([dag_run_id] * n),
        ],
        schema=prediction_schema(),
    )
    token = hashlib.sha256(f"{shard}|{pinned.version}|{pinned.weights_sha256}".encode()).hexdigest()
    key = f"{partition_prefix(start.date(), root)}/part-{token[:16]}.parquet"
    data = parquet_bytes(out)
    lake.write_bytes(key, data)
    lineage.report(lake, inputs=[shard], outputs=[key])
    return PartFile(key, n, hashlib.sha256(data).hexdigest())


def commit_partition(
    lake: Lake,
    settings: Settings,
    pinned: PinnedModel,
    day: date,
    parts: list[PartFile],
    shards: list[str],
    expected_rows: int,
    dag_run_id: str,
    run_time: datetime,
    root: str = PREDICTIONS,
) -> dict:
    """Validate the parts with GX, then write ``_manifest.json`` last: the commit point."""
    from mlcore.registry import code_version
    from mlcore.validation import ValidationFailed, run_suite

    parts = sorted(parts, key=lambda p: p.key)
    check = run_suite(lake, settings.gx_suites_dir, "predictions", _validation_frame(lake, parts),
                      f"{root}-{day:%Y-%m-%d}", run_time, {"expected_rows": expected_rows},
                      key_column="image_id")
    if not check.success:
        raise ValidationFailed.for_page(f"predictions for {day}", check.failed_expectations,
                                        check.docs_key, lake, settings.data_docs_url)
    prefix = partition_prefix(day, root)
    current = _current_manifest(lake, day, root)
    generation = current["generation"] + 1 if current else 1
    manifest = {
        "partition": prefix,
        "generation": generation,
        "files": [asdict(p) for p in parts],
        "rows": sum(p.rows for p in parts),
        "schema": prediction_schema().to_string(),
        "model": asdict(pinned),
        "inputs": {"shards": sorted(shards), "hash": inputs_hash(shards)},
        "code_version": code_version(),
        "validation": {"suite": check.suite, "success": check.success, "docs_key": check.docs_key},
        "dag_run_id": dag_run_id,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    # Optimistic concurrency: one writer wins each generation; a concurrent run loses here.
    if not lake.write_if_absent(f"{prefix}/_manifests/{generation:06d}.json", body):
        raise ConcurrentCommit(f"{prefix}: generation {generation} was committed by another run")
    lake.write_bytes(f"{prefix}/{MANIFEST}", body)  # the commit point: readers trust only this
    lineage.report(lake, inputs=[p.key for p in parts], outputs=[f"{prefix}/{MANIFEST}"])
    _remove_unreferenced_parts(lake, prefix, manifest, current)
    log.info("committed %s (generation %d): %d rows in %d files", prefix, generation,
             manifest["rows"], len(parts))
    return manifest


def _validation_frame(lake: Lake, parts: list[PartFile]) -> pd.DataFrame:
    """What the ``predictions`` suite checks, one row per prediction, kept compact (about 80
    bytes a row: Arrow-backed ids, categorical labels, one float per probability vector) so a
    night of millions of images validates in a few hundred MB."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.storage import read_parquet

    columns = ["image_id", "predicted_label", "confidence", "probabilities"]
    chunks = []
    for part in parts:
        table = read_parquet(lake, part.key, columns)
        probs = table.column("probabilities").combine_chunks()
        chunks.append(pa.table({
            "image_id": table.column("image_id"),
            "predicted_label": pc.dictionary_encode(table.column("predicted_label")),
            "confidence": table.column("confidence"),
            "prob_sum": np.asarray(probs.flatten()).reshape(-1, 10).sum(axis=1, dtype=np.float64),
        }))
    if not chunks:
        return pd.DataFrame({c: [] for c in ["image_id", "predicted_label", "confidence",
                                             "prob_sum"]})
    return pa.concat_tables(chunks).to_pandas(
        types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get)


def _current_manifest(lake: Lake, day: date, root: str) -> dict | None:
    try:
        return read_manifest(lake, day, root)
    except PartitionIncomplete:
        return None


def _remove_unreferenced_parts(lake: Lake, prefix: str, manifest: dict, previous: dict | None):
    """Delete parts neither generation references: leftovers of killed or superseded runs.

    The previous generation's files are kept, so a reader that fetched the old manifest a
    moment ago can still read it.
    """
    keep = {f["key"] for m in (manifest, previous) if m for f in m["files"]}
    for key in lake.list(prefix):
        if key.endswith(".parquet") and key not in keep:
            lake.delete(key)


def read_manifest(lake: Lake, day: date, root: str = PREDICTIONS) -> dict:
    key = f"{partition_prefix(day, root)}/{MANIFEST}"
    if not lake.exists(key):
        raise PartitionIncomplete(f"{partition_prefix(day, root)} has no manifest: not committed yet")
    return json.loads(lake.read_bytes(key))


def iter_predictions(lake: Lake, day: date, root: str = PREDICTIONS,
                     columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The manifest's files one at a time (all columns, or ``columns``), each checked
    against its recorded sha256: a whole night never has to fit in memory."""
    from mlcore.storage import parquet_table

    for part in read_manifest(lake, day, root)["files"]:
        data = lake.read_bytes(part["key"])
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise PartitionIncomplete(f"{part['key']} does not match its manifest checksum")
        yield parquet_table(data, columns)


def read_predictions(lake: Lake, day: date, root: str = PREDICTIONS,
                     columns: list[str] | None = None) -> pa.Table:
    """Exactly the manifest's files, each checked against its recorded sha256."""
    import pyarrow as pa

    tables = list(iter_predictions(lake, day, root, columns))
    if tables:
        return pa.concat_tables(tables)
    empty = prediction_schema().empty_table()
    return empty.select(columns) if columns else empty


def shadow_score(lake: Lake, settings: Settings, champion: PinnedModel, challenger: PinnedModel,
                 day: date, shards: list[str], start: datetime, end: datetime,
                 dag_run_id: str) -> dict:
    """Score the same shards with the challenger under ``predictions_shadow/`` and record how
    often it agrees with the champion's committed predictions."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.serving import load_served

    model = load_served(settings, lake, challenger)
    parts = [p for s in shards if (p := score_shard(lake, settings, challenger, s, start, end, end,
                                                    dag_run_id, model, root=SHADOW))]
    commit_partition(lake, settings, challenger, day, parts, shards,
                     count_inputs(lake, shards, start, end), dag_run_id, end, root=SHADOW)
    columns = ["image_id", "predicted_class"]
    joined = read_predictions(lake, day, columns=columns).join(
        read_predictions(lake, day, SHADOW, columns), "image_id", right_suffix="_challenger")
    agree = pc.sum(pc.equal(joined.column("predicted_class"),
                            joined.column("predicted_class_challenger"))).as_py() or 0
    result = {"dt": str(day), "champion_version": champion.version,
              "challenger_version": challenger.version, "rows": joined.num_rows,
              "agreement": agree / joined.num_rows if joined.num_rows else None}
    lake.write_bytes(f"monitoring/dt={day}/shadow.parquet",
                     parquet_bytes(pa.Table.from_pylist([result])))
    log.info("shadow: challenger v%s agrees with champion v%s on %s of %d rows",
             challenger.version, champion.version, result["agreement"], joined.num_rows)
    return result
