"""The platform on a live Airflow (api-server, scheduler, dag-processor; LocalExecutor, SQLite),
driven through the REST API v2 as the UI drives it, and looked at with headless Chromium.

One module-scoped deployment: seed landing (the demo batches plus one batch that fails the
batch-level validation), then ingest -> retrain -> score for one simulated day. Screenshots
and the servers' logs land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from live_airflow import ARTIFACTS, MLCORE_DAGS, chromium, running_airflow, wait_until

from mlcore.data import list_shards, load_fashion_mnist, read_shard
from mlcore.demo import PROFILES, schedule_for
from mlcore.images import encode_png
from mlcore.ingest import BatchReport, ledger_key
from mlcore.seed import seed_landing
from mlcore.settings import Settings
from mlcore.storage import open_lake

pytestmark = pytest.mark.e2e

DAY: date = (datetime.now(UTC) - timedelta(days=2)).date()  # logical dates lie in the past
BAD_BATCH = "zz-junk-01"


def drop_bad_batch(lake, settings: Settings) -> None:
    """Three files that are not images and one good one: the reject rate (0.75) fails the batch."""
    images, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    files = {f"junk-{i}.png": b"this is not an image at all\n" * 4 + bytes([i]) for i in range(3)}
    files["ok.png"] = encode_png(np.asarray(images[0]))
    for name, data in files.items():
        lake.write_bytes(f"landing/{BAD_BATCH}/{name}", data)
    lake.write_bytes(f"landing/{BAD_BATCH}/_READY", b"")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("live-airflow"), **PROFILES["test"])
    lake = open_lake(settings)
    seeded = [b.batch_id for b in seed_landing(lake, settings, per_batch=8)]
    drop_bad_batch(lake, settings)
    logical = schedule_for(DAY)
    with running_airflow(settings, "live-airflow") as airflow:
        ingest_run, ingest_tis = airflow.run_dag("ingest_landing", logical["ingest_landing"],
                                                 timeout=600, expect=None)  # asserted below
        retrain_run, _ = airflow.run_dag("retrain_model", logical["retrain_model"], timeout=900)
        score_run, _ = airflow.run_dag("batch_score", logical["batch_score"], timeout=600)
        yield {
            "airflow": airflow, "settings": settings, "lake": lake, "seeded": seeded,
            "ingest": (ingest_run, ingest_tis), "retrain": retrain_run, "score": score_run,
        }


def test_only_the_bad_batch_fails_and_the_others_are_ingested(live):
    run, tis = live["ingest"]
    ingest = {t["rendered_map_index"]: t for t in tis if t["task_id"] == "ingest"}
    assert set(ingest) == {*live["seeded"], BAD_BATCH}
    bad = ingest[BAD_BATCH]
    assert (bad["state"], bad["try_number"]) == ("failed", 1), (
        f"{BAD_BATCH}: {bad['state']} after {bad['try_number']} tries. A failed validation must "
        "fail its task for good: a retry finds the batch recorded as rejected, returns that "
        "report and succeeds, and the task's Data Docs link (its XCom) is cleared.")
    assert {b: t["state"] for b, t in ingest.items()} == {
        **{b: "success" for b in live["seeded"]}, BAD_BATCH: "failed"}
    assert run["state"] == "failed"  # one mapped task failed, so publish did not run
    lake = live["lake"]
    reports = {b: BatchReport.from_json(lake.read_bytes(ledger_key(b)))
               for b in [*live["seeded"], BAD_BATCH]}
    assert {b: r.status for b, r in reports.items()} == {
        **{b: "ingested" for b in live["seeded"]}, BAD_BATCH: "rejected"}
    assert any("reject_rate" in f for f in reports[BAD_BATCH].failed_expectations)
    reasons = json.loads(lake.read_bytes(f"quarantine/{BAD_BATCH}/_reasons.json"))
    assert len(reasons) == 4  # the whole batch is quarantined


def test_scoring_covers_the_ingested_day_and_publishes_its_predictions(live):
    from mlcore.predictions import partition_commit, read_partition
    from mlcore.registry import client

    settings, lake, score = live["settings"], live["lake"], live["score"]
    start = datetime.fromisoformat(score["data_interval_start"])
    end = datetime.fromisoformat(score["data_interval_end"])
    ingested_at = datetime.fromisoformat(schedule_for(DAY)["ingest_landing"])
    assert start <= ingested_at < end and start.date() == DAY

    unlabeled = set()
    for key in list_shards(lake):
        rows = read_shard(lake, key, ["image_id", "label"]).to_pydict()
        unlabeled |= {i for i, lab in zip(rows["image_id"], rows["label"], strict=True) if lab is None}
    reports = [BatchReport.from_json(lake.read_bytes(ledger_key(b))) for b in live["seeded"]]
    accepted_unlabeled = sum(r.accepted - r.labeled for r in reports)
    commit = partition_commit(lake, DAY)
    assert commit.rows == accepted_unlabeled == len(unlabeled) > 0
    assert set(read_partition(lake, DAY).column("image_id").to_pylist()) == unlabeled

    champion = client(settings, lake).get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == str(commit.metadata["model"]["version"])


def test_dag_list_page_shows_the_three_dags(live):
    airflow = live["airflow"]
    with chromium(ARTIFACTS / "live-airflow" / "chromium.log") as browser:
        browser.goto(f"{airflow.url}/dags")
        browser.wait_for_text(*MLCORE_DAGS, timeout=90)
        browser.screenshot(ARTIFACTS / "airflow-dags.png")
        dom = browser.dom()
    (ARTIFACTS / "airflow-dags.html").write_text(dom)
    for dag_id in MLCORE_DAGS:
        assert dag_id in dom


def test_failed_validation_links_to_its_data_docs_page(live):
    airflow = live["airflow"]
    run, tis = live["ingest"]
    failed = next(t for t in tis if t["task_id"] == "ingest" and t["rendered_map_index"] == BAD_BATCH)
    links = airflow.api(
        "GET", f"dags/ingest_landing/dagRuns/{run['dag_run_id']}/taskInstances/ingest/links",
        params={"map_index": failed["map_index"]})["extra_links"]
    url = links.get("Data Docs")
    assert url, f"the failed task has no Data Docs link: {links}"
    assert url.startswith(f"{airflow.url}/data-docs/validations/batch_summary/{BAD_BATCH}/")
    ok = next(t for t in tis if t["task_id"] == "ingest" and t["state"] == "success")
    ok_links = airflow.api(
        "GET", f"dags/ingest_landing/dagRuns/{run['dag_run_id']}/taskInstances/ingest/links",
        params={"map_index": ok["map_index"]})["extra_links"]
    assert not ok_links.get("Data Docs")  # a batch that passed has no page to point at

    with chromium(ARTIFACTS / "live-airflow" / "chromium-docs.log") as browser:
        # The task instance's Details tab shows the plugin's link as an "Extra Links" button.
        browser.goto(f"{airflow.url}/dags/ingest_landing/runs/{run['dag_run_id']}"
                     f"/tasks/ingest/mapped/{failed['map_index']}/details")
        browser.wait_for_text("Data Docs", BAD_BATCH, timeout=90)
        button = f"[...document.querySelectorAll('a')].find(a => a.href === {json.dumps(url)})"
        wait_until(lambda: browser.evaluate(f"!!{button}"), 30, "the Data Docs button")
        assert browser.evaluate(f"{button}.textContent.trim()") == "Data Docs"
        browser.evaluate(f"{button}.scrollIntoView({{block: 'center'}})")
        browser.screenshot(ARTIFACTS / "airflow-failed-task.png")

        browser.evaluate("window.__previousPage = true")
        browser.evaluate(f"{button}.click()")  # same origin: opens in this tab
        wait_until(lambda: browser.evaluate("window.__previousPage === undefined && "
                                            "document.readyState === 'complete'"),
                   60, "the Data Docs page to open")
        assert browser.evaluate("location.href") == url
        text = browser.wait_for_text("reject_rate", "Status: Failed", timeout=60)
        # Bring the failed expectation into view: the last "reject_rate" section heading.
        browser.evaluate("""[...document.querySelectorAll('*')]
            .filter(e => e.children.length === 0 && e.textContent.trim() === 'reject_rate')
            .pop().scrollIntoView({block: 'start'})""")
        browser.screenshot(ARTIFACTS / "data-docs-failed.png")
    assert f"batch_summary / {BAD_BATCH}" in text
    # The failed rule and the value that broke it (3 of 4 files rejected, limit 0.5).
    section = text[text.rindex("reject_rate"):]
    assert "less than or equal to 0.5" in section and "0.75" in section
