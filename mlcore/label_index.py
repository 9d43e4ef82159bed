"""How many curated images carry a label: an index folded batch by batch, not a scan.

``mlcore.data.count_labeled`` reads every shard ever curated, so each retrain check would
cost a year of shards after a year. Here each ledger entry is folded in once: its labeled
image ids (own labels, and labels for images curated earlier) go into a table keyed by
``image_id`` (an image labeled twice counts once), and the entry (name and listed version)
into a table of folded entries. A count then costs one listing of the ledger's names plus
the shards of the batches ingested since the last count. The tables live next to the
image-id claims (same database); they are built on first use, so a lake written before
the index gets it automatically, or at once with ``mlcore ingest rebuild-index``. Like the
claims, they are per task: the default task's keep today's names, task ``t``'s end in ``__t``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlcore.settings import Settings
    from mlcore.storage import Lake, ObjectInfo


@lru_cache(maxsize=64)
def _tables(scope: str) -> tuple[sa.Table, sa.Table]:
    import sqlalchemy as sa

    suffix = f"__{scope}" if scope else ""
    meta = sa.MetaData()
    labeled = sa.Table(f"label_index{suffix}", meta,
                       sa.Column("image_id", sa.String(64), primary_key=True))
    folded = sa.Table(f"label_index_folded{suffix}", meta,
                      sa.Column("entry", sa.String(512), primary_key=True))
    return labeled, folded


def _engine(settings: Settings) -> sa.Engine:
    from mlcore.claims import open_claims

    engine = open_claims(settings).engine
    _tables(settings.task_scope)[0].metadata.create_all(engine)
    return engine


def _entry(info: ObjectInfo) -> str:
    # A ledger entry rewritten (a batch reprocessed and ingested again) has a new version.
    return f"{info.key}\0{info.version}"


def _labeled_ids(lake: Lake, ledger: dict) -> set[str]:
    from mlcore.data import read_shard

    if ledger.get("status") != "ingested":
        return set()
    ids: set[str] = set()
    for key in ledger.get("shards", []) + ledger.get("label_shards", []):
        table = read_shard(lake, key, ["image_id", "label"])
        for image_id, label in zip(*table.to_pydict().values(), strict=True):
            if label is not None:
                ids.add(image_id)
    return ids


def _insert(engine: sa.Engine, table: sa.Table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


def labeled_count(settings: Settings, lake: Lake) -> int:
    """Curated images with a label: equals ``count_labeled(lake)``, at the cost of the
    batches ingested since the last call."""
    import sqlalchemy as sa

    from mlcore.claims import CHUNK
    from mlcore.layout import LEDGER

    engine = _engine(settings)
    labeled, folded = _tables(settings.task_scope)
    with engine.connect() as conn:
        done = set(conn.scalars(sa.select(folded.c.entry)))
    for info in lake.list_info(LEDGER):
        if not info.key.endswith(".json") or info.unsafe or _entry(info) in done:
            continue
        ids = sorted(_labeled_ids(lake, json.loads(lake.read_bytes(info.key))))
        with engine.begin() as conn:  # the ids and the folded mark together, or neither
            for start in range(0, len(ids), CHUNK):
                conn.execute(_insert(engine, labeled),
                             [{"image_id": i} for i in ids[start : start + CHUNK]])
            conn.execute(_insert(engine, folded), [{"entry": _entry(info)}])
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(labeled)))


def drop(settings: Settings) -> None:
    """Forget the index (``rebuild-index``): the next count folds every ledger entry."""
    import sqlalchemy as sa

    engine = _engine(settings)
    with engine.begin() as conn:
        for table in _tables(settings.task_scope):
            conn.execute(sa.delete(table))


def labeled_images_at_last_training(settings: Settings, lake: Lake) -> int:
    """The curated labeled image count the most recent training run used (0 if none)."""
    from mlcore.registry import LABELED_IMAGES, configure_mlflow

    mlc = configure_mlflow(settings, lake)
    experiment = mlc.get_experiment_by_name(settings.mlflow_experiment)
    runs = mlc.search_runs([experiment.experiment_id], order_by=["start_time DESC"],
                           max_results=1)
    return int(runs[0].data.metrics.get(LABELED_IMAGES, 0)) if runs else 0
