"""Batch scoring: curated shards -> the ``predictions`` Delta table, one partition per run.

Which images a run scores: those whose ``ingested_at`` lies in the run's data interval
``[start, end)``. ``ingested_at`` is the logical date of the ingestion run that accepted
them, so the rule never depends on the wall clock.

Publishing (see :mod:`mlcore.predictions`): each shard's predictions become one new data file
in the partition's folder, and the commit validates them with GX, then replaces partition
``dt=<day>`` in one atomic Delta commit. Readers see only committed snapshots.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from mlcore import lineage
from mlcore.data import read_shard, shard_pixels, shards_for_dates
from mlcore.predictions import (
    PREDICTIONS,
    SHADOW,
    Commit,
    PartFile,
    prediction_schema,
    read_partition,
    record_refusal,
    replace_partition,
    write_part,
)
from mlcore.task import task_of

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlcore.registry import PinnedModel
    from mlcore.settings import Settings
    from mlcore.storage import Lake

__all__ = ["PREDICTIONS", "SHADOW", "Commit", "PartFile", "ScoringWindow", "commit_partition",
           "count_inputs", "prediction_schema", "rows_to_score", "score_shard", "shadow_score",
           "shards_in_interval"]

log = logging.getLogger(__name__)

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
            # Whole days as a plain timedelta: Airflow passes pendulum datetimes, whose
            # differences are calendar intervals (months + days) that land a day off when
            # added back across month ends.
            shift = timedelta(days=(date.fromisoformat(on_date) - start.date()).days)
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



def score_shard(lake: Lake, settings: Settings, pinned: PinnedModel, shard: str,
                window: ScoringWindow, *, dag_run_id: str, model=None,
                table: str = PREDICTIONS) -> PartFile | None:
    """Score one shard's rows in the window into one new data file of partition
    ``window.day`` (never elsewhere, ``rescore_all`` included); ``None`` if it has none.

    ``model``: the pinned version's served graph (:func:`mlcore.serving.load_served`;
    callers scoring many shards load it once); by default it is loaded here.
    """
    import pyarrow as pa

    from mlcore.serving import load_served

    rows = rows_to_score(lake, shard, window.start, window.end,
                         ["image_id", "pixels", "source_key", "batch_id"])
    if rows.num_rows == 0:
        return None
    rows = rows.sort_by("image_id")
    model = model or load_served(settings, lake, pinned)  # int8 ONNX, sha256-checked, no torch
    task = task_of(settings)
    probs = model.predict_proba(shard_pixels(rows, task), settings.score_batch_size
                                ).astype(np.float32)
    classes = probs.argmax(axis=1).astype(np.int32)
    names = task.classes
    n = rows.num_rows
    out = pa.Table.from_arrays(
        [
            rows.column("image_id"), rows.column("source_key"), rows.column("batch_id"),
            pa.array(classes),
            pa.array(np.asarray(names, dtype=object)[classes], pa.string()),
            pa.array(probs.max(axis=1)),
            pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), len(names)),
            pa.array([pinned.name] * n), pa.array([pinned.version] * n),
            pa.array([pinned.run_id] * n),
            # The interval's end, not the wall clock: a rerun records the same time.
            pa.array([window.end] * n, pa.timestamp("us", tz="UTC")),
            pa.array([dag_run_id] * n),
        ],
        schema=prediction_schema(task.num_classes),
    )
    part = write_part(lake, out, day=window.day, dag_run_id=dag_run_id, shard=shard, table=table)
    lineage.report(lake, inputs=[shard], outputs=[part.key])
    return part


def commit_partition(lake: Lake, settings: Settings, pinned: PinnedModel, window: ScoringWindow,
                     parts: list[PartFile], *, shards: list[str], expected_rows: int,
                     dag_run_id: str, table: str = PREDICTIONS) -> Commit:
    """Validate the data files with GX, then make them partition ``window.day`` in one commit.

    Nothing is published when validation fails: the files stay unreferenced until vacuum.
    """
    from mlcore.provenance import code_version
    from mlcore.validation import ValidationFailed, run_suite

    day = window.day
    parts = sorted(parts, key=lambda p: p.key)
    check = run_suite(lake, settings.gx_suites_dir, "predictions",
                      frame=_validation_frame(lake, parts, task_of(settings).num_classes),
                      run_name=f"{table}-{day:%Y-%m-%d}",
                      run_time=window.end,
                      parameters={"expected_rows": expected_rows,
                                  "class_names": list(task_of(settings).classes)},
                      key_column="image_id")
    if not check.success:
        refused = ValidationFailed.for_page(f"{table} for {day}", check.failed_expectations,
                                            check.docs_key, lake=lake,
                                            data_docs_url=settings.data_docs_url)
        record_refusal(lake, day, table=table, failed_expectations=check.failed_expectations,
                       docs_url=refused.docs_url, dag_run_id=dag_run_id)
        raise refused
    commit = replace_partition(lake, day, parts, table=table, metadata={
        "model": asdict(pinned),
        "inputs": {"shards": len(shards), "hash": inputs_hash(shards)},
        "code_version": code_version(),
        "validation": {"suite": check.suite, "success": check.success, "docs_key": check.docs_key},
        "dag_run_id": dag_run_id,
    })
    lineage.report(lake, inputs=[p.key for p in parts], outputs=[commit.partition])
    return commit


def _validation_frame(lake: Lake, parts: list[PartFile], num_classes: int) -> pd.DataFrame:
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
            "prob_sum": np.asarray(probs.flatten()).reshape(-1, num_classes)
            .sum(axis=1, dtype=np.float64),
        }))
    if not chunks:
        return pd.DataFrame({c: [] for c in ["image_id", "predicted_label", "confidence",
                                             "prob_sum"]})
    return pa.concat_tables(chunks).to_pandas(
        types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get)


def shadow_score(lake: Lake, settings: Settings, champion: PinnedModel, challenger: PinnedModel,
                 window: ScoringWindow, shards: list[str], *, dag_run_id: str) -> dict:
    """Score the same shards with the challenger into the ``predictions_shadow`` table and
    record how often it agrees with the champion's committed predictions."""
    import pyarrow.compute as pc

    from mlcore.monitor import record_shadow_agreement
    from mlcore.serving import load_served

    model = load_served(settings, lake, challenger)
    parts = [p for s in shards if (p := score_shard(lake, settings, challenger, s, window,
                                                    dag_run_id=dag_run_id, model=model,
                                                    table=SHADOW))]
    commit_partition(lake, settings, challenger, window, parts, shards=shards,
                     expected_rows=count_inputs(lake, shards, window.start, window.end),
                     dag_run_id=dag_run_id, table=SHADOW)
    columns = ["image_id", "predicted_class"]
    day = window.day
    joined = read_partition(lake, day, columns=columns).join(
        read_partition(lake, day, table=SHADOW, columns=columns), "image_id",
        right_suffix="_challenger")
    agree = pc.sum(pc.equal(joined.column("predicted_class"),
                            joined.column("predicted_class_challenger"))).as_py() or 0
    result = {"dt": str(day), "champion_version": champion.version,
              "challenger_version": challenger.version, "rows": joined.num_rows,
              "agreement": agree / joined.num_rows if joined.num_rows else None}
    record_shadow_agreement(lake, day, result)
    log.info("shadow: challenger v%s agrees with champion v%s on %s of %d rows",
             challenger.version, champion.version, result["agreement"], joined.num_rows)
    return result
