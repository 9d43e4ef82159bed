"""A year of operation at the cost of one day: per-run overhead against days of history.

Setup (untimed, spawned children): one lake grows day by day to each history length of
``--days``. Every history day is written directly with the project's writers, as ingestion
and scoring leave it: ``--per-day`` synthetic curated images (``write_shards``, 10 %
labeled), their image-id claims, a landing batch (``--landing-files`` small objects and
``_READY``) with its ledger entry and seen fingerprint, label shards and a feedback file
for 50 images of the previous day, the batch's GX validation (stored result, Data Docs page,
index), and that day's predictions partition (one Delta commit).
The label index and the realized-accuracy state are folded as the nightly runs would have.
Each new day brings 50 more late labels for the day before, so the realized-accuracy fold
has new feedback to fold.

Timed, for one new day, in a fresh spawned process per history length (so its peak RSS is
its own): ``ingest_landing``'s work (discovery, ``ingest_batch`` of one 1,000-PNG batch,
the retrain check's label count) and ``batch_score``'s (list the day's shards, score them
with an ONNX graph, ``count_inputs``, GX + Delta commit, realized accuracy). With
``--s3-days`` the same run is repeated against ``moto_server`` (smaller days: request
counts do not depend on images per day) and every request is counted *at the server*:
moto_server's access log has one line per HTTP request, whichever client sent it (the
lake's boto3 client, pyarrow's S3 filesystem, delta-rs's object store).

    .venv/bin/python bench/history.py [--days 1,30,180,365] [--per-day 5000] \
        [--s3-days 1,365] [--s3-per-day 200]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _report

START = datetime(2025, 1, 1, 1, tzinfo=UTC)
NEW_FILES = 1_000
RELABELS = 50
GOAL_RATIO = 1.2
INGEST_LANDING = ("discovery", "ingest", "label_count")
BATCH_SCORE = ("list_shards", "score", "commit", "realized")  # commit runs count_inputs
ROOT = Path(__file__).resolve().parent.parent
VERBS = ("GET", "PUT", "HEAD", "LIST", "DELETE", "POST")
# One werkzeug access line per request: ... "GET /bucket/key?query HTTP/1.1" 200 -
# (some statuses are coloured with ANSI escapes around the quoted request line).
ACCESS_LINE = re.compile(r'"(?:\x1b\[[\d;]*m)*([A-Z]+) (\S+) HTTP/')


def server_requests(log: Path, start: int, end: int) -> list[tuple[str, str]]:
    """(verb, key or prefix) of every S3 request moto_server logged between two offsets of
    its log; a GET of the bucket itself (ListObjects) counts as LIST."""
    from urllib.parse import parse_qs, unquote, urlsplit

    with log.open("rb") as fh:
        fh.seek(start)
        text = fh.read(end - start).decode(errors="replace")
    out = []
    for m in ACCESS_LINE.finditer(text):
        method, target = m.groups()
        url = urlsplit(target)
        if url.path.startswith("/moto-api"):
            continue
        _, _, key = unquote(url.path).lstrip("/").partition("/")
        query = parse_qs(url.query)
        verb = "LIST" if method == "GET" and not key else method
        out.append((verb, key or query.get("prefix", [""])[0]))
    return out


def _open(spec: dict):
    from mlcore.settings import Settings
    from mlcore.storage import LocalLake, S3Lake

    settings = Settings(home=Path(spec["home"]))
    if spec.get("s3"):
        s3 = spec["s3"]
        lake = S3Lake(bucket=s3["bucket"], prefix=s3["prefix"], endpoint_url=s3["endpoint"],
                      access_key_id="testing", secret_access_key="testing")
    else:
        lake = LocalLake(Path(spec["root"]))
    return settings, lake


def _id(day: int, i: int) -> str:
    return hashlib.sha256(f"{day}-{i}".encode()).hexdigest()


def build(spec: dict, first: int, last: int) -> dict:
    """Write history days ``first`` .. ``last - 1`` (runs in a spawned child)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from mlcore import label_index
    from mlcore.claims import open_claims
    from mlcore.data import CuratedRow, commit_shards, stage_shards, write_shards
    from mlcore.ingest import listing_hash
    from mlcore.layout import (
        CURATED_LABELS,
        landing_batch,
        landing_file,
        ledger_key,
        ready_marker,
        seen_key,
    )
    from mlcore.monitor import fold_realized
    from mlcore.predictions import prediction_schema, replace_partition, write_part
    from mlcore.validation import run_suite

    started = time.perf_counter()
    settings, lake = _open(spec)
    claims = open_claims(settings)
    n = spec["per_day"]
    rng = np.random.default_rng(first)
    pixels = rng.integers(0, 150, (n, 784), dtype=np.uint8)
    for d in range(first, last):
        day, batch = START + timedelta(days=d), f"day-{d:04d}"
        ids = [_id(d, i) for i in range(n)]
        rows = [CuratedRow(ids[i], pixels[i].tobytes(), landing_file(batch, f"{i}.png"),
                           i % 10 if i % 10 == 0 else None) for i in range(n)]
        shards = write_shards(lake, rows, batch, ingested_at=day, shard_rows=settings.shard_rows)
        claims.claim(batch, ids)
        label_shards = []
        if d > first:  # late labels for the previous (history) day's images
            late = [CuratedRow(_id(d - 1, i), pixels[i].tobytes(), landing_file(batch, f"l{i}.png"),
                               (i + d) % 10) for i in range(1, min(RELABELS, n - 1) + 1)]
            label_shards = stage_shards(lake, late, batch, ingested_at=day,
                                        shard_rows=settings.shard_rows,
                                        prefix=CURATED_LABELS)
            commit_shards(lake, label_shards, batch, ingested_at=day, prefix=CURATED_LABELS)
            write_feedback(lake, batch, day, late)
        for i in range(spec["landing_files"]):
            lake.write_bytes(landing_file(batch, f"{i}.png"), b"x" * 64)
        lake.write_bytes(ready_marker(batch), b"")
        fingerprint = listing_hash(lake.list_info(landing_batch(batch)))
        lake.write_bytes(ledger_key(batch), json.dumps({
            "batch_id": batch, "status": "ingested", "ingested_at": day.isoformat(),
            "files": n, "accepted": n, "shards": shards, "label_shards": label_shards}).encode())
        lake.write_bytes(seen_key(batch, fingerprint), b"")
        # The day's batch-level GX validation, stored with its Data Docs page as ingestion
        # stores it: a year leaves a year of results and pages for the next run to ignore.
        run_suite(lake, settings.gx_suites_dir, "batch_summary", frame=pd.DataFrame([{
            "key": batch, "n_files": n, "reject_rate": 0.0, "max_label_share": 0.1,
            "accepted_mean_intensity": 75.0}]), run_name=batch, run_time=day, parameters={
            "max_batch_files": n, "max_reject_rate": 0.5, "max_label_share": 0.5,
            "intensity_mean_min": 1.0, "intensity_mean_max": 254.0})
        if spec["predictions"]:
            preds = pa.Table.from_pylist([{
                "image_id": ids[i], "source_key": "", "batch_id": batch,
                "predicted_class": int(i % 10), "predicted_label": "", "confidence": 0.5,
                "probabilities": [0.1] * 10, "model_name": "m", "model_version": "1",
                "model_run_id": "r", "scored_at": day, "dag_run_id": "history"}
                for i in range(n)], prediction_schema())
            size = settings.shard_rows  # one data file per shard, named after it, as scoring does
            parts = [write_part(lake, preds.slice(k * size, size), day=day.date(),
                                dag_run_id="history", shard=key) for k, key in enumerate(shards)]
            replace_partition(lake, day.date(), parts)
    # The nightly runs before today folded these already.
    label_index.labeled_count(settings, lake)
    if spec["predictions"]:
        fold_realized(lake, claims=claims)
    return {"days": last - first, "seconds": time.perf_counter() - started}


