"""Shared fixtures: a settings object and a lake in a temp folder, never the user's ``var/``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlcore.settings import Settings
from mlcore.storage import LocalLake

DAY = datetime(2026, 11, 22, 12, tzinfo=UTC)

# The slowest files (pytest --durations), run first: `make test` hands whole files to two
# xdist workers in this order, so the long end-to-end runs overlap instead of one starting last.
SLOW_FILES_FIRST = (
    "test_kill_matrix.py", "test_e2e_local.py", "test_celery.py", "test_live_airflow.py",
    "test_e2e_s3.py", "test_registry.py", "test_s3_outage.py", "test_e2e_seaweedfs.py",
    "test_postgres.py", "test_e2e_shapes.py", "test_ingest_dag.py", "test_deadline_live.py",
    "test_crash_recovery.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def lake(settings) -> LocalLake:
    return LocalLake(settings.home / "lake")


# A second task for multi-task tests (the committed second reference task is tasks/shapes.toml).
TINY_RGB = """
name = "tiny-rgb"
classes = ["red", "green", "blue"]
height = 16
width = 16
channels = 3
base_data = "none"
holdout = "batches"
model_width = 4
"""


@pytest.fixture
def two_tasks_dir(tmp_path):
    """A tasks folder with the committed Fashion-MNIST spec and ``tiny-rgb`` (16x16 RGB)."""
    import shutil

    from mlcore.task import TASKS_DIR

    folder = tmp_path / "tasks"
    folder.mkdir()
    shutil.copy(TASKS_DIR / "fashion-mnist.toml", folder)
    (folder / "tiny-rgb.toml").write_text(TINY_RGB)
    return folder
@pytest.fixture
def shapes_settings(tmp_path, monkeypatch) -> Settings:
    """A deployment whose task is ``shapes`` (``MLCORE_TASK=shapes``): the settings, and the
    default task every module without an explicit spec falls back to."""
    from mlcore import labels
    from mlcore.settings import get_settings

    def forget():
        get_settings.cache_clear()
        labels._by_name.cache_clear()  # the class names labels.csv is read with

    monkeypatch.setenv("MLCORE_TASK", "shapes")
    forget()
    yield Settings(home=tmp_path / "home")
    monkeypatch.delenv("MLCORE_TASK")
    forget()
