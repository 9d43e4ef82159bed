"""``ingest_landing`` through real Airflow (``airflow dags test``): a poison batch fails once
with a ledger entry, the other batch's images are still announced, and the next run does
not take the poison batch up again."""

import json
import re

import numpy as np
import pytest

from mlcore import audit
from mlcore.airflow_local import DagRunFailed, airflow_env, dags_test, ensure_db
from mlcore.images import encode_png
from mlcore.ingest import BatchReport, ledger_key
from mlcore.settings import Settings
from mlcore.storage import open_lake
from tests.integration.pipeline_checks import metadata_rows

POISON = "x" * 200  # longer than the batch-id rule allows


def _task_state(output: str, task_id: str) -> str:
    block = output.split(f"starting task_id={task_id} ", 1)[1].split(f"end task task_id={task_id} ", 1)[0]
    return re.findall(r"new_state=(\w+)", block)[-1]


def test_a_poison_batch_fails_once_and_does_not_silence_the_others(tmp_path):
    settings = Settings(home=tmp_path / "home")
    lake = open_lake(settings)
    rng = np.random.default_rng(1)
    for batch in ("good", POISON):
        for i in range(3):
            png = encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8))
            lake.write_bytes(f"landing/{batch}/{i}.png", png)
        lake.write_bytes(f"landing/{batch}/_READY", b"")
    env = airflow_env(settings)
    ensure_db(env)
    lines: list[str] = []
    with pytest.raises(DagRunFailed):  # the run stays red: one batch failed
        dags_test(env, "ingest_landing", "2026-11-22T12:00:00+00:00", on_line=lines.append)
    output = "\n".join(lines)
    assert _task_state(output, "publish") == "success"  # the good batch is announced
    assert "starting task_id=all_batches_ok " not in output  # upstream_failed: never runs
    poison = BatchReport.from_json(lake.read_bytes(ledger_key(POISON)))
    assert (poison.status, poison.reason) == ("rejected", "invalid_batch_id")
    assert BatchReport.from_json(lake.read_bytes(ledger_key("good"))).accepted == 3
    # A manual trigger for one batch: nothing is due (the poison batch is not retried), and
    # the audit entry carries when the trigger happened, not the run's logical date.
    second = dags_test(env, "ingest_landing", "2026-11-22T12:10:00+00:00",
                       conf={"batch_id": POISON})
    assert "starting task_id=ingest " not in second
    [entry] = audit.entries(lake, action="manual_trigger")
    assert not entry.at.startswith("2026-11-22T12:10") and entry.details["params"]["batch_id"] == POISON


def test_another_tasks_dag_ingests_its_own_landing_only(tmp_path, two_tasks_dir):
    """``ingest_landing__tiny-rgb`` reads ``tasks/tiny-rgb/landing/``; its outcomes cross
    XCom as dataclasses (``publish`` sums them) and the default task's data stays empty."""
    from mlcore.assets import task_assets
    from mlcore.data import known_image_ids

    settings = Settings(home=tmp_path / "home", tasks_dir=two_tasks_dir)
    rgb = settings.for_task("tiny-rgb")
    lake, lake_rgb = open_lake(settings), open_lake(rgb)
    rng = np.random.default_rng(2)
    for i in range(3):
        png = encode_png(rng.integers(0, 150, (20, 20, 3), dtype=np.uint8))
        lake_rgb.write_bytes(f"landing/b1/{i}.png", png)
    lake_rgb.write_bytes("landing/b1/labels.csv", b"0.png,red\n1.png,blue\n")
    lake_rgb.write_bytes("landing/b1/_READY", b"")
    env = airflow_env(settings)
    ensure_db(env)
    output = dags_test(env, "ingest_landing__tiny-rgb", "2026-11-22T12:00:00+00:00")
    assert _task_state(output, "publish") == "success"
    events = {r["name"]: json.loads(r["extra"]) for r in metadata_rows(
        settings.home, "SELECT a.name, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id")}
    assets = task_assets("tiny-rgb")  # the task's own Assets, with the summed outcomes
    assert events == {assets.curated_images.name: {"accepted": 3},
                      assets.labeled_images.name: {"labeled": 2}}
    report = BatchReport.from_json(lake_rgb.read_bytes(ledger_key("b1")))
    assert (report.accepted, report.labeled) == (3, 2)
    assert len(known_image_ids(lake_rgb)) == 3 and known_image_ids(lake) == set()
    assert not lake.exists(ledger_key("b1"))
    # The default task's DAG finds nothing: B's batch is not in its landing.
    assert "starting task_id=ingest " not in dags_test(env, "ingest_landing",
                                                        "2026-11-22T12:10:00+00:00")
