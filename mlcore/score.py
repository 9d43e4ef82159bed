"""Batch scoring: curated shards -> the ``predictions`` Delta table, one partition per run.

A run is one :class:`ScoringRun`: the window it scores, the model versions pinned for it,
its run id and the time its rows record. Which images a window holds: those whose
``ingested_at`` lies in ``[start, end)``; ``ingested_at`` is the logical date of the
ingestion run that accepted them, so the rule never depends on the wall clock.

The steps, each a function taking the runtime and the run (the DAG maps :func:`score_shard`
over the shards; :func:`score_run` does the whole sequence in one process)::

    shards = input_shards(rt, run)
    scored = [score_shard(rt, run, shard=s) for s in shards]
    commit(rt, run, scored=scored, shards=shards)

Each shard is read once per run: :func:`score_shard` scores its rows with the champion
(and the challenger, when one is pinned) and profiles them for drift monitoring as it goes;
:func:`count_inputs`, the commit's independent row count, reads two small columns.
Publishing (:mod:`mlcore.predictions`): each shard's predictions become one new data file,
and the commit validates them with GX, then replaces partition ``dt=<day>`` in one atomic
Delta commit. Readers see only committed snapshots.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from mlcore import lineage
from mlcore.data import read_shard, shard_pixels, shards_for_dates
from mlcore.drift_profile import Profile, image_means
from mlcore.predictions import (
    PREDICTIONS,
    SHADOW,
    Commit,
    PartFile,
    commit_partition,
    prediction_rows,
    write_part,
)
from mlcore.records import Record

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcore.registry import PinnedModel
    from mlcore.runtime import Runtime
    from mlcore.serving import ServedModel

__all__ = ["RunResult", "ScoredShard", "ScoringRun", "ScoringWindow", "commit",
           "commit_metadata", "count_inputs", "input_shards", "pin_run", "score_run",
           "score_shard", "score_shards"]

log = logging.getLogger(__name__)

# What scoring reads of a shard, once: the ids it publishes, the pixels, the selection keys.
SCORED_COLUMNS = ["image_id", "pixels", "source_key", "batch_id", "label", "ingested_at"]
SELECTION_COLUMNS = ["label", "ingested_at"]  # all count_inputs reads: no pixels


@dataclass(frozen=True)
class ScoringWindow:
    """What one run scores: images ingested in ``[start, end)``, published as partition ``day``."""

    start: datetime
    end: datetime
    day: date

    @classmethod
    def resolve(cls, start: datetime, end: datetime, *, on_date: str = "",
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


@dataclass(frozen=True)
class ScoringRun(Record):
    """One scoring run: what it scores, with which versions, under which run id, and the
    time its rows record as ``scored_at`` (the window's end, not the wall clock: a rerun
    records the same time). ``challenger``: the version scored in shadow, if one is pinned."""

    window: ScoringWindow
    model: PinnedModel
    run_id: str
    scored_at: datetime
    challenger: PinnedModel | None = None

    @classmethod
    def of(cls, window: ScoringWindow, model: PinnedModel, *, run_id: str,
           challenger: PinnedModel | None = None) -> ScoringRun:
        return cls(window, model, run_id, window.end, challenger)

    @property
    def day(self) -> date:
        return self.window.day


@dataclass(frozen=True)
class ScoredShard(Record):
    """What scoring one shard produced: the champion's data file, the drift profile of those
    rows (small: a few dozen counts, fine for XCom) and, with a challenger pinned, its data
    file and on how many rows it predicted the champion's class."""

    shard: str
    part: PartFile
    profile: Profile
    shadow: PartFile | None = None
    agreed: int = 0


@dataclass(frozen=True)
class RunResult:
    """A run scored in one process: its shards, what each produced, and the commit (``None``
    when only scored, as when the run dies before committing)."""

    shards: list[str]
    scored: list[ScoredShard]
    commit: Commit | None = field(default=None)


def pin_run(rt: Runtime, *, window: ScoringWindow, run_id: str) -> ScoringRun:
    """Resolve ``champion`` (and ``challenger``, if set) to one version each, once, for every
    shard of the run (:class:`mlcore.registry.NoChampion` if there is no champion)."""
    from mlcore.registry import pin_challenger, pin_champion

    champion = pin_champion(rt.settings, rt.lake)
    challenger = pin_challenger(rt.settings, rt.lake)
    if challenger is not None and not challenger.onnx_sha256:
        log.warning("challenger v%s predates the ONNX package: not scored in shadow",
                    challenger.version)
        challenger = None
    return ScoringRun.of(window, champion, run_id=run_id, challenger=challenger)


def input_shards(rt: Runtime, run: ScoringRun) -> list[str]:
    """Curated shards that may hold images ingested in the run's window."""
    start, end = run.window.start, run.window.end
    days, day = [], start.date()
    while datetime.combine(day, datetime.min.time(), start.tzinfo) < end:
        days.append(f"{day:%Y-%m-%d}")
        day += timedelta(days=1)
    return shards_for_dates(rt.lake, days)


def inputs_hash(shards: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(shards)).encode()).hexdigest()


