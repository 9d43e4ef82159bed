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
