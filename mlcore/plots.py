"""The figures logged with a training run (matplotlib, headless): confusion matrix,
training curves, reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlcore.calibration import Reliability


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # no display in a task or a test
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def confusion_figure(confusion: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts of true (rows) against predicted (columns) class."""
    fig = _figure(7, 6)
    ax = fig.subplots()
    im = ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > confusion.max() / 2 else "black")
    fig.colorbar(im)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict]) -> Figure:
    """Train loss and train/validation accuracy per epoch (validation: when there was a split)."""
    fig = _figure(9, 3.5)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set_title("train loss")
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train")
    validated = [h for h in history if "validation_accuracy" in h]
    if validated:
        acc_ax.plot([h["epoch"] for h in validated], [h["validation_accuracy"] for h in validated],
                    marker="o", label="validation")
    acc_ax.set_title("accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def reliability_figure(before: Reliability, after: Reliability, title: str = "holdout"
                       ) -> Figure:
    """Confidence vs accuracy per bin, before and after temperature scaling."""
    fig = _figure(5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for rel, name in ((before, "uncalibrated"), (after, "temperature-scaled")):
        keep = [i for i, c in enumerate(rel.counts) if c > 0]
        ax.plot([rel.confidence[i] for i in keep], [rel.accuracy[i] for i in keep], marker="o",
                label=f"{name} (ECE {rel.ece:.4f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability on the {title}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