def write_feedback(lake, batch: str, day: datetime, late: list) -> None:
    """The feedback file ingestion writes for late labels of curated images."""
    import pyarrow as pa

    from mlcore.layout import feedback_key
    from mlcore.storage import parquet_bytes

    lake.write_bytes(feedback_key(batch), parquet_bytes(pa.Table.from_pylist(
        [{"image_id": r.image_id, "label": r.label, "source_key": r.source_key,
          "batch_id": batch, "labeled_at": day} for r in late])))


def new_batch(spec: dict, day_index: int) -> None:
    """Today's landing batch: 1,000 real PNGs, 100 of them labeled, and 50 late labels for
    yesterday's images, which tonight's realized accuracy folds (untimed, child)."""
    import numpy as np

    from mlcore.data import CuratedRow
    from mlcore.images import encode_png
    from mlcore.layout import LABELS_FILE, landing_file, ready_marker

    _, lake = _open(spec)
    late = [CuratedRow(_id(day_index - 1, i), b"", landing_file("late", f"{i}.png"), i % 10)
            for i in range(RELABELS + 1, 2 * RELABELS + 1)]
    write_feedback(lake, f"late-{day_index:04d}", START + timedelta(days=day_index), late)
    rng = np.random.default_rng(10_000 + day_index)
    batch = f"new-{day_index:04d}"
    rows = []
    for i in range(NEW_FILES):
        lake.write_bytes(landing_file(batch, f"{i:04d}.png"),
                         encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8)))
        if i < 100:
            rows.append(f"{i:04d}.png,{i % 10}\n")
    lake.write_bytes(landing_file(batch, LABELS_FILE), ("filename,label\n" + "".join(rows)).encode())
    lake.write_bytes(ready_marker(batch), b"")


