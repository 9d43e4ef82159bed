"""Image-id claims: a unique constraint, not a lookup, decides which batch owns an image.

Two batches ingested at once cannot both accept an image: each inserts its ids into one
table keyed by ``image_id`` (``INSERT ... ON CONFLICT DO NOTHING``) and owns exactly the
rows that then carry its batch id. A retry of the same batch finds its own rows and owns
them again (idempotent). Cost is O(batch), independent of how much is curated already.
SQLite (embedded default, one machine) and PostgreSQL (production) run the same code.

Claims are scoped per task: the same image uploaded to two tasks is no duplicate. The
default task keeps the table ``image_claims`` (existing claims stay valid, no migration);
task ``t`` has its own table ``image_claims__t``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa

CHUNK = 500  # ids per statement: under SQLite's bound-parameter limit
CREATE_ATTEMPTS = 5  # tries at creating a claims table that processes race to create


@lru_cache(maxsize=8)
def _engine(url: str, pid: int) -> sa.Engine:
    """One engine per URL and process: pooled connections must never cross a fork."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record) -> None:  # concurrent readers while one batch writes
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    return engine


@lru_cache(maxsize=64)
def _table(scope: str) -> sa.Table:
    import sqlalchemy as sa

    meta = sa.MetaData()
    if not scope:  # the default task: today's table and index names
        return sa.Table(
            "image_claims", meta,
            sa.Column("image_id", sa.String(64), primary_key=True),
            sa.Column("batch_id", sa.String(128), nullable=False, index=True),
        )
    name = f"image_claims__{scope}"
    table = sa.Table(
        name, meta,
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(128), nullable=False),
    )
    sa.Index(f"ix_{name}_batch", table.c.batch_id)  # <= 63 chars: PostgreSQL's limit
    return table


@lru_cache(maxsize=64)
def _created(url: str, pid: int, scope: str) -> sa.Table:
    """The scope's table, created once per URL and process if absent."""
    import sqlalchemy as sa

    table, engine = _table(scope), _engine(url, pid)
    for attempt in range(1, CREATE_ATTEMPTS):
        try:
            table.metadata.create_all(engine)  # checks first: a no-op once the table exists
            return table
        except sa.exc.DBAPIError:
            # Another process created the table between check and create, or (SQLite) held
            # the file while switching it to WAL: the next check sees its table.
            time.sleep(0.05 * attempt)
    table.metadata.create_all(engine)  # the last attempt: its error is the caller's
    return table


def _insert(engine: sa.Engine, table: sa.Table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=["image_id"])


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class Claims:
    """The claims table of one task (``scope``, ``""``: the default task) behind one
    SQLAlchemy URL."""

    def __init__(self, url: str, scope: str = "") -> None:
        self.engine = _engine(url, os.getpid())
        self.table = _created(url, os.getpid(), scope)

    def claim(self, batch_id: str, image_ids: Iterable[str]) -> dict[str, str]:
        """Claim ``image_ids`` for ``batch_id``; returns the ids owned by *other* batches,
        with their owner. Everything else is now (or already was) owned by ``batch_id``."""
        import sqlalchemy as sa

        ids = sorted(set(image_ids))
        table, insert, taken = self.table, _insert(self.engine, self.table), {}
        with self.engine.begin() as conn:  # one transaction: all claims, or none
            for chunk in _chunks(ids):
                conn.execute(insert, [{"image_id": i, "batch_id": batch_id} for i in chunk])
            for chunk in _chunks(ids):
                rows = conn.execute(sa.select(table.c.image_id, table.c.batch_id).where(
                    table.c.image_id.in_(chunk), table.c.batch_id != batch_id))
                taken.update({r.image_id: r.batch_id for r in rows})
        return taken

    def release(self, batch_id: str, image_ids: Iterable[str] | None = None) -> int:
        """Drop ``batch_id``'s claims (all, or only ``image_ids``); returns how many."""
        import sqlalchemy as sa

        table, n = self.table, 0
        with self.engine.begin() as conn:
            if image_ids is None:
                return conn.execute(sa.delete(table).where(table.c.batch_id == batch_id)).rowcount
            for chunk in _chunks(sorted(set(image_ids))):
                n += conn.execute(sa.delete(table).where(
                    table.c.batch_id == batch_id, table.c.image_id.in_(chunk))).rowcount
        return n

    def owners(self, image_ids: Iterable[str]) -> dict[str, str]:
        """image id -> the batch that owns it, for those of ``image_ids`` that are claimed."""
        import sqlalchemy as sa

        table, out = self.table, {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(image_ids))):
                rows = conn.execute(sa.select(table.c.image_id, table.c.batch_id).where(
                    table.c.image_id.in_(chunk)))
                out.update({r.image_id: r.batch_id for r in rows})
        return out

    def owned_by(self, batch_id: str) -> set[str]:
        import sqlalchemy as sa

        table = self.table
        with self.engine.connect() as conn:
            return set(conn.scalars(sa.select(table.c.image_id).where(table.c.batch_id == batch_id)))


def open_claims(settings) -> Claims:
    """The claims table of the settings' task, in the database they name (SQLite in
    ``<home>`` by default, shared by every task)."""
    if not settings.claims_db_url.get_secret_value():
        settings.home.mkdir(parents=True, exist_ok=True)
    return Claims(settings.resolved_claims_db_url, scope=settings.task_scope)
