"""Shared fixtures: a settings object and a lake in a temp folder, never the user's ``var/``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlcore.settings import Settings
from mlcore.storage import LocalLake

DAY = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def lake(settings) -> LocalLake:
    return LocalLake(settings.home / "lake")


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