def export_model(path: str) -> None:
    """The ONNX graph scoring serves (fp32, untrained weights: speed, not accuracy)."""
    import torch

    from mlcore.export import to_onnx
    from mlcore.model import FashionCNN

    torch.manual_seed(0)
    Path(path).write_bytes(to_onnx(FashionCNN().eval(), 1.0))


def measure(spec: dict, day_index: int) -> dict:
    """One new day's per-run work on the lake as it stands (a fresh spawned process)."""
    import great_expectations  # noqa: F401  (one-off imports: untimed, as in bench/ingest.py)

    from mlcore.claims import open_claims
    from mlcore.ingest import ingest_batch, ready_batches
    from mlcore.label_index import labeled_count
    from mlcore.monitor import fold_realized
    from mlcore.registry import PinnedModel
    from mlcore.runtime import runtime_for
    from mlcore.score import (
        ScoringRun,
        ScoringWindow,
        commit,
        count_inputs,
        input_shards,
        score_shard,
    )
    from mlcore.serving import ServedModel, sha256_hex

    settings, lake = _open(spec)
    rt = runtime_for(settings, lake=lake)
    log = Path(spec["s3"]["log"]) if spec.get("s3") else None
    seen: list[tuple[str, str, str]] = []  # (step, verb, key) of every request, in order
    onnx = Path(spec["model"]).read_bytes()
    model = ServedModel(onnx, sha256_hex(onnx))
    pinned = PinnedModel("m", "1", "r", "0" * 64)
    day = START + timedelta(days=day_index)
    out: dict[str, float | int | str] = {}

    def timed(name: str, fn):
        start = log.stat().st_size if log else 0
        t = time.perf_counter()
        result = fn()
        out[f"{name}_s"] = time.perf_counter() - t
        if log:  # the server logs a request before it answers: every one is in by now
            got = server_requests(log, start, log.stat().st_size)
            seen.extend((name, verb, key) for verb, key in got)
            out[f"{name}_requests"] = len(got)
        return result

    batch = f"new-{day_index:04d}"
    due = timed("discovery", lambda: ready_batches(lake, tick=day_index))
    assert due == [batch], due
    report = timed("ingest", lambda: ingest_batch(settings, lake, batch, logical_date=day))
    out["accepted"] = report.accepted
    out["labeled_total"] = timed("label_count", lambda: labeled_count(settings, lake))
    window = ScoringWindow(datetime.combine(day.date(), datetime.min.time(), UTC),
                           datetime.combine(day.date(), datetime.min.time(), UTC)
                           + timedelta(days=1), day.date())
    run = ScoringRun.of(window, pinned, run_id="today")
    # score_run's steps, one at a time to time each (commit runs count_inputs itself).
    shards = timed("list_shards", lambda: input_shards(rt, run))
    scored = timed("score", lambda: [score_shard(rt, run, shard=s, model=model) for s in shards])
    timed("count_inputs", lambda: count_inputs(rt, run, shards=shards))
    if spec["predictions"]:
        timed("commit", lambda: commit(rt, run, scored=scored, shards=shards))
        timed("realized", lambda: fold_realized(lake, claims=open_claims(settings)))
    out["ingest_landing_s"] = out["discovery_s"] + out["ingest_s"] + out["label_count_s"]
    out["batch_score_s"] = sum(out[f"{k}_s"] for k in BATCH_SCORE if f"{k}_s" in out)
    if log:
        for run, steps in (("ingest_landing", INGEST_LANDING), ("batch_score", BATCH_SCORE)):
            for verb in VERBS:
                out[f"{run}_{verb}"] = sum(1 for s, v, _ in seen if s in steps and v == verb)
            out[f"{run}_requests"] = sum(out[f"{run}_{verb}"] for verb in VERBS)
        _report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (_report.RESULTS_DIR / f"history-s3-requests-{day_index}.txt").write_text(
            "".join(f"{s} {v} {k}\n" for s, v, k in seen if "/landing/" not in k))
    out["peak_rss"] = _report.vm_hwm() or 0
    return out


