"""Alerts reach real receivers on loopback (an SMTP server with AUTH, a Slack-compatible
webhook) through the providers' notifiers: a task failure and a rejected batch from real
``airflow dags test`` runs, a drift breach, and a missed deadline's callback. No secret
(SMTP password, webhook token, S3 key, a URL password) is in any message."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from mlcore import alerts
from mlcore.airflow_local import DagRunFailed, airflow_env, dags_test, ensure_db
from mlcore.data import load_fashion_mnist
from mlcore.images import encode_png
from mlcore.seed import bad_files
from mlcore.settings import Settings
from mlcore.storage import open_lake
from mlcore.upload import batch_files, upload_batch
from tests.alert_receivers import SMTP_PASSWORD, WEBHOOK_TOKEN, Receivers, alert_receivers

S3_KEY = "s3-secret-canary-77c"
DB_PASSWORD = "db-password-canary-31a"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
RECIPIENTS = ["ops@mlcore.test", "ml-lead@mlcore.test"]


@pytest.fixture
def receivers(monkeypatch) -> Receivers:
    with alert_receivers() as rec:
        for name, value in rec.connections().items():
            monkeypatch.setenv(name, value)
        yield rec


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", alert_email_to=", ".join(RECIPIENTS),
                    s3_secret_access_key=S3_KEY, mlflow_ui_url="https://mlflow.example.test",
                    airflow_ui_url="https://airflow.example.test",
                    data_docs_url="https://airflow.example.test/data-docs")


def assert_no_secret(rec: Receivers) -> None:
    raw = rec.everything()
    assert raw, "nothing was received"
    for secret in (SMTP_PASSWORD, WEBHOOK_TOKEN, S3_KEY, DB_PASSWORD):
        assert secret.encode() not in raw, secret


def assert_both_channels_say(rec: Receivers, *parts: str) -> None:
    assert len(rec.mails) == 1 and len(rec.posts) == 1, (rec.mail_texts(), rec.chat_texts())
    assert sorted(rec.mail_recipients[0]) == sorted(RECIPIENTS)
    for text in (*rec.mail_texts(), *rec.chat_texts()):
        for part in parts:
            assert part in text, (part, text)


def test_no_connection_means_alerting_is_off(settings):
    alert = alerts.Alert("task_failed", "x failed")
    assert alerts.notifiers(settings, alert) == []
    assert alerts.send(alert, settings) == 0


def test_secrets_in_error_text_are_masked_and_templates_are_not_rendered(receivers, settings):
    alert = alerts.Alert("task_failed", "ingest_landing.ingest[0] failed", [
        f"error: could not connect to postgresql://airflow:{DB_PASSWORD}@db:5432/airflow",
        f"error: S3 refused key {S3_KEY}", "{{ conn.mlcore_alert_smtp.password }}"])
    assert alerts.send(alert, settings) == 2
    assert_both_channels_say(receivers, "postgresql://airflow:***@db:5432/airflow",
                             "S3 refused key ***", "{{ conn.mlcore_alert_smtp.password }}")
    assert_no_secret(receivers)


def test_drift_breach_alert_has_the_figures_and_the_mlflow_run(receivers, settings):
    alert = alerts.drift_breach(
        settings, date(2026, 11, 22), model_version="7",
        metrics={"class_psi": 0.41, "confidence_js": 0.02, "intensity_psi": 0.3},
        breached=["class_psi", "intensity_psi"], threshold=0.25, experiment_id="3", run_id="abc123")
    assert alerts.send(alert, settings) == 2
    assert_both_channels_say(
        receivers, "drift on dt=2026-11-22: class_psi, intensity_psi above 0.25",
        "model version 7", "class_psi 0.4100 (breach)", "confidence_js 0.0200,",
        "https://mlflow.example.test/#/experiments/3/runs/abc123")
    assert_no_secret(receivers)


def test_missed_deadline_callback_names_the_partition_and_the_run(receivers, settings,
                                                                  monkeypatch):
    # The context the scheduler hands the triggerer (Deadline.handle_miss).
    context = {
        "dag_run": {"dag_id": "batch_score", "dag_run_id": "scheduled__2026-11-22T03:00:00+00:00",
                    "state": "running", "data_interval_start": "2026-11-22T03:00:00Z",
                    "logical_date": "2026-11-22T03:00:00Z"},
        "deadline": {"id": "d-1", "deadline_time": "2026-11-23T06:00:00+00:00"},
    }
    for name, value in settings.model_dump(exclude_defaults=True).items():
        value = getattr(value, "get_secret_value", lambda v=value: v)()
        monkeypatch.setenv(f"MLCORE_{name.upper()}", str(value))
    from mlcore.settings import get_settings  # the callback reads the triggerer's settings

    get_settings.cache_clear()
    try:
        assert asyncio.run(alerts.on_deadline_missed(context=context)) == 2
    finally:
        get_settings.cache_clear()
    assert_both_channels_say(
        receivers, "predictions for dt=2026-11-22 not committed by 06:00 UTC",
        "batch_score run scheduled__2026-11-22T03:00:00+00:00 was running",
        "https://airflow.example.test/dags/batch_score/runs/scheduled__2026-11-22T03%3A00%3A00%2B00%3A00")
    assert_no_secret(receivers)


def _airflow(settings: Settings, rec: Receivers) -> dict[str, str]:
    # No retries: the first failure is the last one, so the callback fires at once.
    env = airflow_env(settings, {**rec.connections(), "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "0"})
    ensure_db(env)
    return env


def test_a_rejected_batch_alerts_with_its_failed_expectations_and_data_docs(receivers,
                                                                            settings, tmp_path):
    images, _ = load_fashion_mnist(settings.fmnist_dir, "train")
    src = tmp_path / "bad"
    src.mkdir()
    for name, (data, why) in bad_files(images[:4]).items():
        if why != "accepted":
            (src / name).write_bytes(data)
    (src / "good.png").write_bytes(encode_png(images[9]))
    upload_batch(open_lake(settings), "bad-01", batch_files(src))

    with pytest.raises(DagRunFailed):
        dags_test(_airflow(settings, receivers), "ingest_landing", "2026-11-22T12:00:00+00:00")
    assert_both_channels_say(
        receivers, "batch bad-01 rejected", "failed expectations: ", "reject_rate",
        "https://airflow.example.test/data-docs/validations/batch_summary/bad-01/", "mlcore batch status bad-01")
    assert_no_secret(receivers)


def test_a_failed_task_alerts_with_its_error_and_log_link(receivers, settings):
    # No model is registered: pin_champion fails (and so does the run).
    with pytest.raises(DagRunFailed):
        dags_test(_airflow(settings, receivers), "batch_score", "2026-11-23T03:00:00+00:00")
    assert_both_channels_say(receivers, "batch_score.pin_champion failed", "run manual__",
                             "try 1", "error: NoChampion: model", "run the retrain_model DAG first",
                             "https://airflow.example.test/dags/batch_score/runs/manual__",
                             "/tasks/pin_champion?try_number=1")
    assert_no_secret(receivers)
