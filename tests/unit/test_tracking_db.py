"""The embedded tracking DB (SQLite) survives being opened first by several processes."""

from __future__ import annotations

from functools import partial

from mlcore.settings import Settings
from mlcore.storage import LocalLake
from tests.concurrency import run_together_fresh


def _open_registry(home) -> None:
    from mlcore.registry import configure_mlflow

    settings = Settings(home=home)
    configure_mlflow(settings, LocalLake(home / "lake")).search_registered_models()


def test_two_first_users_of_a_fresh_tracking_db_both_get_a_working_registry(tmp_path):
    """Two mapped tasks may be the first to touch MLflow: unserialized, their migrations
    collide and leave a DB that fails every later run (`_alembic_tmp_* already exists`)."""
    for n in range(3):
        home = tmp_path / f"round-{n}"
        # Spawned, not forked: a fork of this (threaded) test process once hung on a lock.
        assert run_together_fresh(partial(_open_registry, home),
                                  partial(_open_registry, home)) == [0, 0]
        _open_registry(home)  # and the DB they left works for the next process
