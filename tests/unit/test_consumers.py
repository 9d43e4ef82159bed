"""Every Python snippet of docs/consumers.md runs, in order, against a real predictions table
whose history holds a first run, a rerun and a rollback rescore."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from mlcore.settings import REPO_ROOT
from tests.unit.test_predictions import DAY, ROWS, publish

AS_OF_LINE = "as_of = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)"


def snippets() -> list[str]:
    text = (REPO_ROOT / "docs" / "consumers.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture
def table_with_history(lake):
    """v1 the night's run (model 2), v2 a rerun with another run id, v3 a rescore after a
    rollback to model 1; another day beside it. Returns a time between v1 and v2."""
    publish(lake, "scheduled__2026-11-22", version="2")
    publish(lake, "scheduled__2026-11-21", day=DAY - timedelta(days=1), version="2")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    publish(lake, "manual__rerun", version="2")
    publish(lake, "manual__rescore_all_after_rollback", version="1")
    return between


def test_every_consumer_snippet_reads_the_committed_snapshot(lake, settings, monkeypatch,
                                                             table_with_history):
    blocks = snippets()
    assert len(blocks) >= 7 and any(AS_OF_LINE in b for b in blocks)
    monkeypatch.setenv("MLCORE_HOME", str(settings.home))
    monkeypatch.setenv("MLCORE_LAKE_URI", str(lake.root))
    namespace: dict = {}
    for block in blocks:
        code = block.replace('uri = "var/lake/predictions"', f'uri = "{lake.root}/predictions"')
        # The guide asks about 06:00 on the day; this table's commits are minutes old.
        when = table_with_history.isoformat()
        code = code.replace(AS_OF_LINE, f"as_of = datetime.fromisoformat('{when}')")
        exec(compile(code, "docs/consumers.md", "exec"), namespace)  # noqa: S102

    now_run, then_run = "manual__rescore_all_after_rollback", "scheduled__2026-11-22"
    ns = namespace
    assert set(ns["table"].column("dag_run_id").to_pylist()) == {now_run}
    assert ns["table"].num_rows == ROWS
    for frame, run, version in ((ns["df"], now_run, "1"), (ns["df_then"], then_run, "2")):
        assert len(frame) == ROWS and frame["image_id"].is_unique
        assert set(frame["dag_run_id"]) == {run} and set(frame["model_version"]) == {version}
    assert ns["arrow"].num_rows == ROWS and ns["arrow"].column_names == [
        "image_id", "predicted_label", "confidence"]
    assert ns["frame"].height == ROWS and set(ns["frame"]["dag_run_id"]) == {now_run}
    assert ns["frame_then"].height == ROWS and set(ns["frame_then"]["dag_run_id"]) == {then_run}
    assert ns["counts"] == ns["counts_then"] == [("T-shirt/top", ROWS)]
    assert set(ns["table_then"].column("dag_run_id").to_pylist()) == {then_run}
    assert ns["dataset_then"].count_rows() == ROWS


def test_the_other_day_is_untouched_by_reruns_of_this_one(lake, table_with_history):
    from mlcore.predictions import read_partition

    other = read_partition(lake, date(2026, 11, 21))
    assert set(other.column("dag_run_id").to_pylist()) == {"scheduled__2026-11-21"}