def _grow(report, spec: dict, days: list[int], label: str) -> list[tuple[int, dict]]:
    results, built = [], 0
    for d in days:
        setup, _ = _report.run_in_child(build, spec, built, d)
        built = d
        _report.run_in_child(new_batch, spec, d)
        figures, _ = _report.run_in_child(measure, spec, d)
        figures["setup_s"] = setup["seconds"]
        results.append((d, figures))
        print(f"[{label}] {d} days: ingest_landing {figures['ingest_landing_s']:.2f} s, "
              f"batch_score {figures['batch_score_s']:.2f} s, peak RSS "
              f"{figures['peak_rss'] / _report.MIB:.0f} MiB (setup {setup['seconds']:.0f} s)"
              + (f"; S3 requests {figures['ingest_landing_requests']} + "
                 f"{figures['batch_score_requests']}" if "batch_score_requests" in figures else ""),
              flush=True)
        built = d + 1  # today's batch is history tomorrow; continue after it
    return results


def main() -> None:
    p = _report.parser(__doc__.splitlines()[0])
    p.add_argument("--days", default="1,30,180,365", help="history lengths, comma-separated")
    p.add_argument("--per-day", type=int, default=5_000, help="curated images per history day")
    p.add_argument("--landing-files", type=int, default=20,
                   help="objects per history landing batch (real batches hold thousands)")
    p.add_argument("--s3-days", default="1,365", help="history lengths on moto_server ('' = skip)")
    p.add_argument("--s3-per-day", type=int, default=200)
    args = p.parse_args()
    days = sorted({int(x) for x in args.days.split(",") if x})
    s3_days = sorted({int(x) for x in args.s3_days.split(",") if x})

    report = _report.Report("history", "per-run overhead against days of history", {
        "days": days, "per_day": args.per_day, "landing_files": args.landing_files,
        "new_batch_files": NEW_FILES, "s3_days": s3_days, "s3_per_day": args.s3_per_day})
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        model = str(Path(tmp) / "model.onnx")
        _report.run_in_child(export_model, model)
        local = {"root": f"{tmp}/lake", "home": f"{tmp}/home", "per_day": args.per_day,
                 "landing_files": args.landing_files, "predictions": True, "model": model}
        report.params["lake_fs"] = _report.fs_type(Path(tmp))
        results = _grow(report, local, days, "local")
        keys = ["discovery_s", "ingest_s", "label_count_s", "ingest_landing_s", "list_shards_s",
                "score_s", "count_inputs_s", "commit_s", "realized_s", "batch_score_s",
                "peak_rss"]
        report.add_table("local lake (one new day; seconds, peak RSS in MiB)",
                         ["figure", *[f"{d} d" for d, _ in results]],
                         [[k, *[(f"{r[k] / _report.MIB:.0f}" if k == "peak_rss" else
                                 f"{r[k]:.3f}") for _, r in results]] for k in keys],
                         data=[{"days": d, **r} for d, r in results])
        first, last = results[0][1], results[-1][1]
        for key, label in (("ingest_landing_s", "ingest_landing time"),
                           ("batch_score_s", "batch_score time"), ("peak_rss", "peak RSS")):
            ratio = last[key] / first[key]
            report.add(f"ratio_{key}", f"{label}: day {results[-1][0]} / day {results[0][0]}",
                       round(ratio, 3), "x")
            report.goal(f"{label} within {GOAL_RATIO}x", ratio <= GOAL_RATIO if len(results) > 1
                        else None, f"{ratio:.2f}x")

        if s3_days:
            sys.path.insert(0, str(ROOT))
            from tests.fixtures_servers import moto_server

            with moto_server(Path(tmp)) as server:
                s3 = {"root": "", "home": f"{tmp}/home-s3", "per_day": args.s3_per_day,
                      "landing_files": args.landing_files, "predictions": True, "model": model,
                      "s3": {"bucket": server.bucket, "prefix": "history",
                             "endpoint": server.endpoint,
                             "log": str(Path(tmp) / "moto_server.log")}}
                s3_results = _grow(report, s3, s3_days, "s3")
            steps = [*INGEST_LANDING, "list_shards", "score", "count_inputs", "commit", "realized"]
            heads = ["", *[f"{d} d" for d, _ in s3_results]]
            report.add_table("S3 requests of one new day, counted at moto_server (every client)",
                             ["step", *heads[1:]],
                             [[o + (" (also inside commit)" if o == "count_inputs" else ""),
                               *[r[f"{o}_requests"] for _, r in s3_results]] for o in steps],
                             data=[{"days": d, **r} for d, r in s3_results])
            for run in ("ingest_landing", "batch_score"):
                report.add_table(f"{run}: S3 requests by verb", ["verb", *heads[1:]],
                                 [[v, *[r[f"{run}_{v}"] for _, r in s3_results]]
                                  for v in (*VERBS, "requests")])
                a = s3_results[0][1][f"{run}_requests"]
                b = s3_results[-1][1][f"{run}_requests"]
                report.goal(f"{run}: S3 requests do not grow with history",
                            b <= a if len(s3_results) > 1 else None,
                            f"{a} at day {s3_results[0][0]}, {b} at day {s3_results[-1][0]}")
            report.note("S3 requests are counted from moto_server's access log (one line per "
                        "HTTP request, whichever client sent it: boto3, pyarrow, delta-rs); "
                        "bench/results/history-s3-requests-<day>.txt lists each request's "
                        "step, verb and key (landing keys left out). LIST is a GET of the "
                        "bucket (ListObjects); POST is a multipart upload or a batch delete.")
    report.note(f"history landing batches hold {args.landing_files} objects each (real ones "
                "hold thousands): discovery no longer lists them, so their size only changes "
                "the setup time.")
    report.note("drift monitoring is not timed here: its baseline is stored per model version "
                "at registration (issue-17), so it costs the night's aggregates only.")
    report.finish()


if __name__ == "__main__":
    main()
