"""What the ``ingest_landing`` DAG's tasks call: one function per task, over a runtime.

Each returns a small frozen record that crosses XCom as itself (Airflow serializes
dataclasses; ``[core] allowed_deserialization_classes`` admits ``mlcore.*``): counts and
ids only, never images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlcore.runtime import Runtime

log = logging.getLogger(__name__)

SLOT_SECONDS = 600  # the DAG's schedule: one ledgered batch is re-verified per 10-minute slot


@dataclass(frozen=True)
class BatchOutcome:
    """One ingested batch, as the ``ingest`` task returns it."""

    batch_id: str
    status: str
    files: int
    accepted: int
    quarantined: int
    duplicates: int
    labeled: int
    shards: int
    holdout: bool = False  # a batch marked holdout (batch.json): evaluated on, never trained


@dataclass(frozen=True)
class IngestTotals:
    """What a run's successful batches added, as ``publish`` announces it."""

    batches: int
    accepted: int
    labeled: int
    quarantined: int

    @property
    def anything_new(self) -> bool:
        return bool(self.accepted or self.labeled)


class IngestFailedEveryTry(RuntimeError):
    """An unexpected error outlived every retry; the batch is ledgered as ``ingest_error``."""


def find_ready_batches(rt: Runtime, dag_run, params: dict) -> list[str]:
    """The batches this run ingests: every ready one, or only ``params["batch_id"]`` (a
    manual trigger with it is audited). The run's 10-minute slot picks which ledgered batch
    is re-verified (round robin, :func:`mlcore.ingest.ready_batches`)."""
    from mlcore import audit
    from mlcore.ingest import ready_batches

    ready = ready_batches(rt.lake, tick=int(dag_run.run_after.timestamp()) // SLOT_SECONDS)
    wanted = (params or {}).get("batch_id")
    if not wanted:
        return ready
    audit.record_manual_trigger(rt.lake, dag_run, target=f"ingest_landing/{wanted}",
                               params=params)
    return [b for b in ready if b == wanted]


def ingest_ready_batch(rt: Runtime, batch_id: str, *, logical_date: datetime, last_try: bool
                       ) -> BatchOutcome:
    """Ingest one batch, drift judged against the champion's training data profile (base
    data if none). Bad data raises :class:`mlcore.validation.ValidationFailed` or
    :class:`mlcore.ingest.BatchRejected`; any other error propagates for a retry, and on the
    ``last_try`` it is ledgered first and raised as :class:`IngestFailedEveryTry`, so later
    runs do not fail on that batch forever."""
    from mlcore.claims import open_claims
    from mlcore.data_profile import reference_profile
    from mlcore.ingest import BatchRejected, ingest_batch, record_failure
    from mlcore.validation import ValidationFailed

    try:
        report = ingest_batch(rt.settings, rt.lake, batch_id, logical_date=logical_date,
                              reference=reference_profile(rt.settings, rt.lake))
    except (ValidationFailed, BatchRejected):
        raise
    except Exception as exc:
        if not last_try:
            raise  # transient (an S3 outage, a lost worker): the next try may succeed
        record_failure(rt.lake, batch_id, logical_date=logical_date, exc=exc,
                       claims=open_claims(rt.settings))
        raise IngestFailedEveryTry(f"batch {batch_id!r} failed on every try and is recorded "
                                   f"as ingest_error: {exc}") from exc
    return BatchOutcome(**report.summary())


def totals(outcomes: list[BatchOutcome | None]) -> IngestTotals:
    """The sum over the batches that succeeded (a failed batch has no outcome)."""
    done = [o for o in outcomes if o]
    return IngestTotals(batches=len(done), accepted=sum(o.accepted for o in done),
                        labeled=sum(o.labeled for o in done),
                        quarantined=sum(o.quarantined for o in done))
