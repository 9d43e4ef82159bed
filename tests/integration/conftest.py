"""Integration fixtures: the real servers (S3, PostgreSQL) and one local-lake pipeline run
that the S3 and PostgreSQL runs are compared against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.pipeline_checks import DAY, PER_BATCH


def pytest_configure(config):
    # The server fixtures live in tests/fixtures_servers.py, shared with tests/unit. A
    # non-root conftest may not set ``pytest_plugins``; registering the plugin by name keeps
    # one registration (so one moto server) per session.
    config.pluginmanager.import_plugin("fixtures_servers")


@dataclass
class PipelineRun:
    settings: object
    summary: dict


def run_test_profile(home: Path, **overrides) -> PipelineRun:
    """The whole pipeline through Airflow with the ``test`` profile (about 1-2 minutes)."""
    from rich.console import Console

    from mlcore.demo import PROFILES, run_pipeline
    from mlcore.settings import Settings

    settings = Settings(home=home, **{**PROFILES["test"], **overrides})
    return PipelineRun(settings, run_pipeline(settings, DAY, Console(quiet=True),
                                              per_batch=PER_BATCH))


@pytest.fixture(scope="session")
def pipeline_runner():
    """``run_test_profile`` for test modules (a conftest is not meant to be imported)."""
    return run_test_profile


@pytest.fixture(scope="session")
def local_run(tmp_path_factory) -> PipelineRun:
    """One pipeline run on a local-folder lake (SQLite Airflow and MLflow): the reference."""
    return run_test_profile(tmp_path_factory.mktemp("local-run"))
