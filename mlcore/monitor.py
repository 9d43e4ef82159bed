"""Monitoring figures per scoring run: prediction drift and input drift against the holdout,
and realized accuracy once late labels arrive (shadow agreement: :mod:`mlcore.shadow`).

Three comparisons, each a distribution of the scored rows against the same distribution
computed with the same model on the frozen holdout (the night's side is folded from the
profiles the scoring tasks computed as they scored, :class:`mlcore.score.ScoredShard`: no
shard or partition is read again):

- ``class_psi``: Population Stability Index of the predicted-class distribution;
- ``confidence_js``: Jensen-Shannon divergence (base 2, in [0, 1]) of the confidence histogram;
- ``intensity_psi``: PSI of the per-image mean-intensity histogram (input drift).

Rule of thumb for PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlcore.drift_profile import CONFIDENCE_BINS, INTENSITY_BINS, Profile, image_means
from mlcore.layout import DRIFT, REALIZED_ACCURACY, REALIZED_STATE
from mlcore.records import Record

if TYPE_CHECKING:
    from mlcore.claims import Claims
    from mlcore.registry import PinnedModel
    from mlcore.runtime import Runtime
    from mlcore.score import ScoredShard, ScoringRun
    from mlcore.serving import ServedModel
    from mlcore.storage import Lake, ObjectInfo

__all__ = ["DRIFT_TABLE", "REALIZED_ACCURACY_TABLE", "DriftDetected", "DriftReport", "Profile",
           "compare", "drift_baseline", "drift_figure", "fold_realized", "image_means",
           "js_divergence", "monitor_partition", "psi", "realized_accuracy",
           "realized_accuracy_full"]

log = logging.getLogger(__name__)

EPS = 1e-4
MIN_ROWS_FOR_ALARM = 100

# Monitoring outputs are Delta tables too, so every figure keeps its history (time travel).
DRIFT_TABLE = DRIFT  # one row per partition, partitioned by dt
REALIZED_ACCURACY_TABLE = REALIZED_ACCURACY  # one row per model version


class DriftDetected(RuntimeError):
    """A drift score crossed its threshold and the configured action is ``fail``."""


def _share(counts: np.ndarray) -> np.ndarray:
    p = counts.astype(np.float64) + EPS  # no empty bin: PSI and JS stay finite
    return p / p.sum()


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    e, a = _share(expected_counts), _share(actual_counts)
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    p, q = _share(p_counts), _share(q_counts)
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


@dataclass
class DriftReport(Record):
    class_psi: float
    confidence_js: float
    intensity_psi: float
    threshold: float
    breached: list[str]
    scored: Profile
    baseline: Profile

    def metrics(self) -> dict[str, float]:
        return {"class_psi": self.class_psi, "confidence_js": self.confidence_js,
                "intensity_psi": self.intensity_psi, "rows": float(self.scored.rows)}

    def as_dict(self) -> dict:
        return asdict(self)


def compare(baseline: Profile, scored: Profile, threshold: float) -> DriftReport:
    """Drift scores of ``scored`` against ``baseline``; ``breached`` names those above threshold."""
    scores = {
        "class_psi": psi(np.array(baseline.class_counts), np.array(scored.class_counts)),
        "confidence_js": js_divergence(np.array(baseline.confidence_counts),
                                       np.array(scored.confidence_counts)),
        "intensity_psi": psi(np.array(baseline.intensity_counts), np.array(scored.intensity_counts)),
    }
    # Histograms of a handful of rows are noise: no alarm below MIN_ROWS_FOR_ALARM.
    breached = ([name for name, value in scores.items() if value > threshold]
                if scored.rows >= MIN_ROWS_FOR_ALARM else [])
    return DriftReport(**scores, threshold=threshold, breached=breached, scored=scored,
                       baseline=baseline)


def drift_baseline(rt: Runtime, pinned: PinnedModel, *, model: ServedModel | None = None
                   ) -> Profile:
    """The version's own drift baseline from its data profile (written at training); for a
    version that predates profiles, the served model scores the holdout here."""
    from mlcore.data_profile import version_profile

    settings, lake = rt.settings, rt.lake
    profile = version_profile(settings, lake, pinned.run_id)
    if profile is not None and profile.drift_baseline:
        return Profile(**profile.drift_baseline)
    from mlcore.data import load_fashion_mnist
    from mlcore.serving import load_served

    model = model or load_served(settings, lake, pinned)
    holdout, _ = load_fashion_mnist(settings.fmnist_dir, "test")
    return Profile.of(model.predict_proba(holdout, settings.score_batch_size), image_means(holdout))


def monitor_partition(rt: Runtime, run: ScoringRun, *, scored: list[ScoredShard | None],
                      model: ServedModel | None = None) -> DriftReport:
    """Drift of the run's committed partition vs the holdout, from the profiles its scoring
    tasks returned (``scored``: the committed parts'); stored in the lake and in MLflow.
    ``model``: the served champion, for a baseline that must be computed (see
    :func:`drift_baseline`)."""
    import mlflow
    import pyarrow as pa

    from mlcore.predictions import overwrite_rows

    settings, lake, day, pinned = rt.settings, rt.lake, run.day, run.model
    baseline = drift_baseline(rt, pinned, model=model)
    night = sum((s.profile for s in scored if s is not None), Profile.empty(rt.task.num_classes))
    report = compare(baseline, night, settings.drift_threshold)

    row = {"dt": str(day), "model_version": pinned.version, **report.metrics(),
           "breached": ",".join(report.breached),
           **{f"scored_{k}": v for k, v in asdict(night).items() if k != "rows"},
           **{f"holdout_{k}": v for k, v in asdict(baseline).items() if k != "rows"}}
    overwrite_rows(lake, DRIFT_TABLE, pa.Table.from_pylist([row]), day=day)
    rt.mlflow(f"{settings.mlflow_experiment}-monitoring")
    with mlflow.start_run(run_name=f"drift {day} v{pinned.version}") as mlflow_run:
        mlflow.set_tags({"partition": str(day), "model_version": pinned.version})
        mlflow.log_metrics(report.metrics())
        mlflow.log_dict(report.as_dict(), "drift.json")
        mlflow.log_figure(drift_figure(report, classes=rt.task.classes), "plots/drift.png")
    if report.breached:
        message = (f"drift on {day}: {', '.join(report.breached)} above {report.threshold} "
                   f"({report.metrics()})")
        from mlcore import alerts

        if settings.drift_action != "fail":
            log.warning(message)  # before the alert: sending it may load Airflow's logging
        alerts.send(alerts.drift_breach(
            settings, day, model_version=pinned.version, metrics=report.metrics(),
            breached=report.breached, threshold=report.threshold,
            experiment_id=mlflow_run.info.experiment_id, run_id=mlflow_run.info.run_id), settings)
        if settings.drift_action == "fail":
            raise DriftDetected(message)
    return report




def _feedback_files(lake: Lake) -> list[ObjectInfo]:
    from mlcore.layout import FEEDBACK_LABELS

    return [i for i in lake.list_info(FEEDBACK_LABELS) if i.key.endswith(".parquet") and not i.unsafe]


def _scored_shards(lake: Lake, batches: set[str]) -> list[str]:
    """The curated parts ``batches``' ledger entries commit (none while a batch is still
    being ingested: its labels wait for the next run)."""
    from mlcore.data import ledger_parts
    from mlcore.layout import ledger_key

    shards: list[str] = []
    for batch in sorted(batches):
        try:  # one GET, no HEAD first (as mlcore.data.committed_parts)
            shards += sorted(ledger_parts(json.loads(lake.read_bytes(ledger_key(batch)))))
        except FileNotFoundError:
            continue
    return shards


def _hits(lake: Lake, labels: dict[str, int], matched: set[str] | None = None,
          claims: Claims | None = None) -> dict[str, list[int]]:
    """model version -> [predictions of ``labels``' images, right ones], from the current
    snapshot of the predictions table (only rows of these images are kept); the images
    found are added to ``matched``.

    With ``claims``, only the data files scored from the shards of the batches that own
    these images are opened (image -> batch from the claims, batch -> shards from the
    ledger): O(new labels), where a filtered scan opens every partition ever written. An
    image appears only in its owner's shards, so both give the same rows; an unclaimed
    image has no curated row, hence no prediction yet."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.predictions import scan, scan_shards

    out: dict[str, list[int]] = {}
    if not labels:
        return out
    columns = ["image_id", "predicted_class", "model_version"]
    if claims is None:
        rows = scan(lake, columns=columns,
                    filter=pc.field("image_id").isin(pa.array(sorted(labels))))
    else:
        owners = claims.owners(labels)
        rows = scan_shards(lake, _scored_shards(lake, set(owners.values())), columns=columns,
                           filter=pc.field("image_id").isin(pa.array(sorted(owners))))
    for r in rows.to_pylist():
        n = out.setdefault(r["model_version"], [0, 0])
        n[0] += 1
        n[1] += r["predicted_class"] == labels[r["image_id"]]
        if matched is not None:
            matched.add(r["image_id"])
    return out


def _labels_of(lake: Lake, files: list[ObjectInfo]) -> dict[str, int]:
    from mlcore.storage import read_parquet

    labels: dict[str, int] = {}
    for info in sorted(files, key=lambda i: i.key):
        late = read_parquet(lake, info.key, ["image_id", "label"])
        labels.update(zip(*late.to_pydict().values(), strict=True))
    return labels


def realized_accuracy_full(lake: Lake) -> dict[str, list[int]]:
    """The reference: every feedback file joined with the whole predictions table."""
    return _hits(lake, _labels_of(lake, _feedback_files(lake)))


def fold_realized(lake: Lake, rebuild: bool = False, *,
                  claims: Claims | None = None) -> dict[str, list[int]]:
    """Fold the feedback files that arrived since the last run into the running counts
    (``_state/realized_accuracy.json``): each night reads its new labels and the rows of
    those images only, never every feedback file again; with ``claims``, it opens only the
    prediction files of those images' batches (see ``_hits``). A label whose image has no
    prediction yet stays pending and is tried again next run. Missing state (a lake from
    before it, or ``rebuild``) is rebuilt from every feedback file with a scan of the whole
    table: the full computation."""
    state = {"folded": [], "counts": {}, "pending": {}}
    kept = not rebuild and lake.exists(REALIZED_STATE)
    if kept:
        state = json.loads(lake.read_bytes(REALIZED_STATE))
    else:
        claims = None  # the full computation: the whole table, whatever the claims say
    done = set(state["folded"])
    new = [i for i in _feedback_files(lake) if f"{i.key}\0{i.version}" not in done]
    if kept and not new and not state["pending"]:
        return state["counts"]
    labels = {**state["pending"], **_labels_of(lake, new)}
    matched: set[str] = set()
    for version, (n, right) in _hits(lake, labels, matched, claims).items():
        total = state["counts"].setdefault(version, [0, 0])
        total[0] += n
        total[1] += right
    state["pending"] = {i: lab for i, lab in labels.items() if i not in matched}
    state["folded"] = sorted(done | {f"{i.key}\0{i.version}" for i in new})
    lake.write_bytes(REALIZED_STATE, json.dumps(state, sort_keys=True).encode())
    return state["counts"]


def realized_accuracy(rt: Runtime) -> list[dict]:
    """Accuracy of each model version on images whose labels arrived after they were scored.

    Incremental (``fold_realized``): only the late labels in ``feedback/labels/`` that
    arrived since the last run are joined with the predictions table. The result replaces
    the ``monitoring/realized_accuracy`` table and is logged to MLflow. A label counts once,
    when folded: a partition rescored later does not change the figure already counted.
    """
    import mlflow
    import pyarrow as pa

    from mlcore.claims import open_claims
    from mlcore.predictions import overwrite_rows

    settings, lake = rt.settings, rt.lake
    counts = fold_realized(lake, claims=open_claims(settings))
    rows = [{"model_version": v, "labeled_predictions": n, "realized_accuracy": right / n}
            for v, (n, right) in sorted(counts.items()) if n]
    if rows:
        overwrite_rows(lake, REALIZED_ACCURACY_TABLE, pa.Table.from_pylist(rows))
        rt.mlflow(f"{settings.mlflow_experiment}-monitoring")
        with mlflow.start_run(run_name="realized accuracy"):
            for r in rows:
                mlflow.log_metric(f"realized_accuracy_v{r['model_version']}", r["realized_accuracy"])
                mlflow.log_metric(f"labeled_predictions_v{r['model_version']}",
                                  r["labeled_predictions"])
    return rows


def drift_figure(report: DriftReport, *, classes: tuple[str, ...]):
    """Scored vs holdout distributions, side by side, for people to look at."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    panels = [
        ("predicted class", "class_counts", list(classes), f"PSI {report.class_psi:.3f}"),
        ("confidence", "confidence_counts", [f"{b:.1f}" for b in CONFIDENCE_BINS[:-1]],
         f"JS {report.confidence_js:.3f}"),
        ("mean intensity", "intensity_counts", [f"{int(b)}" for b in INTENSITY_BINS[:-1]],
         f"PSI {report.intensity_psi:.3f}"),
    ]
    for ax, (title, field, labels, score) in zip(axes, panels, strict=True):
        x = np.arange(len(labels))
        ax.bar(x - 0.2, _share(np.array(getattr(report.baseline, field))), 0.4, label="holdout")
        ax.bar(x + 0.2, _share(np.array(getattr(report.scored, field))), 0.4, label="scored")
        ax.set_xticks(x, labels, rotation=60, fontsize=7)
        ax.set_title(f"{title} ({score})")
    axes[0].legend()
    fig.tight_layout()
    return fig
