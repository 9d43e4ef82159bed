"""Defaults every DAG shares: retry backoff and a timeout (no heavy imports).

How many retries, and the first delay, come from ``airflow.cfg`` (``default_task_retries``,
``default_task_retry_delay``) so a deployment tunes them without editing DAGs.
"""

from datetime import timedelta

import pendulum

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=30),
}
