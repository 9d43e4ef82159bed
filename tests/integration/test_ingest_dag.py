"""``ingest_landing`` through real Airflow (``airflow dags test``): a poison batch fails once
with a ledger entry, the other batch's images are still announced, and the next run does
not take the poison batch up again."""

import re

import numpy as np
import pytest

from mlcore import audit
from mlcore.airflow_local import DagRunFailed, airflow_env, dags_test, ensure_db
from mlcore.images import encode_png
from mlcore.ingest import BatchReport, ledger_key
from mlcore.settings import Settings
from mlcore.storage import open_lake

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
