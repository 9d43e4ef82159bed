"""The model card: one Markdown page per version, written when the gate decides.

It gathers what a reviewer needs in one place: the training data (shards, content hash),
the code version, the parameters, int8 and fp32 accuracy overall and per class, the
confusion matrix of the served model, calibration, the gate decision with its reasons,
and known limitations. It is logged to the version's run as ``model_card.md`` and read
back by ``mlcore model show VERSION``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcore.registry import configure_mlflow, evaluation_record
from mlcore.task import task_of

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlcore.promotion import GateDecision
    from mlcore.settings import Settings
    from mlcore.storage import Lake

CARD = "model_card.md"

LIMITATIONS = [
    "Trained and judged on Fashion-MNIST-like images: 28x28 grayscale, one centred article "
    "on a dark background. Photos, colour images or several items per image are out of "
    "distribution; the drift monitor flags such nights, the model does not refuse them.",
    "The holdout is the Fashion-MNIST test split: accuracy on curated production images "
    "is only known from late labels (`realized_accuracy`).",
    "Confidence is calibrated on a validation split of the training data: it holds for "
    "inputs like the training data, not under drift.",
    "Served as an int8 graph: its answers differ from the fp32 model's on the share of "
    "images given by the agreement figure below.",
]


def render(name: str, version: str, run, *, lineage: dict, record: dict | None,
           decision: GateDecision, profile: dict | None = None,
           classes: tuple[str, ...]) -> str:
    """The card as Markdown, from the run's params, metrics, tags and artifacts; ``classes``
    are the task's, in label order."""
    CLASSES = classes  # noqa: N806
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    lines = [f"# Model card: {name} version {version}", "",
             f"**Gate decision: {'promoted' if decision.promote else 'rejected'}**", ""]
    lines += [f"- {r}" for r in decision.reasons]
    lines += ["", "## Training data", "",
              f"- base Fashion-MNIST train images: {lineage.get('base_train_images', '?')}",
              f"- curated labeled images: {lineage.get('curated_labeled_images', '?')} from "
              f"{len(lineage.get('curated_shards', []))} shards"
              f" (dropped as holdout duplicates: {lineage.get('curated_dropped_holdout', 0)})",
              f"- validation split (temperature fit): {lineage.get('validation_images', 0)} "
              "images carved from the training data",
              f"- training data hash: `{lineage.get('train_data_hash', '?')}`",
              f"- holdout hash: `{lineage.get('holdout_hash', '?')}` "
              f"({lineage.get('holdout_images', '?')} images evaluated)"]
    lines += [f"  - shard `{s}`" for s in lineage.get("curated_shards", [])]
    if profile:
        q = profile.get("intensity_mean_quantiles", {})
        lines += [f"- profile (`data_profile.json`): {profile['images']} images "
                  f"{profile['image']['width']}x{profile['image']['height']} "
                  f"{profile['image']['mode']}; mean intensity {profile['intensity_mean']:.2f} "
                  f"(per-image p05-p95 {q.get('p05', 0):.1f}-{q.get('p95', 0):.1f}); "
                  f"per-class counts {profile['class_counts']}; normalization "
                  f"{profile['normalization']}; drift baseline on the holdout "
                  f"{'recorded' if profile.get('drift_baseline') else 'missing'}"]
    lines += ["", "## Code and parameters", "",
              f"- code version: `{t.get('code_version', '?')}`",
              f"- MLflow run: `{run.info.run_id}` (Airflow run `{t.get('airflow_dag_run_id', '?')}`)",
              f"- served graph (int8 ONNX) sha256: `{t.get('onnx_sha256', '?')}`",
              f"- fp32 ONNX sha256: `{t.get('onnx_fp32_sha256', '?')}`",
              f"- torch weights (safetensors) sha256: `{t.get('weights_sha256', '?')}`", ""]
    lines += ["| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(p.items())]
    lines += ["", "## Holdout accuracy", "",
              f"Overall: int8 (served) **{_f(m.get('holdout_accuracy'))}**, fp32 "
              f"{_f(m.get('fp32_holdout_accuracy'))}; macro F1 int8 "
              f"{_f(m.get('holdout_macro_f1'))}, fp32 {_f(m.get('fp32_holdout_macro_f1'))}; "
              f"int8/fp32 argmax agreement {_f(m.get('int8_fp32_agreement'))}.", "",
              "| class | int8 | fp32 |", "|---|---|---|"]
    lines += [f"| {i} {c} | {_f(m.get(f'class_{i}_accuracy'))} | "
              f"{_f(m.get(f'fp32_class_{i}_accuracy'))} |" for i, c in enumerate(CLASSES)]
    if record:
        lines += ["", "## Confusion matrix (int8, rows = true class, columns = predicted)", "",
                  "| true \\ predicted | " + " | ".join(str(i) for i in range(len(CLASSES))) + " |",
                  "|---" * (len(CLASSES) + 1) + "|"]
        lines += [f"| {i} {CLASSES[i]} | " + " | ".join(str(v) for v in row) + " |"
                  for i, row in enumerate(record["int8_confusion"])]
    lines += ["", "## Calibration", "",
              f"Temperature {_f(m.get('temperature'))}, fitted on the validation split. "
              "Expected calibration error (15 bins):", "",
              "| | uncalibrated | temperature-scaled |", "|---|---|---|",
              f"| validation (fp32) | {_f(m.get('validation_ece_uncalibrated'))} | "
              f"{_f(m.get('validation_ece'))} |",
              f"| holdout (int8, served) | {_f(m.get('holdout_ece_uncalibrated'))} | "
              f"{_f(m.get('holdout_ece'))} |", "",
              "Reliability diagram: run artifact `plots/reliability.png`.",
              "", "## Known limitations", ""]
    lines += [f"- {x}" for x in LIMITATIONS]
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_card(settings: Settings, mlc: MlflowClient, version: str, *,
               decision: GateDecision) -> str:
    """Render the card of ``version`` and log it to its run (replacing an older one)."""
    import json

    from mlflow.exceptions import MlflowException

    from mlcore.data_profile import PROFILE

    mv = mlc.get_model_version(settings.model_name, version)
    run = mlc.get_run(mv.run_id)
    with open(mlc.download_artifacts(mv.run_id, "lineage.json")) as fh:
        lineage = json.load(fh)
    try:
        with open(mlc.download_artifacts(mv.run_id, PROFILE)) as fh:
            profile = json.load(fh)
    except (MlflowException, OSError):
        profile = None  # a version registered before data profiles
    text = render(settings.model_name, str(version), run, lineage=lineage,
                  record=evaluation_record(mlc, mv.run_id), decision=decision, profile=profile,
                  classes=task_of(settings).classes)
    mlc.log_text(mv.run_id, text, CARD)
    return text


def read_card(settings: Settings, lake: Lake, version: str) -> str:
    """The card logged for ``version`` (written when the gate decided)."""
    from mlflow.exceptions import MlflowException

    mlc = configure_mlflow(settings, lake)
    mv = mlc.get_model_version(settings.model_name, version)
    try:
        with open(mlc.download_artifacts(mv.run_id, CARD)) as fh:
            return fh.read()
    except (MlflowException, OSError) as exc:
        raise LookupError(f"version {version} has no model card yet (the gate has not "
                          "decided on it)") from exc
