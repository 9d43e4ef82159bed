"""The Data Docs site is built incrementally: each validation costs the same after a year,
the index lists every recent validation of every suite, and concurrent validations all land."""

import json
import multiprocessing as mp
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlcore.layout import DATA_DOCS, DOCS_INDEX
from mlcore.storage import LocalLake
from mlcore.validation import rebuild_docs_index, run_suite
from tests.conftest import DAY

SUITES = Path(__file__).resolve().parents[2] / "expectations" / "suites"
PARAMS = {"max_batch_files": 10, "max_reject_rate": 0.5, "max_label_share": 0.5,
          "intensity_mean_min": 1.0, "intensity_mean_max": 200.0}


class CountingLake(LocalLake):
    """A real local lake that counts the object operations made through it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calls: list[tuple[str, str]] = []

    def read_bytes(self, key):
        self.calls.append(("GET", key))
        return super().read_bytes(key)

    def list(self, prefix):
        self.calls.append(("LIST", prefix))
        return super().list(prefix)

    def list_info(self, prefix):
        self.calls.append(("LIST", prefix))
        return super().list_info(prefix)


def _validate(lake, n: int, *, suite: str = "batch_summary", ok: bool = True):
    frame = pd.DataFrame([{"key": f"batch-{n:04d}", "n_files": 3, "reject_rate": 0.0 if ok else 1.0,
                           "max_label_share": 0.2, "accepted_mean_intensity": 50.0}])
    if suite == "batch_summary":
        return run_suite(lake, SUITES, suite, frame=frame, run_name=f"batch-{n:04d}",
                         run_time=DAY + timedelta(minutes=n), parameters=PARAMS)
    frame = pd.DataFrame({"key": [f"f-{n}-{i}.png" for i in range(3)], "decodable": True,
                          "format": "PNG", "size_bytes": 100, "width": 28, "height": 28,
                          "mean": 50.0, "std": 10.0, "image_id": [f"{n}-{i}" for i in range(3)],
                          "label": 1})
    return run_suite(lake, SUITES, suite, frame=frame, run_name=f"batch-{n:04d}",
                     run_time=DAY + timedelta(minutes=n), parameters={
        "image_formats": ["PNG"], "max_file_bytes": 10_000, "max_side": 64,
        "class_indexes": [0, 1]})


def _index_rows(lake):
    newest = max(k for k in lake.list(DOCS_INDEX) if k.endswith(".json"))
    return json.loads(lake.read_bytes(newest))


@pytest.fixture
def lake(tmp_path):
    return CountingLake(tmp_path / "lake")


def test_a_validation_costs_the_same_reads_after_many(lake):
    costs = []
    for n in range(40):
        lake.calls.clear()
        _validate(lake, n)
        costs.append(sorted(op for op, _ in lake.calls))
    # After the first (which copies GX's static assets and starts the index), every
    # validation makes the same reads and listings, however many came before it.
    assert costs[2] == costs[39], (costs[2], costs[39])
    assert not [k for op, k in lake.calls if op == "LIST" and k.startswith("validation/")]
    index = lake.read_bytes(f"{DATA_DOCS}/index.html").decode()
    assert all(f"batch-{n:04d}" in index for n in range(40))


def test_the_index_links_every_suite_and_marks_failures(lake):
    _validate(lake, 1)
    _validate(lake, 2, suite="file_profiles")
    _validate(lake, 3, ok=False)
    state = _index_rows(lake)
    assert state["suites"] == ["batch_summary", "file_profiles"]
    assert [(r["run_name"], r["suite"], r["success"]) for r in state["rows"]] == [
        ("batch-0003", "batch_summary", False), ("batch-0002", "file_profiles", True),
        ("batch-0001", "batch_summary", True)]
    # GX's own builder deleted the pages of suites the ephemeral context did not hold.
    for suite in state["suites"]:
        assert lake.exists(f"{DATA_DOCS}/expectations/{suite}.html")
    index = lake.read_bytes(f"{DATA_DOCS}/index.html").decode()
    assert "expectations/file_profiles.html" in index and "expectations/batch_summary.html" in index


def test_a_retried_validation_is_listed_once(lake):
    _validate(lake, 1)
    _validate(lake, 1)
    assert [r["run_name"] for r in _index_rows(lake)["rows"]] == ["batch-0001"]


def test_a_lake_without_the_index_state_gets_it_from_its_stored_results(lake):
    for n in range(3):
        _validate(lake, n)
    for key in lake.list(DOCS_INDEX):
        lake.delete(key)
    _validate(lake, 3)
    assert [r["run_name"] for r in _index_rows(lake)["rows"]] == [
        "batch-0003", "batch-0002", "batch-0001", "batch-0000"]
    # ``mlcore ingest rebuild-index`` does the same on demand.
    for key in lake.list(DOCS_INDEX):
        lake.delete(key)
    lake.delete(f"{DATA_DOCS}/index.html")
    assert rebuild_docs_index(lake) == 4
    assert "batch-0000" in lake.read_bytes(f"{DATA_DOCS}/index.html").decode()


def test_the_index_keeps_only_the_newest_generations(lake):
    from mlcore.data_docs_site import KEEP_GENERATIONS

    for n in range(6):
        _validate(lake, n)
    assert len(lake.list(DOCS_INDEX)) == KEEP_GENERATIONS


def _validate_in_child(root: str, first: int, rounds: int, barrier) -> None:
    lake = LocalLake(root)
    for r in range(rounds):
        barrier.wait()  # each round, every child validates at the same moment
        _validate(lake, first + r)


def test_validations_at_once_all_reach_the_index(tmp_path):
    root, rounds, children = tmp_path / "lake", 4, 3
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(children)
    procs = [ctx.Process(target=_validate_in_child, args=(str(root), 100 * i, rounds, barrier))
             for i in range(children)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    lake = LocalLake(root)
    names = {r["run_name"] for r in _index_rows(lake)["rows"]}
    assert names == {f"batch-{100 * i + r:04d}" for i in range(children) for r in range(rounds)}
    index = lake.read_bytes(f"{DATA_DOCS}/index.html").decode()
    assert all(name in index for name in names)
