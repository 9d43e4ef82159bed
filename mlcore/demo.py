"""``make demo``: seed landing, run the three DAGs through Airflow, print what happened."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console

from mlcore.airflow_local import airflow_env, dags_test, ensure_db
from mlcore.ingest import BatchReport
from mlcore.layout import LANDING, ledger_key
from mlcore.seed import seed_landing
from mlcore.settings import Settings
from mlcore.storage import open_lake
from mlcore.task import task_of

# The fast profile: a subset and fewer epochs, so the demo finishes in a few minutes.
PROFILES = {
    "demo": {"train_epochs": 2, "train_subset": 12_000, "promote_floor": 0.80},
    "test": {"train_epochs": 2, "train_subset": 4_000, "holdout_subset": 2_000,
             "promote_floor": 0.50},
    "full": {},
}
# Training settings per sample data set (the task spec's ``sample_data``) on top of the
# profile: the shapes model learns from a few thousand generated images, in small batches.
# One torch thread: this small model gains nothing from two, and on a busy 2-core machine
# two threads fighting other processes ran an epoch ~25x slower (measured).
SAMPLE_PROFILES = {
    "shapes": {"train_epochs": 8, "train_batch_size": 32, "torch_threads": 1,
               "promote_floor": 0.9},
}
# What the shapes generator seeds: labeled training batches, the holdout batch, and the
# unlabeled batch scoring predicts (``per_batch`` images).
SHAPES_TRAIN_BATCHES, SHAPES_PER_TRAIN_BATCH, SHAPES_HOLDOUT = 2, 1500, 500
LOG_LINE = re.compile(r"\[(?:info|warning|error)\s*\] (?P<msg>.*?)\s+\[(?P<logger>[\w.]+)\]")
TASK_EVENT = re.compile(r"\[DAG TEST\] (?P<what>starting|end task) task_id=(?P<task>\S+) "
                        r"map_index=(?P<index>-?\d+)")


def progress_line(line: str) -> str | None:
    """The lines of ``airflow dags test`` output worth showing a person, shortened."""
    m = LOG_LINE.search(line)
    if not m:
        return "  " + line.strip() if line.startswith(("ERROR", "Traceback")) else None
    msg, logger = m["msg"], m["logger"]
    if event := TASK_EVENT.search(msg):
        index = "" if event["index"] == "-1" else f"[{event['index']}]"
        return f"  {'>' if event['what'] == 'starting' else 'ok'} {event['task']}{index}"
    if logger.startswith("mlcore") or "failed with exception" in msg:
        return f"      {msg[:150]}"
    return None


def schedule_for(day: date, scope: str = "") -> dict[str, str]:
    """Logical dates of one simulated day: ingest at noon, retrain and score the next night.
    ``scope``: a task other than the deployment's default (its DAG ids carry its name)."""
    nxt = day + timedelta(days=1)
    suffix = f"__{scope}" if scope else ""
    return {
        f"ingest_landing{suffix}": f"{day}T12:00:00+00:00",
        f"retrain_model{suffix}": f"{nxt}T02:00:00+00:00",
        # A manual run's data interval ends at its logical date: [day 03:00, next day 03:00).
        f"batch_score{suffix}": f"{nxt}T03:00:00+00:00",
    }


def demo_settings(profile: str, task: str | None = None, **overrides) -> Settings:
    """Settings of a demo or test run of ``task`` (default: the deployment's task): the
    profile, then what the task's sample data needs, then ``overrides``; scoped to the task
    (``Settings.for_task``), so another task's run has its own DAGs, lake prefix and model."""
    deployment = Settings(**overrides)
    name = task or deployment.task
    sample = SAMPLE_PROFILES.get(task_of(deployment.for_task(name)).sample_data, {})
    return Settings(**{**PROFILES[profile], **sample, **overrides}).for_task(name)


def seed_sample_batches(settings: Settings, *, per_batch: int = 24) -> list[str]:
    """Write the task's sample landing batches (its spec's ``sample_data``); their ids."""
    from mlcore.shapes import write_landing_batches

    task = task_of(settings)
    lake = open_lake(settings)
    if task.sample_data == "fashion-mnist":
        return [b.batch_id for b in seed_landing(settings, lake, per_batch=per_batch)]
    if task.sample_data == "shapes":
        return [b.batch_id for b in write_landing_batches(
            lake, task, settings.seed, train_batches=SHAPES_TRAIN_BATCHES,
            per_batch=SHAPES_PER_TRAIN_BATCH, holdout_images=SHAPES_HOLDOUT,
            unlabeled_images=per_batch)]
    raise ValueError(f"task {task.name} has no sample data (sample_data = \"none\"): upload "
                     "its batches with `mlcore batch upload` instead")


