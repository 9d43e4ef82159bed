"""Shared DAG defaults: every task alerts on failure; the nightly deadline lands on the
configured time of the morning the run happens."""

from datetime import datetime, timedelta

import pytest

from mlcore import alerts
from mlcore.dag_defaults import DEFAULT_ARGS, deadline_interval, nightly_deadline
from mlcore.settings import Settings, get_settings


def test_every_task_alerts_on_its_final_failure():
    assert DEFAULT_ARGS["on_failure_callback"] is alerts.on_task_failure


@pytest.mark.parametrize(("runs_at", "deadline", "due"), [
    ("03:00", "06:00", "2026-11-23T06:00"),   # D 03:00 logical -> D+1 06:00
    ("03:00", "03:30", "2026-11-23T03:30"),
    ("03:00", "02:00", "2026-11-24T02:00"),   # before the run starts: the next morning
    ("03:00", "03:00", "2026-11-24T03:00"),
])
def test_deadline_is_the_configured_time_after_the_run(runs_at, deadline, due):
    logical = datetime(2026, 11, 22, 3, 0)
    assert (logical + deadline_interval(runs_at, deadline)).isoformat(timespec="minutes") == due


def test_nightly_deadline_reads_the_setting_and_calls_back_in_the_triggerer(monkeypatch):
    monkeypatch.setenv("MLCORE_SCORE_DEADLINE", "07:15")
    get_settings.cache_clear()
    try:
        alert = nightly_deadline(runs_at="03:00")
    finally:
        get_settings.cache_clear()
    assert alert.interval == timedelta(hours=28, minutes=15)
    assert type(alert.callback).__name__ == "AsyncCallback"
    assert alert.callback.path == "mlcore.alerts.on_deadline_missed"
    assert type(alert.reference).__name__ == "DagRunLogicalDateDeadline"


@pytest.mark.parametrize("bad", ["6", "24:00", "06:60", "noon", ""])
def test_a_malformed_deadline_setting_is_refused(bad):
    with pytest.raises(ValueError, match="score_deadline"):
        Settings(score_deadline=bad)


def test_dags_test_runs_get_no_deadline(monkeypatch):
    """`airflow dags test` cannot finish a DAG with a deadline (Airflow 3.3.2), so the demo
    and test runs switch it off; the scheduler's DAGs keep it."""
    from mlcore.settings import get_settings

    monkeypatch.setenv("MLCORE_DEADLINE_ALERTS", "false")
    get_settings.cache_clear()
    try:
        assert nightly_deadline(runs_at="03:00") is None
    finally:
        get_settings.cache_clear()
