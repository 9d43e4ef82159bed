"""Run this project's DAGs through a real, local Airflow (SQLite, ``airflow dags test``).

Used by ``make demo``, ``make up`` and the end-to-end tests, so all three run Airflow the
same way: the committed ``airflow.cfg`` plus per-home paths passed as environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlcore.settings import REPO_ROOT

if TYPE_CHECKING:
    from mlcore.settings import Settings


class DagRunFailed(RuntimeError):
    """``airflow dags test`` ended with a failed run; the message holds the log tail."""


def airflow_env(settings: Settings, extra: dict[str, str] | None = None, *,
                db_url: str | None = None) -> dict[str, str]:
    """The environment for an Airflow process over ``settings.home`` (inherits the caller's).

    The metadata DB is SQLite in ``<home>/airflow`` unless a SQLAlchemy URL is given:
    ``db_url``, else the ``airflow_db_url`` setting (``MLCORE_AIRFLOW_DB_URL``, e.g.
    ``postgresql+psycopg2://user:pw@host:5432/airflow``). An inherited
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` is deliberately not used: a shell that once
    sourced ``mlcore airflow-env`` must not point a test run at someone's real database.
    When the lake is on S3, MLflow's artifact client gets the lake's endpoint and keys
    (``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``), so run artifacts land in ``<lake>/mlflow``.
    """
    from mlcore.storage import lake_client_env

    settings = settings.deployment  # Airflow serves every task; a task's scope is not its env
    home = Path(settings.home).resolve()
    airflow_home = home / "airflow"
    venv_bin = str(Path(sys.executable).parent)
    db_url = db_url or settings.airflow_db_url.get_secret_value()
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW_CONFIG": str(REPO_ROOT / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url or f"sqlite:///{airflow_home / 'airflow.db'}",
        "MLCORE_HOME": str(home),
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONUNBUFFERED": "1",
    }
    # Pass the settings that differ from the environment on to the Airflow processes.
    for name, value in settings.model_dump(exclude_defaults=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"MLCORE_{name.upper()}"] = str(value)
    env.update(lake_client_env(settings))
    # OpenLineage events: a local file unless the deployment configured a transport.
    if "AIRFLOW__OPENLINEAGE__TRANSPORT" not in env:
        (home / "openlineage").mkdir(parents=True, exist_ok=True)  # the transport won't create it
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps({
            "type": "file", "append": True,
            "log_file_path": str(home / "openlineage" / "events.jsonl")})
    env.update(extra or {})
    return env


def airflow(env: dict[str, str], *args: str, check: bool = True, capture: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow", path=env["PATH"]) or "airflow"
    return subprocess.run([exe, *args], env=env, check=check, text=True, timeout=timeout,
                          capture_output=capture)


def ensure_db(env: dict[str, str]) -> None:
    """Create or upgrade the Airflow metadata DB (idempotent)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    marker = Path(env["AIRFLOW_HOME"]) / ".db-migrated"
    if not marker.exists():
        airflow(env, "db", "migrate", capture=True)
        marker.touch()


def dags_test(env: dict[str, str], dag_id: str, logical_date: str, *, conf: dict | None = None,
              log_file: Path | None = None, on_line=None) -> str:
    """Run one DAG in-process with ``airflow dags test``; raise :class:`DagRunFailed` on failure.

    Output is streamed line by line to ``on_line`` (progress for people) and ``log_file``.
    """
    import json

    # Airflow 3.3.2's `dags test` crashes when a run with a DeadlineAlert succeeds (it looks
    # the alert up by a database id the in-memory DAG never got): no deadline in these runs.
    env = {"MLCORE_DEADLINE_ALERTS": "false", **env}
    args = ["dags", "test", dag_id, logical_date]
    if conf:
        args += ["--conf", json.dumps(conf)]
    exe = shutil.which("airflow", path=env["PATH"]) or "airflow"
    lines: list[str] = []
    with subprocess.Popen([exe, *args], env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line.rstrip("\n"))
    output = "".join(lines)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(output)
    if proc.returncode != 0 or "state=failed" in output.lower():
        tail = "\n".join(output.splitlines()[-60:])
        raise DagRunFailed(f"{dag_id} @ {logical_date} failed (exit {proc.returncode}):\n{tail}")
    return output