def run_pipeline(settings: Settings, day: date, console: Console, *, per_batch: int = 24) -> dict:
    """Seed, then ingest -> retrain -> score through ``airflow dags test``; return the summary."""
    lake = open_lake(settings)
    batch_ids = seed_sample_batches(settings, per_batch=per_batch)
    console.print(f"[bold]seeded[/] {len(batch_ids)} batches of task {settings.task} in "
                  f"{lake.url(LANDING)}")
    env = airflow_env(settings)
    ensure_db(env)
    logs = Path(settings.home).resolve() / "logs" / "demo"
    for dag_id, logical in schedule_for(day, settings.task_scope).items():
        console.rule(f"{dag_id} @ {logical}")
        dags_test(env, dag_id, logical, log_file=logs / f"{dag_id}.log",
                  on_line=lambda line: _show(console, progress_line(line)))
        console.print(f"[green]ok[/] {dag_id} (full log: {logs / f'{dag_id}.log'})")
    return summarize(settings, day, batch_ids)


def _show(console: Console, text: str | None) -> None:
    if text:
        console.print(text, markup=False, highlight=False)


def summarize(settings: Settings, day: date, batch_ids: list[str]) -> dict:
    from mlcore.predictions import partition_commit
    from mlcore.registry import configure_mlflow, current_champion

    lake = open_lake(settings)
    reports = [BatchReport.from_json(lake.read_bytes(ledger_key(b))) for b in batch_ids
               if lake.exists(ledger_key(b))]
    mlc = configure_mlflow(settings, lake)
    versions = mlc.search_model_versions(f"name='{settings.model_name}'")
    champ = current_champion(mlc, settings.model_name)
    commit = partition_commit(lake, day)
    return {
        "batches": [
            {**r.summary(), "reasons": [f"{x.key.split('/')[-1]}: {x.reason}" for x in r.rejections]}
            for r in reports
        ],
        "model": {
            "name": settings.model_name,
            "versions": len(versions),
            "champion": champ.version if champ else None,
            "champion_holdout_accuracy": float(champ.tags.get("holdout_accuracy", "nan")) if champ else None,
        },
        "predictions": {"partition": commit.partition, "rows": commit.rows,
                        "version": commit.version, "files": commit.files},
        "drift": _drift(lake, day),
        "lake": lake.uri,
        "task": settings.task_scope,  # "" for the deployment's default task
        "tracking_uri": settings.resolved_tracking_uri,
        # Where people look: the UI routes (the Data Docs are served by the Airflow plugin).
        "links": {"airflow": settings.airflow_ui_url, "data_docs": settings.data_docs_url,
                  "mlflow": settings.mlflow_ui_url},
    }


def _drift(lake, day: date) -> dict:
    from mlcore.monitor import DRIFT_TABLE
    from mlcore.predictions import PartitionIncomplete, read_rows

    try:
        rows = read_rows(lake, DRIFT_TABLE, day=day).to_pylist()
    except PartitionIncomplete:
        return {}
    if not rows:
        return {}
    row = rows[0]
    return {k: row[k] for k in ("class_psi", "confidence_js", "intensity_psi", "breached")}


def print_summary(summary: dict, console: Console) -> None:
    console.rule("summary")
    for b in summary["batches"]:
        console.print(f"batch [bold]{b['batch_id']}[/]: {b['status']}, {b['files']} files -> "
                      f"{b['accepted']} accepted ({b['labeled']} labeled), {b['quarantined']} "
                      f"quarantined, {b['duplicates']} duplicates")
        for reason in b["reasons"]:
            console.print(f"    quarantined {reason}")
    m = summary["model"]
    console.print(f"model [bold]{m['name']}[/]: {m['versions']} version(s); champion = version "
                  f"{m['champion']} (holdout accuracy {m['champion_holdout_accuracy']:.4f})")
    p = summary["predictions"]
    console.print(f"predictions: {p['partition']} with {p['rows']} rows in {len(p['files'])} file(s)")
    d = summary["drift"]
    if d:
        console.print(f"drift vs holdout: class PSI {d['class_psi']:.3f}, confidence JS "
                      f"{d['confidence_js']:.3f}, intensity PSI {d['intensity_psi']:.3f}"
                      f" (breached: {d['breached'] or 'none'})")
    console.rule("where to look next (start the UIs with: make up)")
    links = summary["links"]
    console.print(f"Airflow:     {links['airflow']}")
    console.print(f"data docs:   {links['data_docs']}  (also Browse -> Data Docs in Airflow)")
    console.print(f"MLflow:      {links['mlflow']}  (tracking store {summary['tracking_uri']})")
    console.print(f"lake:        {summary['lake']}  (landing/, quarantine/, curated/, predictions/)")
    # A non-default task's commands need --task, or they would read the default task's lake.
    task = f" --task {summary['task']}" if summary.get("task") else ""
    if summary["batches"]:
        console.print(f"a batch:     .venv/bin/python -m mlcore batch status{task} "
                      f"{summary['batches'][-1]['batch_id']}")
    console.print(f"read rows:   .venv/bin/python -m mlcore predictions read{task} --date "
                  f"{p['partition'].split('=')[-1]}")


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2)
