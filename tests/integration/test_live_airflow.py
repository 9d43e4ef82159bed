"""The platform on a live Airflow (api-server, scheduler, dag-processor; LocalExecutor, SQLite),
driven through the REST API v2 as the UI drives it, and looked at with headless Chromium.

One module-scoped deployment with real logins (one admin user; anonymous requests get
401, as under ``make up``): seed landing (the demo batches plus one batch that fails the
batch-level validation), then ingest -> retrain -> score for one simulated day. Afterwards
a hostile-name corpus is ingested through ``mlcore`` directly, and every Data Docs page it
produced is opened, logged in, in a Chromium that cannot reach anything but loopback.
Screenshots and the servers' logs land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from live_airflow import ARTIFACTS, MLCORE_DAGS, chromium, running_airflow, wait_until

from mlcore.data import list_shards, load_fashion_mnist, read_shard
from mlcore.data_docs import page_url
from mlcore.demo import PROFILES, schedule_for
from mlcore.images import encode_png
from mlcore.ingest import BatchRejected, BatchReport, ingest_batch, ledger_key
from mlcore.seed import seed_landing
from mlcore.settings import Settings
from mlcore.storage import open_lake
from mlcore.validation import ValidationFailed

pytestmark = pytest.mark.e2e

DAY: date = (datetime.now(UTC) - timedelta(days=2)).date()  # logical dates lie in the past
BAD_BATCH = "zz-junk-01"
ADMIN = ("admin", "live-test-password")

# Hostile names: each payload would set window.__pwned if it ever ran.
CANARY = "window.__pwned"
PAYLOAD = f"<img src=x onerror={CANARY}=1>"
HOSTILE_FILES = [
    f"{PAYLOAD}.png", f"<svg onload={CANARY}=2>.png", f"</script><script>{CANARY}=3</script>.png",
    "q\"'`<b>bold</b>.png", f"javascript:{CANARY}=4.png", f"\" onmouseover=\"{CANARY}=5.png",
    "a#b with space?x=1&y=%2e.png", "L" * 200 + ".png",
]
# Batch ids with markup are refused by ingestion before anything is written (the data
# contract's charset; tests/unit/test_data_docs.py checks GX pages built for such ids
# directly); the corpus rides in valid batches, the hostile ids are checked for refusal.
HOSTILE_BATCHES = ["hostile-0", "hostile-1.b", "hostile_2", "hostile-3"]
REFUSED_BATCH_IDS = ["with space#1", f"b{PAYLOAD}", f"javascript:{CANARY}=6", "q\"'`&amp;"]


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
    seeded = [b.batch_id for b in seed_landing(settings, lake, per_batch=8)]
    drop_bad_batch(lake, settings)
    logical = schedule_for(DAY)
    with running_airflow(settings, "live-airflow", credentials=ADMIN) as airflow:
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
    from mlcore.registry import configure_mlflow

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

    champion = configure_mlflow(settings, lake).get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == str(commit.metadata["model"]["version"])


@pytest.fixture(scope="module")
def hostile(live):
    """The hostile corpus, ingested with mlcore into the live deployment's lake (GX builds
    the Data Docs the plugin serves); yields batch id -> its report and Data Docs pages."""
    settings, lake = live["settings"], live["lake"]
    images, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    # An hour after the DAG's ingestion: the index lists these first (newest on top).
    at = datetime.fromisoformat(schedule_for(DAY)["ingest_landing"]) + timedelta(hours=1)
    out = {}
    for n, batch_id in enumerate(HOSTILE_BATCHES):
        files = {name: f"not an image {n}-{i}".encode() for i, name in enumerate(HOSTILE_FILES)}
        files.update({f"ok-{i}.png": encode_png(np.asarray(images[100 + 10 * n + i]))
                      for i in range(8 if n % 2 == 0 else 2)})  # odd ones fail the batch suite
        for name, data in files.items():
            lake.write_bytes(f"landing/{batch_id}/{name}", data)
        lake.write_bytes(f"landing/{batch_id}/labels.csv", (
            'filename,label\n'
            f'ok-0.png,"{PAYLOAD}"\n"{PAYLOAD}.png",Bag\nok-1.png,"\'><script>{CANARY}=7</script>"\n'
        ).encode())
        lake.write_bytes(f"landing/{batch_id}/_READY", b"")
        with contextlib.suppress(ValidationFailed):
            ingest_batch(settings, lake, batch_id, logical_date=at)
        report = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
        out[batch_id] = report
    for batch_id in REFUSED_BATCH_IDS:
        lake.write_bytes(f"landing/{batch_id}/ok.png", encode_png(np.asarray(images[0])))
        lake.write_bytes(f"landing/{batch_id}/_READY", b"")
        with pytest.raises(BatchRejected, match="invalid_batch_id"):
            ingest_batch(settings, lake, batch_id, logical_date=at)
    return out


def _docs(airflow, key: str) -> str:
    return page_url(f"{airflow.url}/data-docs", key)


def _outside_loopback(urls: list[str]) -> list[str]:
    return [u for u in urls if urlsplit(u).scheme not in ("data", "about", "blob")
            and urlsplit(u).hostname not in ("127.0.0.1", "localhost")]


def test_hostile_names_show_as_text_and_no_script_runs(live, hostile):
    airflow = live["airflow"]
    pages = ["validation/data_docs/index.html",
             *(k for r in hostile.values() for k in r.docs_keys)]
    assert len(pages) == 1 + 2 * len(HOSTILE_BATCHES)
    with chromium(ARTIFACTS / "live-airflow" / "chromium-hostile.log", offline=True) as browser:
        browser.login(airflow.url, *ADMIN)
        for key in pages:
            browser.goto(_docs(airflow, key))
            wait_until(lambda: browser.evaluate(
                "document.querySelectorAll('.bootstrap-table').length > 0"), 30,
                f"the tables of {key} to render")
            browser.evaluate("document.querySelectorAll('*').forEach(e => "
                             "['mouseover', 'focus', 'load', 'error'].forEach(t => e.dispatchEvent("
                             "new Event(t))))")  # give every would-be handler its chance
            text = browser.text()
            assert browser.evaluate(f"typeof {CANARY}") == "undefined", f"script ran on {key}"
            assert browser.evaluate("document.querySelectorAll('svg[onload], img[onerror]').length "
                                    "+ [...document.querySelectorAll('b')].filter("
                                    "e => e.textContent === 'bold').length") == 0, key
            if "/file_profiles/" in key:  # the failing keys, shown as the names they are
                report = next(r for b, r in hostile.items() if key in r.docs_keys)
                for name in HOSTILE_FILES[:5]:
                    assert name in text, (key, name)
                assert report.batch_id in text, key
                if report.batch_id == HOSTILE_BATCHES[0]:
                    browser.evaluate("""[...document.querySelectorAll('td')]
                        .filter(e => e.textContent.includes('onerror')).pop()
                        .scrollIntoView({block: 'center'})""")
                    browser.screenshot(ARTIFACTS / "data-docs-hostile-names.png")
            if key.endswith("index.html"):
                for batch_id in HOSTILE_BATCHES:
                    assert batch_id in text, batch_id
                for batch_id in REFUSED_BATCH_IDS:  # refused before GX: no page names them
                    assert batch_id not in text, batch_id
        assert _outside_loopback(browser.requests) == []
    for report in hostile.values():  # the real names are quarantined, with reasons
        assert {r.key.split("/", 2)[2] for r in report.rejections} >= set(HOSTILE_FILES)


def test_printed_links_open_the_page_for_hostile_batch_ids(live, hostile):
    airflow = live["airflow"]
    headers = {"Authorization": f"Bearer {airflow.token()}"}  # curl with an API token
    for batch_id, report in hostile.items():
        for key in report.docs_keys:
            url = _docs(airflow, key)
            assert " " not in url and "#" not in urlsplit(url).path + urlsplit(url).fragment
            resp = requests.get(url, headers=headers, timeout=30)
            assert resp.status_code == 200, (batch_id, url, resp.status_code)
            assert "Expectation Validation Result" in resp.text


def test_every_data_docs_route_refuses_anonymous_requests(live, hostile):
    airflow = live["airflow"]
    key = next(iter(hostile.values())).docs_keys[0]
    routes = ["/data-docs/", "/data-docs/index.html", urlsplit(_docs(airflow, key)).path,
              "/data-docs/static/images/favicon.ico", "/data-docs/missing.html",
              "/data-docs/_assets/mlcore/datadocs.js", "/data-docs/_assets/jquery/dist/jquery.min.js",
              "/data-docs/openapi.json", "/data-docs/docs", "/data-docs/redoc"]
    assert requests.get(f"{airflow.url}/api/v2/dags", timeout=30).status_code == 401
    for route in routes:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Cookie": "_token=forged"}):
            resp = requests.get(airflow.url + route, headers=headers, timeout=30,
                                allow_redirects=False)
            assert resp.status_code in (401, 403), (route, headers, resp.status_code)
            assert resp.headers.get("x-content-type-options") == "nosniff"
    ok = requests.get(f"{airflow.url}/data-docs/index.html", timeout=30,
                      headers={"Authorization": f"Bearer {airflow.token()}"})
    assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
    csp = dict(d.strip().split(" ", 1) for d in ok.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == f"{airflow.url}/data-docs/_assets/"  # no inline, no eval
    assert csp["default-src"] == "'none'"
    for route in ("/data-docs/openapi.json", "/data-docs/docs", "/data-docs/redoc",
                  "/data-docs/validations", "/data-docs/static", "/data-docs/" + "x" * 300):
        resp = requests.get(airflow.url + route, timeout=30,
                            headers={"Authorization": f"Bearer {airflow.token()}"})
        assert resp.status_code == 404, (route, resp.status_code)


def test_dag_list_page_shows_the_three_dags(live):
    airflow = live["airflow"]
    with chromium(ARTIFACTS / "live-airflow" / "chromium.log") as browser:
        browser.login(airflow.url, *ADMIN)
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

    with chromium(ARTIFACTS / "live-airflow" / "chromium-docs.log", offline=True) as browser:
        browser.login(airflow.url, *ADMIN)  # the operator, logged in through the UI
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
        browser.requests.clear()
        browser.evaluate(f"{button}.click()")  # same origin: opens in this tab
        wait_until(lambda: browser.evaluate("window.__previousPage === undefined && "
                                            "document.readyState === 'complete'"),
                   60, "the Data Docs page to open")
        assert browser.evaluate("location.href") == url
        text = browser.wait_for_text("reject_rate", "Status:", timeout=60)
        # The status icon (a Font Awesome glyph, now that its CSS loads) adds a space.
        assert "Status: Failed" in " ".join(text.split())
        # Styled offline: Bootstrap's reboot and table rules, from the plugin's local copy.
        wait_until(lambda: browser.evaluate(
            "document.querySelectorAll('.bootstrap-table').length > 0"), 30, "the tables")
        styles = browser.evaluate("""(() => { const t = document.querySelector('table.table');
            const s = getComputedStyle(t), b = getComputedStyle(document.body);
            return {collapse: s.borderCollapse, width: t.getBoundingClientRect().width,
                    font: b.fontFamily, sheets: document.styleSheets.length,
                    bootstrap: [...document.styleSheets].some(x => (x.href || '').includes(
                        '/_assets/bootstrap/dist/css/bootstrap.min.css') && x.cssRules.length > 1000)};
            })()""")
        assert styles["collapse"] == "collapse" and styles["bootstrap"], styles
        assert styles["font"].startswith("-apple-system"), styles  # Bootstrap's font stack
        # Bring the failed expectation into view: the last "reject_rate" section heading.
        browser.evaluate("""[...document.querySelectorAll('*')]
            .filter(e => e.children.length === 0 && e.textContent.trim() === 'reject_rate')
            .pop().scrollIntoView({block: 'start'})""")
        browser.screenshot(ARTIFACTS / "data-docs-failed.png")
        left = _outside_loopback(browser.requests)
    assert left == [], f"requests left loopback: {left}"
    assert f"batch_summary / {BAD_BATCH}" in text
    # The failed rule and the value that broke it (3 of 4 files rejected, limit 0.5).
    section = text[text.rindex("reject_rate"):]
    assert "less than or equal to 0.5" in section and "0.75" in section