def _selected(table: pa.Table, window: ScoringWindow) -> pa.Array:
    """Which rows a run scores: unlabeled (labeled rows train, not score) and ingested in
    the window."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = table.column("ingested_at")
    return pc.and_(
        pc.and_(pc.greater_equal(ts, pa.scalar(window.start, ts.type)),
                pc.less(ts, pa.scalar(window.end, ts.type))),
        pc.is_null(table.column("label")),
    )


def score_shard(rt: Runtime, run: ScoringRun, *, shard: str, model: ServedModel | None = None,
                challenger_model: ServedModel | None = None) -> ScoredShard | None:
    """Score one shard's rows in the window into one new data file of partition ``run.day``
    (never elsewhere, ``rescore_all`` included), profile them for drift, and score them with
    the challenger too when one is pinned; ``None`` if the shard has no rows to score.

    ``model``/``challenger_model``: the pinned versions' served graphs
    (:func:`mlcore.serving.load_served`; callers scoring many shards load them once); by
    default they are loaded here.
    """
    import pyarrow.compute as pc

    from mlcore.serving import ArtifactTampered, load_served

    lake, settings = rt.lake, rt.settings
    rows = read_shard(lake, shard, SCORED_COLUMNS)  # the run's one read of this shard
    selected = _selected(rows, run.window)
    if not pc.all(selected).as_py():  # a copy of the pixels only when some rows stay out
        rows = rows.filter(selected)
    if rows.num_rows == 0:
        return None
    pixels = shard_pixels(rows, rt.task)
    classes = rt.task.classes

    def publish(pinned: PinnedModel, served: ServedModel | None, table_name: str):
        served = served or load_served(settings, lake, pinned)  # int8 ONNX, sha256-checked
        probs = served.predict_proba(pixels, settings.score_batch_size).astype(np.float32)
        # Sorted by image id once scored: sorting the input would copy every pixel.
        out = prediction_rows(rows, probs, classes=classes, model=pinned,
                              scored_at=run.scored_at, run_id=run.run_id).sort_by("image_id")
        return probs, write_part(lake, out, day=run.day, dag_run_id=run.run_id, shard=shard,
                                 table=table_name)

    probs, part = publish(run.model, model, PREDICTIONS)
    scored = ScoredShard(shard, part, Profile.of(probs, image_means(pixels)))
    if run.challenger is not None:
        try:
            shadow_probs, shadow = publish(run.challenger, challenger_model, SHADOW)
        except ArtifactTampered:
            # Never at the champion's expense: its part stands, and the shadow commit, one
            # part short, is refused (and fails its task) with the reason.
            log.exception("challenger v%s refused to load: shard %s not scored in shadow",
                          run.challenger.version, shard)
        else:
            agreed = int(np.sum(shadow_probs.argmax(axis=1) == probs.argmax(axis=1)))
            scored = ScoredShard(shard, part, scored.profile, shadow, agreed)
    lineage.report(lake, inputs=[shard],
                   outputs=[p.key for p in (scored.part, scored.shadow) if p is not None])
    return scored


def count_inputs(rt: Runtime, run: ScoringRun, *, shards: list[str]) -> int:
    """How many rows the partition must hold: the validation's expected row count, counted
    independently of the scoring tasks from the selection columns only (ranged reads of two
    small column chunks, never the pixels)."""
    n = 0
    for shard in shards:
        table = read_shard(rt.lake, shard, SELECTION_COLUMNS)
        n += int(np.count_nonzero(_selected(table, run.window)))
    return n


def commit_metadata(run: ScoringRun, model: PinnedModel, shards: list[str]) -> dict:
    """What a commit of the run records besides its validation: model, inputs, code."""
    from mlcore.provenance import code_version

    return {"model": asdict(model),
            "inputs": {"shards": len(shards), "hash": inputs_hash(shards)},
            "code_version": code_version()}


def commit(rt: Runtime, run: ScoringRun, *, scored: list[ScoredShard | None],
           shards: list[str]) -> Commit:
    """Validate the run's data files with GX (their row count against :func:`count_inputs`
    over ``shards``), then make them partition ``run.day`` in one commit."""
    return commit_partition(
        rt, day=run.day, parts=[s.part for s in scored if s is not None],
        expected_rows=count_inputs(rt, run, shards=shards), validated_at=run.window.end,
        run_id=run.run_id, metadata=commit_metadata(run, run.model, shards))


def score_shards(rt: Runtime, run: ScoringRun, *, model: ServedModel | None = None,
                 challenger_model: ServedModel | None = None) -> RunResult:
    """What the run's mapped ``score_shard`` tasks write, in one process (nothing committed):
    the models are loaded once for every shard."""
    import pyarrow as pa

    from mlcore.serving import load_served

    model = model or load_served(rt.settings, rt.lake, run.model)
    if run.challenger is not None and challenger_model is None:
        challenger_model = load_served(rt.settings, rt.lake, run.challenger)
    shards = input_shards(rt, run)
    scored = []
    for shard in shards:
        if (s := score_shard(rt, run, shard=shard, model=model,
                             challenger_model=challenger_model)) is not None:
            scored.append(s)
        # Arrow's allocator keeps a shard's freed buffers; hand them back, or every shard
        # and the commit after them stack on the largest shard's high-water mark.
        pa.default_memory_pool().release_unused()
    return RunResult(shards, scored)


def score_run(rt: Runtime, run: ScoringRun, *, model: ServedModel | None = None,
              challenger_model: ServedModel | None = None) -> RunResult:
    """The run's scoring in one process: list shards -> score each -> count -> commit, the
    sequence ``batch_score`` runs as tasks (benchmarks and tests call this)."""
    result = score_shards(rt, run, model=model, challenger_model=challenger_model)
    return RunResult(result.shards, result.scored,
                     commit(rt, run, scored=result.scored, shards=result.shards))
