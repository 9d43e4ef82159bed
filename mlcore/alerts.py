"""Tell people when something breaks: a failed task, a rejected batch, a drift breach, a
night's partition not committed by its deadline.

Each alert goes through the providers' notifiers, one per channel whose Airflow Connection
exists: ``SmtpNotifier`` (Connection ``alert_smtp_conn_id``, to ``alert_email_to``) and
``SlackWebhookNotifier`` (Connection ``alert_slack_conn_id``; any Slack-compatible webhook).
With neither Connection, alerting is off. Messages carry ids, figures and links only; every
secret the process knows (the settings' ``SecretStr`` values, URL passwords, whatever
Airflow's secrets masker holds) is replaced by ``***`` before anything is sent.

This module is imported by DAG files (through ``mlcore.dag_defaults``): its top level
imports nothing from Airflow or the providers.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlcore.settings import Settings

log = logging.getLogger(__name__)

URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/@]+@")
MAX_ERROR_CHARS = 600


@dataclass(frozen=True)
class Alert:
    """One message: a subject line, a few lines of facts, and links (label -> URL)."""

    kind: str  # task_failed | batch_rejected | drift_breach | deadline_missed
    title: str
    lines: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """Plain text (the chat message): Slack-style ``<url|label>`` links."""
        body = [f"*{self.title}*", *self.lines]
        body += [f"{label}: <{url}|{url}>" for label, url in self.links.items()]
        return "\n".join(body)

    def html(self) -> str:
        """The e-mail body; everything escaped (error text is not ours to trust)."""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines)
        links = "".join(f'<li>{html.escape(label)}: <a href="{html.escape(url, quote=True)}">'
                        f"{html.escape(url)}</a></li>" for label, url in self.links.items())
        return (f"<h3>{html.escape(self.title)}</h3><ul>{items}</ul>"
                + (f"<ul>{links}</ul>" if links else ""))

    def redacted(self, settings: Settings) -> Alert:
        scrub = _scrubber(settings)
        return Alert(self.kind, scrub(self.title), [scrub(line) for line in self.lines],
                     {scrub(k): scrub(v) for k, v in self.links.items()})


def _scrubber(settings: Settings):
    secrets = [v.get_secret_value() for v in settings.model_dump().values()
               if hasattr(v, "get_secret_value") and v.get_secret_value()]

    def scrub(text: str) -> str:
        text = URL_PASSWORD.sub(r"\g<head>***@", str(text))
        for secret in secrets:
            text = text.replace(secret, "***")
        try:  # what Airflow has seen in this process: connection passwords, masked variables
            from airflow.sdk._shared.secrets_masker import redact

            text = str(redact(text))
        except Exception:  # noqa: BLE001 - outside Airflow there is no masker; the rest applies
            pass
        return text

    return scrub


# --- channels ---------------------------------------------------------------------------


def _connection_exists(conn_id: str) -> bool:
    if not conn_id:
        return False
    try:
        from airflow.sdk import BaseHook

        BaseHook.get_connection(conn_id)
        return True
    except Exception:  # noqa: BLE001 - AirflowNotFoundException and friends: channel is off
        return False


async def _aconnection_exists(conn_id: str) -> bool:
    if not conn_id:
        return False
    try:
        from airflow.sdk import BaseHook

        await BaseHook.aget_connection(conn_id)
        return True
    except Exception:  # noqa: BLE001 - see _connection_exists
        return False


def _recipients(settings: Settings) -> list[str]:
    return [a.strip() for a in settings.alert_email_to.split(",") if a.strip()]


def notifiers(settings: Settings, alert: Alert, channels: set[str] | None = None) -> list:
    """The providers' notifiers for every configured channel (none: alerting off).
    ``channels`` ("email", "chat") skips the Connection lookups (already done)."""
    if channels is None:
        channels = {name for name, conn in (("email", settings.alert_smtp_conn_id),
                                            ("chat", settings.alert_slack_conn_id))
                    if _connection_exists(conn)}
    out: list = []
    to = _recipients(settings)
    if to and "email" in channels:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        out.append(SmtpNotifier(to=to, from_email=settings.alert_email_from or None,
                                subject=f"[mlcore] {alert.title}", html_content=alert.html(),
                                smtp_conn_id=settings.alert_smtp_conn_id))
    if "chat" in channels:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        out.append(SlackWebhookNotifier(slack_webhook_conn_id=settings.alert_slack_conn_id,
                                        text=alert.text(), timeout=30))
    return out


def send(alert: Alert, settings: Settings | None = None) -> int:
    """Send ``alert`` on every configured channel; returns how many sent it.

    ``notify`` is called directly, not the notifier's ``__call__``: that would render the
    message as a Jinja template, and error text must never be evaluated. A channel that
    fails is logged and skipped: an alert must not hide the failure it reports.
    """
    from mlcore.settings import get_settings

    settings = settings or get_settings()
    alert = alert.redacted(settings)
    sent = 0
    for notifier in notifiers(settings, alert):
        try:
            notifier.notify({})
            sent += 1
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("could not send the %s alert through %s", alert.kind,
                          type(notifier).__name__)
    log.info("alert %r sent on %d channel(s)", alert.title, sent)
    return sent


async def send_async(alert: Alert, settings: Settings | None = None) -> int:
    """:func:`send` for the triggerer (deadline callbacks run in its event loop)."""
    from mlcore.settings import get_settings

    settings = settings or get_settings()
    alert = alert.redacted(settings)
    channels = {name for name, conn in (("email", settings.alert_smtp_conn_id),
                                        ("chat", settings.alert_slack_conn_id))
                if await _aconnection_exists(conn)}
    sent = 0
    for notifier in notifiers(settings, alert, channels):
        try:
            await notifier.async_notify({})
            sent += 1
        except Exception:  # noqa: BLE001 - see send()
            log.exception("could not send the %s alert through %s", alert.kind,
                          type(notifier).__name__)
    log.info("alert %r sent on %d channel(s)", alert.title, sent)
    return sent


# --- what each alert says ---------------------------------------------------------------


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def batch_rejected(settings: Settings, batch_id: str, *, failed_expectations: list[str],
                   docs_url: str) -> Alert:
    return Alert(
        "batch_rejected", f"batch {batch_id} rejected: no file of it was ingested",
        [f"failed expectations: {', '.join(failed_expectations) or '(see Data Docs)'}",
         f"details: mlcore batch status {batch_id}"],
        {"Data Docs": docs_url},
    )


def drift_breach(settings: Settings, day: date, *, model_version: str, metrics: dict[str, float],
                 breached: list[str], threshold: float, experiment_id: str, run_id: str) -> Alert:
    figures = ", ".join(f"{name} {value:.4f}{' (breach)' if name in breached else ''}"
                        for name, value in metrics.items())
    run_url = f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return Alert(
        "drift_breach", f"drift on dt={day}: {', '.join(breached)} above {threshold}",
        [f"model version {model_version}; figures: {figures}",
         f"action: {settings.drift_action} (MLCORE_DRIFT_ACTION)"],
        {"MLflow run": run_url},
    )


def task_failed(context: dict[str, Any], settings: Settings) -> Alert | None:
    """The alert for a failed task; None when the failure was already reported (drift)."""
    from mlcore.monitor import DriftDetected
    from mlcore.validation import ValidationFailed

    ti = context["ti"]
    exc = context.get("exception")
    for cause in _chain(exc):
        if isinstance(cause, DriftDetected):
            return None  # monitor_partition sent the drift alert, with its figures
        if isinstance(cause, ValidationFailed) and cause.subject.startswith("batch "):
            return batch_rejected(settings, cause.subject.removeprefix("batch "),
                                  failed_expectations=cause.failed_expectations,
                                  docs_url=cause.docs_url)
    mapped = ti.map_index is not None and ti.map_index >= 0
    where = ti.task_id + (f"[{ti.map_index}]" if mapped else "")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "(no exception recorded)"
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + " …"
    from urllib.parse import quote

    log_url = (f"{settings.airflow_ui_url.rstrip('/')}/dags/{ti.dag_id}/runs/"
               f"{quote(ti.run_id, safe='')}/tasks/{ti.task_id}"
               + (f"/mapped/{ti.map_index}" if mapped else "") + f"?try_number={ti.try_number}")
    links = {"Task log": log_url}
    return Alert("task_failed", f"{ti.dag_id}.{where} failed",
                 [f"run {ti.run_id}, try {ti.try_number}", f"error: {error}"], links)


def on_task_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback`` of every task (``mlcore.dag_defaults``): runs after the last
    try, in the task's process."""
    from mlcore.settings import get_settings

    try:
        settings = get_settings()
        alert = task_failed(context, settings)
        if alert is not None:
            send(alert, settings)
    except Exception:  # noqa: BLE001 - a broken alert must not mask the task's own failure
        log.exception("could not build the failure alert")


