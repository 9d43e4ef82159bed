"""Shadow scoring: the ``challenger`` scored beside the champion, never for consumers.

The challenger is pinned with the champion when a run starts (:func:`mlcore.score.pin_run`)
and each scoring task scores its shard with both models from the same read, so the night
costs no second read of any shard. Here the challenger's data files become partition
``dt=<day>`` of ``predictions_shadow/`` (validated and committed like the champion's), and
how often it agreed with the champion is folded from the tasks' counts into
``monitoring/shadow_agreement``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from mlcore.layout import SHADOW_AGREEMENT
from mlcore.predictions import SHADOW, commit_partition

if TYPE_CHECKING:
    from mlcore.runtime import Runtime
    from mlcore.score import ScoredShard, ScoringRun
    from mlcore.storage import Lake

__all__ = ["SHADOW_TABLE", "ShadowAgreement", "commit_shadow", "record_shadow_agreement"]

log = logging.getLogger(__name__)

SHADOW_TABLE = SHADOW_AGREEMENT  # one row per partition, partitioned by dt


@dataclass(frozen=True)
class ShadowAgreement:
    """How often the challenger predicted the champion's class on one partition."""

    day: date
    champion_version: str
    challenger_version: str
    rows: int
    agreement: float | None  # None: no rows


def commit_shadow(rt: Runtime, run: ScoringRun, *, scored: list[ScoredShard | None],
                  shards: list[str]) -> ShadowAgreement | None:
    """Commit the challenger's data files of the run into the ``predictions_shadow`` table
    and record its agreement with the champion; ``None`` if the run pinned no challenger.

    The expected row count is the champion's (already checked against the shards by its
    commit): the challenger scored the very same rows, so no shard is read again.
    """
    from mlcore.score import commit_metadata

    if run.challenger is None:
        return None
    done = [s for s in scored if s is not None]
    parts = [s.shadow for s in done if s.shadow is not None]
    commit_partition(rt, day=run.day, parts=parts, expected_rows=sum(s.part.rows for s in done),
                     validated_at=run.window.end, run_id=run.run_id,
                     metadata=commit_metadata(run, run.challenger, shards), table=SHADOW)
    rows = sum(p.rows for p in parts)
    result = ShadowAgreement(run.day, run.model.version, run.challenger.version, rows,
                             sum(s.agreed for s in done) / rows if rows else None)
    record_shadow_agreement(rt.lake, result)
    log.info("shadow: challenger v%s agrees with champion v%s on %s of %d rows",
             result.challenger_version, result.champion_version, result.agreement, rows)
    return result


def record_shadow_agreement(lake: Lake, result: ShadowAgreement) -> None:
    """Store how often the challenger agreed with the champion on partition ``result.day``."""
    import pyarrow as pa

    from mlcore.predictions import overwrite_rows

    schema = pa.schema([("champion_version", pa.string()), ("challenger_version", pa.string()),
                        ("rows", pa.int64()), ("agreement", pa.float64())])  # agreement may be None
    row = {name: getattr(result, name) for name in schema.names}
    overwrite_rows(lake, SHADOW_TABLE, pa.Table.from_pylist([row], schema), day=result.day)
