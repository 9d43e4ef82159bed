"""The nightly ``DeadlineAlert`` for real: a live scheduler notices that a ``batch_score`` run
has not succeeded by its deadline, and the triggerer runs the callback, which alerts on
both channels (loopback SMTP and webhook receivers). Also: every failed task alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from live_airflow import running_airflow, wait_until

from mlcore.settings import Settings
from tests.alert_receivers import SMTP_PASSWORD, WEBHOOK_TOKEN, alert_receivers

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]


def test_a_night_not_committed_by_its_deadline_alerts_from_the_triggerer(tmp_path):
    # A run whose deadline has passed: a manual run's data interval ends at its logical
    # date, so it writes the partition of the day before, due by logical + 27 h.
    logical_day = (datetime.now(UTC) - timedelta(days=2)).date()
    day = logical_day - timedelta(days=1)
    logical = f"{logical_day}T03:00:00+00:00"
    settings = Settings(home=tmp_path / "home", alert_email_to="ops@mlcore.test",
                        airflow_ui_url="https://airflow.example.test")
    with alert_receivers() as rec, running_airflow(
            settings, "deadline-live",
            extra_env={**rec.connections(), "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0"}) as airflow:
        airflow.start("triggerer", "triggerer")  # runs deadline callbacks
        # No model is registered, so the run fails (pin_champion) and is never committed.
        run, _ = airflow.run_dag("batch_score", logical, timeout=300, expect="failed")

        def deadline_alerts() -> list[str]:
            airflow.check()
            return [t for t in rec.chat_texts() if "not committed by" in t]

        texts = wait_until(deadline_alerts, 180, "the deadline alert", interval=2)
        mails = [t for t in rec.mail_texts() if "not committed by" in t]
    assert len(texts) == 1 and len(mails) == 1
    for text in (*texts, *mails):
        assert f"predictions for dt={day} not committed by 06:00 UTC" in text
        assert f"batch_score run {run['dag_run_id']} was " in text
        assert "https://airflow.example.test/dags/batch_score/runs/manual__" in text
    # The failed task alerted too, on both channels, with its error.
    failures = [t for t in rec.chat_texts() if "batch_score.pin_champion failed" in t]
    assert len(failures) == 1 and "NoChampion" in failures[0]
    raw = rec.everything()
    assert SMTP_PASSWORD.encode() not in raw and WEBHOOK_TOKEN.encode() not in raw