def deadline_alert(dag_run: dict[str, Any], deadline_time: Any, settings: Settings) -> Alert:
    """``dag_run`` is the REST API's DAG run (``DAGRunResponse``) the scheduler hands over."""
    from urllib.parse import quote

    # The partition a run writes is the date its data interval starts (mlcore.score).
    start = str(dag_run.get("data_interval_start") or dag_run.get("logical_date") or "")
    day = start[:10] or "?"
    dag_id, run_id = dag_run.get("dag_id"), dag_run.get("dag_run_id") or dag_run.get("run_id")
    return Alert(
        "deadline_missed",
        f"predictions for dt={day} not committed by {settings.score_deadline} UTC",
        [f"{dag_id} run {run_id} was {dag_run.get('state')} at its deadline {deadline_time}",
         "consumers reading this partition will not find it yet"],
        {"DAG run": f"{settings.airflow_ui_url.rstrip('/')}/dags/{dag_id}/runs/"
                    f"{quote(str(run_id), safe='')}"},
    )


async def on_deadline_missed(context: dict[str, Any] | None = None, **_: Any) -> int:
    """The ``DeadlineAlert`` callback (an ``AsyncCallback``, run by the triggerer)."""
    from mlcore.settings import get_settings

    settings = get_settings()
    context = context or {}
    deadline = context.get("deadline") or {}
    alert = deadline_alert(context.get("dag_run") or {}, deadline.get("deadline_time"), settings)
    return await send_async(alert, settings)


def parse_deadline(text: str) -> tuple[int, int]:
    """``HH:MM`` (UTC) -> (hour, minute)."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if not match:
        raise ValueError(f"expected a time of day HH:MM (UTC), got {text!r}")
    return int(match.group(1)), int(match.group(2))

