"""``mlcore trace``: follow one image from upload to every prediction made of it.

It only reads records the pipeline already writes: the prediction table (Delta), curated
shards, the ingestion ledger, GX results, MLflow runs and versions, and the audit trail.
A missing record is a :class:`BrokenLink` that names the link, never a silent gap.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from typing import TYPE_CHECKING

from mlcore import audit
from mlcore.data import list_shards, read_shard
from mlcore.data_docs import page_url, restore
from mlcore.ingest import BatchReport, ledger_key
from mlcore.layout import (
    PARTITION,
    PREDICTIONS,
    is_landing_key,
    validation_result,
    validation_run_of_page,
)
from mlcore.predictions import partition_dir, read_partition, scan

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BrokenLink(LookupError):
    """A link of the chain is missing; ``link`` names which."""

    def __init__(self, link: str, detail: str):
        self.link = link
        super().__init__(f"broken link: {link}: {detail}")


def resolve(lake: Lake, ref: str, row: int | None = None) -> str:
    """An image id from an id, a landing key, or a partition date (``YYYY-MM-DD``) plus row."""
    if SHA256.match(ref):
        return ref
    if is_landing_key(ref):
        try:
            return hashlib.sha256(lake.read_bytes(ref)).hexdigest()
        except FileNotFoundError as exc:
            raise BrokenLink("landing object", f"{ref} does not exist") from exc
    day = date.fromisoformat(ref.removeprefix(f"{PREDICTIONS}/").removeprefix(f"{PARTITION}="))
    table = read_partition(lake, day, columns=["image_id"])
    if row is None or not 0 <= row < table.num_rows:
        raise BrokenLink("prediction row", f"row {row} not in {day} ({table.num_rows} rows)")
    return table.column("image_id")[row].as_py()


def _prediction_hits(lake: Lake, image_id: str) -> list[dict]:
    """Every current prediction of the image, from one filtered scan of the table."""
    import pyarrow.compute as pc

    columns = ["dt", "predicted_label", "confidence", "model_name", "model_version",
               "model_run_id", "source_key", "batch_id", "dag_run_id"]
    found = scan(lake, columns=columns, filter=pc.field("image_id") == image_id)
    return [{"partition": partition_dir(date.fromisoformat(r.pop("dt"))),
             **r, "confidence": round(r["confidence"], 6)}
            for r in sorted(found.to_pylist(), key=lambda r: r["dt"])]


def _curated_hit(lake: Lake, image_id: str) -> dict | None:
    for key in list_shards(lake):
        table = read_shard(lake, key, ["image_id", "source_key", "batch_id", "label"])
        ids = table.column("image_id").to_pylist()
        if image_id in ids:
            row = table.slice(ids.index(image_id), 1).to_pylist()[0]
            return {"shard": key, **row}
    return None


def _validation(lake: Lake, report: BatchReport, data_docs_url: str) -> list[dict]:
    out = []
    for docs_key in report.docs_keys:
        run = validation_run_of_page(docs_key)
        result_key = validation_result(run)
        if not lake.exists(result_key):
            raise BrokenLink("validation result", f"{result_key} is missing")
        suite, run_name, run_time = restore(run).split("/")[:3]
        success = json.loads(lake.read_bytes(result_key)).get("success")
        out.append({"suite": suite, "gx_run": f"{run_name}@{run_time}", "success": success,
                    "result_key": result_key,
                    "data_docs": page_url(data_docs_url, docs_key)})
    return out


def _model(settings: Settings, lake: Lake, name: str, version: str) -> dict:
    from mlflow.exceptions import MlflowException

    from mlcore.registry import configure_mlflow

    mlc = configure_mlflow(settings, lake)
    try:
        mv = mlc.get_model_version(name, version)
        run = mlc.get_run(mv.run_id)
    except MlflowException as exc:
        raise BrokenLink("model version", f"{name} v{version} or its run is missing") from exc
    lineage_path = mlc.download_artifacts(mv.run_id, "lineage.json")
    with open(lineage_path) as fh:
        lineage = json.load(fh)
    target = f"{name}/{version}"
    return {
        "name": name, "version": version, "run_id": mv.run_id,
        "holdout_accuracy": run.data.metrics.get("holdout_accuracy"),
        "seed": run.data.params.get("seed"),
        "code_version": run.data.tags.get("code_version"),
        "train_data_hash": lineage["train_data_hash"], "holdout_hash": lineage["holdout_hash"],
        "curated_shards": lineage["curated_shards"],
        "gate_decision": mv.tags.get("gate_decision"),
        "gate_reasons": json.loads(mv.tags.get("gate_reasons", "[]")),
        "forced": {"by": mv.tags["forced_by"], "reason": mv.tags.get("forced_reason")}
        if "forced_by" in mv.tags else None,
        "audit": [
            {"at": e.at, "action": e.action, "actor": e.actor, "reason": e.reason}
            for e in audit.entries(lake) if e.target == target
        ],
    }


def trace(settings: Settings, lake: Lake, image_id: str) -> dict:
    """The whole chain for one image id; raises :class:`BrokenLink` for a missing link."""
    predictions = _prediction_hits(lake, image_id)
    curated = _curated_hit(lake, image_id)
    if curated is None and not predictions:
        raise BrokenLink("image", f"no curated image or prediction has id {image_id}")
    batch_id = curated["batch_id"] if curated else predictions[0]["batch_id"]
    source_key = curated["source_key"] if curated else predictions[0]["source_key"]
    if not lake.exists(ledger_key(batch_id)):
        raise BrokenLink("ingestion ledger", f"{ledger_key(batch_id)} is missing")
    report = BatchReport.from_json(lake.read_bytes(ledger_key(batch_id)))
    if curated is None:
        missing = [s for s in report.shards if not lake.exists(s)]
        raise BrokenLink("curated shard", f"{', '.join(missing) or 'the shard'} holding "
                         f"{image_id} is missing (batch {batch_id})")
    models = {(p["model_name"], p["model_version"]) for p in predictions}
    return {
        "image_id": image_id,
        "landing": {"key": source_key, "batch_id": batch_id, "ingested_at": report.ingested_at,
                    "batch_content_hash": report.content_hash, "batch_status": report.status},
        "validation": _validation(lake, report, settings.data_docs_url),
        "curated": {"shard": curated["shard"], "label": curated["label"]},
        "predictions": predictions,
        "models": [_model(settings, lake, n, v) for n, v in sorted(models)],
    }


def render(chain: dict) -> str:
    """The chain for people: one link per line, each with its key or id."""
    land, cur = chain["landing"], chain["curated"]
    lines = [
        f"image     {chain['image_id']}",
        f"landing   {land['key']}  (batch {land['batch_id']}, ingested {land['ingested_at']}, "
        f"{land['batch_status']})",
    ]
    # The image is curated, so it passed every row rule; a suite run can still have failed
    # for the batch's other files.
    lines += [f"validated {v['suite']} run {v['gx_run']}: this file passed (suite run "
              f"{'passed' if v['success'] else 'failed on other files'})"
              f"\n          docs {v['data_docs']}" for v in chain["validation"]]
    lines.append(f"curated   {cur['shard']}  (label {cur['label']})")
    if not chain["predictions"]:
        lines.append("predicted (not scored yet)")
    lines += [f"predicted {p['partition']}: {p['predicted_label']} ({p['confidence']:.3f}) by "
              f"{p['model_name']} v{p['model_version']} run {p['model_run_id']}"
              for p in chain["predictions"]]
    for m in chain["models"]:
        lines += [
            f"model     {m['name']} v{m['version']}  run {m['run_id']}  holdout acc "
            f"{m['holdout_accuracy']:.4f}  seed {m['seed']}  code {m['code_version']}",
            f"          trained on {len(m['curated_shards'])} curated shard(s) + base split; "
            f"data hash {m['train_data_hash'][:16]}…  holdout hash {m['holdout_hash'][:16]}…",
            f"          promotion: {m['gate_decision']}"
            + (f", forced by {m['forced']['by']}: {m['forced']['reason']}" if m["forced"] else "")
            + ("; " + "; ".join(m["gate_reasons"]) if m["gate_reasons"] else ""),
        ]
        lines += [f"          audit {a['at']} {a['action']} by {a['actor']}: {a['reason']}"
                  for a in m["audit"]]
    return "\n".join(lines)
