"""Defaults every DAG shares: retry backoff, a timeout and failure alerts (no heavy imports).

How many retries, and the first delay, come from ``airflow.cfg`` (``default_task_retries``,
``default_task_retry_delay``) so a deployment tunes them without editing DAGs. Every task
alerts on its final failure (:func:`mlcore.alerts.on_task_failure`; off until an alert
Connection exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pendulum

from mlcore.alerts import on_task_failure

if TYPE_CHECKING:
    from airflow.sdk.definitions.deadline import DeadlineAlert

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": on_task_failure,
}


@dataclass(frozen=True)
class TaskDag:
    """One DAG a DAG file defines: for which task, under which id, with which Assets."""

    task: str  # the task spec's name: what the task bodies pass to ``runtime()``
    dag_id: str
    scope: str  # "" for the default task (``Settings.task_scope``)

    @property
    def tags(self) -> list[str]:
        return [f"task:{self.task}"]


def task_dags(stem: str) -> list[TaskDag]:
    """The DAGs of DAG file ``stem``, one per deployed task (``docs/tasks.md``): the default
    task's DAG id is ``stem``, task ``t``'s is ``<stem>__t``. Reads only the small TOML specs
    of ``MLCORE_TASKS_DIR`` (the dynamic-DAG pattern), once per parsing process."""
    from mlcore.settings import get_settings
    from mlcore.task import deployed_tasks

    specs = deployed_tasks(get_settings())
    return [TaskDag(task=spec.name, dag_id=stem if i == 0 else f"{stem}__{spec.name}",
                    scope="" if i == 0 else spec.name)
            for i, spec in enumerate(specs)]


def deadline_interval(runs_at: str, deadline: str) -> timedelta:
    """From a nightly run's logical date (its data interval start, ``runs_at`` on day D) to
    ``deadline`` on the morning the run happens (day D+1, or later if that precedes it)."""
    from mlcore.alerts import parse_deadline

    (rh, rm), (dh, dm) = parse_deadline(runs_at), parse_deadline(deadline)
    interval = timedelta(days=1, hours=dh - rh, minutes=dm - rm)
    return interval if interval > timedelta(days=1) else interval + timedelta(days=1)


def nightly_deadline(runs_at: str = "03:00") -> DeadlineAlert | None:
    """A ``DeadlineAlert`` for a nightly DAG scheduled at ``runs_at`` UTC: alert when its run
    has not succeeded by ``MLCORE_SCORE_DEADLINE``. Read when the DAG is parsed (like the
    training queue policy): the deadline is part of the serialized DAG. ``None`` when
    ``MLCORE_DEADLINE_ALERTS`` is off (``airflow dags test`` runs; see the setting)."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    from mlcore.settings import get_settings

    if not get_settings().deadline_alerts:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=deadline_interval(runs_at, get_settings().score_deadline),
        callback=AsyncCallback("mlcore.alerts.on_deadline_missed"),
        name="partition committed",
    )
