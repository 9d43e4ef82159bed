"""Training and holdout evaluation: deterministic given the seed, data and thread count."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlcore.calibration import expected_calibration_error, fit_temperature, softmax
from mlcore.data import array_hash, labeled_curated, list_shards, load_fashion_mnist, pixel_sha256
from mlcore.layout import CURATED_HOLDOUT
from mlcore.model import (
    FashionCNN,
    as_channels_first,
    logits,
    pixel_normalization,
    predict_proba,
)
from mlcore.task import task_of

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake
    from mlcore.task import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    images: np.ndarray
    labels: np.ndarray
    holdout_images: np.ndarray
    holdout_labels: np.ndarray
    lineage: dict = field(default_factory=dict)
    # Carved from the training data (never the holdout): fits the temperature.
    validation_images: np.ndarray | None = None  # None: no validation split
    validation_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    # (mean, std) on the 0-1 scale the model applies: the base data profile's, or, for a
    # task without base data, its own training images' (mlcore.data_profile.normalization_of).
    normalization: tuple[float, float] = field(default_factory=pixel_normalization)

    def __post_init__(self) -> None:
        if self.validation_images is None:  # empty, in the training images' shape
            self.validation_images = np.zeros((0, *self.images.shape[1:]), np.uint8)


class NoHoldout(RuntimeError):
    """The task's holdout is labeled batches, and none has been ingested yet."""


class NoTrainingData(RuntimeError):
    """A task without base data has no labeled curated images to train on yet."""


@dataclass
class Evaluation:
    accuracy: float
    macro_f1: float
    per_class_accuracy: list[float]
    confusion: np.ndarray

    def metrics(self, prefix: str = "") -> dict[str, float]:
        out = {"holdout_accuracy": self.accuracy, "holdout_macro_f1": self.macro_f1}
        out |= {f"class_{i}_accuracy": a for i, a in enumerate(self.per_class_accuracy)}
        return {f"{prefix}{k}": v for k, v in out.items()}

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> Evaluation:
        """Accuracy, macro F1, per-class accuracy (recall) and confusion of predicted classes."""
        k = num_classes
        confusion = np.bincount(labels.astype(np.int64) * k + predicted.astype(np.int64),
                                minlength=k * k).reshape(k, k)
        support = confusion.sum(axis=1)
        predicted_n = confusion.sum(axis=0)
        tp = np.diag(confusion).astype(np.float64)
        recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
        precision = np.divide(tp, predicted_n, out=np.zeros(k), where=predicted_n > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k),
                       where=(precision + recall) > 0)
        return cls(accuracy=float(tp.sum() / max(len(labels), 1)), macro_f1=float(f1.mean()),
                   per_class_accuracy=[float(r) for r in recall], confusion=confusion)


@dataclass
class TrainResult:
    model: FashionCNN
    evaluation: Evaluation
    history: list[dict]
    seconds: float
    lineage: dict
    temperature: float = 1.0  # fitted on the validation split; the served graph applies it
    validation: dict = field(default_factory=dict)  # ECE on the validation split, before/after


def _subset(images: np.ndarray, labels: np.ndarray, n: int, seed: int):
    if not n or n >= len(images):
        return images, labels
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return images[idx], labels[idx]


def _load_base(settings: Settings, task: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    """The base training data: a seeded ``train_subset`` of the Fashion-MNIST train split,
    or nothing (``base_data = "none"``)."""
    if task.base_data == "none":
        return np.zeros((0, *task.shape), np.uint8), np.zeros(0, np.uint8)
    return _subset(*load_fashion_mnist(settings.fmnist_dir, "train"), settings.train_subset,
                   settings.seed)


@dataclass
class Holdout:
    images: np.ndarray  # evaluated: a seeded ``holdout_subset`` of the whole holdout
    labels: np.ndarray
    pixel_ids: set[str]  # pixel sha256 of every holdout image: never trained on
    lineage: dict


def load_holdout(settings: Settings, lake: Lake, task: TaskSpec) -> Holdout:
    """The frozen holdout: the Fashion-MNIST test split, or every labeled image of the
    batches marked holdout (``curated/holdout``). Raises :class:`NoHoldout` when the task
    takes its holdout from batches and none has arrived."""
    if task.holdout == "batches":
        shards = list_shards(lake, CURATED_HOLDOUT)
        full_x, full_y, used = labeled_curated(lake, shards, task=task) if shards else (
            np.zeros((0, *task.shape), np.uint8), np.zeros(0, np.uint8), [])
        if not len(full_x):
            raise NoHoldout(
                f"task {task.name}: its holdout is labeled batches marked holdout, and none has "
                f"been ingested yet. Upload a labeled batch with batch.json "
                f'{{"holdout": true}} (docs/tasks.md), then retrain.')
        source = {"holdout_shards": used}
    else:
        full_x, full_y = load_fashion_mnist(settings.fmnist_dir, "test")
        source = {}
    hold_x, hold_y = _subset(full_x, full_y, settings.holdout_subset, settings.seed)
    lineage = {"holdout_hash": array_hash(full_x, full_y), "holdout_images": int(len(hold_x)),
               **source}
    return Holdout(hold_x, hold_y, set(pixel_sha256(full_x)), lineage)


def _training_normalization(task: TaskSpec, images: np.ndarray) -> tuple[float, float]:
    """The base data's normalization, or this training set's own profile statistics."""
    if task.base_data != "none":
        return pixel_normalization()
    from mlcore.data_profile import normalization_of

    norm = normalization_of(images)
    return norm["pixel_mean"], norm["pixel_std"]


def build_training_data(settings: Settings, lake: Lake, shards: list[str] | None = None
                        ) -> TrainingData:
    """Base training data + curated labeled images (from ``shards``, default all), minus
    anything that is in the holdout; ``validation_fraction`` of it (seeded) is set aside to
    fit the temperature."""
    task = task_of(settings)
    holdout = load_holdout(settings, lake, task)
    base_x, base_y = _load_base(settings, task)
    cur_x, cur_y, shards = labeled_curated(lake, shards, task=task)
    keep = np.array([h not in holdout.pixel_ids for h in pixel_sha256(cur_x)], dtype=bool)
    if (~keep).any():
        log.warning("dropped %d curated images that are in the frozen holdout", int((~keep).sum()))
    cur_x, cur_y = cur_x[keep], cur_y[keep]
    if not len(base_x) and not len(cur_x):
        raise NoTrainingData(f"task {task.name} has no base data and no labeled curated "
                             "images yet: upload labeled batches first")
    lineage = {
        "base_train_images": int(len(base_x)),
        "curated_labeled_images": int(len(cur_x)),
        "curated_dropped_holdout": int((~keep).sum()),
        "curated_shards": shards,
        "train_data_hash": array_hash(base_x, base_y, cur_x, cur_y),
        **holdout.lineage,
    }
    x, y = np.concatenate([base_x, cur_x]), np.concatenate([base_y, cur_y])
    n_val = int(round(len(x) * settings.validation_fraction))
    is_val = np.zeros(len(x), bool)
    is_val[np.random.default_rng(settings.seed + 1).permutation(len(x))[:n_val]] = True
    lineage["validation_images"] = n_val
    normalization = _training_normalization(task, x[~is_val])
    lineage["normalization"] = {"pixel_mean": normalization[0], "pixel_std": normalization[1]}
    return TrainingData(x[~is_val], y[~is_val], holdout.images, holdout.labels, lineage,
                        x[is_val], y[is_val], normalization)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    probs = predict_proba(model, images)
    return Evaluation.of(probs.argmax(axis=1), labels, num_classes=probs.shape[1])


def calibrate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The temperature fitted on a validation split, and its ECE before and after."""
    scores = logits(model, images)
    labels = labels.astype(np.int64)
    temperature = fit_temperature(scores, labels)
    return temperature, {
        "validation_ece_uncalibrated": expected_calibration_error(softmax(scores), labels),
        "validation_ece": expected_calibration_error(softmax(scores, temperature), labels),
    }


def augment(images: torch.Tensor, generator: torch.Generator, *, max_shift: int,
            brightness: float, mirror: bool) -> torch.Tensor:
    """A training batch, uint8 (N, C, H, W) -> float (N, C, H, W) on the 0-1 scale, each image
    independently scaled in brightness by a factor in 1 ± ``brightness`` (clipped to 1),
    mirrored left-right with probability 1/2 when ``mirror``, and moved by 0 to ``max_shift``
    pixels each way (the uncovered border black).

    Every draw comes from ``generator``, so a seeded generator gives the same batches on every
    run. One gather per batch, no loop over images: a few percent of a training step.
    """
    n, _, height, width = images.shape
    # Every draw is made whatever is switched off, so one seed gives one geometry per image.
    scale = 1 + brightness * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    flip = mirror & (torch.rand(n, generator=generator) < 0.5)
    shift = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)
    x = images.to(torch.float32).div_(255.0)
    if brightness:
        x = x.mul_(scale).clamp_(max=1.0)
    rows = torch.arange(height).expand(n, height)
    cols = torch.arange(width).expand(n, width)
    cols = torch.where(flip[:, None], width - 1 - cols, cols)
    if max_shift:
        x = torch.nn.functional.pad(x, (max_shift,) * 4)
        rows, cols = rows + shift[0], cols + shift[1]
    # Advanced indices around the channel slice put batch, row and column first: (N, H, W, C),
    # which permuted back is NCHW in channels-last memory, as the model runs.
    picked = x[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)


def train(settings: Settings, data: TrainingData, progress=None, *,
          widths: tuple[int, int, int] | None = None, hidden: int | None = None
          ) -> TrainResult:
    """Train a fresh :class:`FashionCNN` with one-cycle AdamW on augmented batches
    (:func:`augment`: shift and brightness from the settings, mirror if the task allows it)
    and label smoothing; ``progress(epoch, metrics)`` per epoch. ``widths``, ``hidden``: the
    model's block channels and head when not the task's (reproducing an older version).

    Deterministic given the seed, data and thread count: initialization, order and
    augmentation draw from generators seeded by ``settings.seed``, and torch runs its
    deterministic kernels. The per-epoch curve is measured on the validation split (when
    there is one); the holdout is evaluated once, on the final model, and chooses nothing.
    """
    torch.manual_seed(settings.seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN, to make a kernel that reads
    # uninitialized memory fail loudly. None here does (the weights come out bitwise the
    # same without it), and the fills were ~5% of a training step.
    torch.utils.deterministic.fill_uninitialized_memory = False
    task = task_of(settings)
    model = FashionCNN(task, normalization=data.normalization, widths=widths, hidden=hidden)
    mean, std = data.normalization
    x_all = as_channels_first(data.images)  # uint8: a quarter of a float copy's memory
    y_all = torch.from_numpy(data.labels.astype(np.int64))
    steps_per_epoch = -(-len(x_all) // settings.train_batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=steps_per_epoch * settings.train_epochs
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    generator = torch.Generator().manual_seed(settings.seed)
    bf16 = settings.train_precision == "bf16"
    history: list[dict] = []
    started = time.perf_counter()
    for epoch in range(1, settings.train_epochs + 1):
        model.train()
        order = torch.randperm(len(x_all), generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), settings.train_batch_size):
            idx = order[start : start + settings.train_batch_size]
            xb = augment(x_all[idx], generator, max_shift=settings.augment_shift_pixels,
                         brightness=settings.augment_brightness, mirror=task.augment_mirror)
            xb, yb = xb.sub_(mean).div_(std), y_all[idx]
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb).float()
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        row = {
            "epoch": epoch,
            "train_loss": total_loss / len(order),
            "train_accuracy": correct / len(order),
        }
        if len(data.validation_labels):  # the curve on held-out training data, not the holdout
            row["validation_accuracy"] = evaluate(model, data.validation_images,
                                                  data.validation_labels).accuracy
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        log.info("epoch %d/%d: %s", epoch, settings.train_epochs, row)
        if progress:
            progress(epoch, row)
    final = evaluate(model, data.holdout_images, data.holdout_labels)
    temperature, validation = calibrate(model, data.validation_images, data.validation_labels)
    log.info("temperature %.4f fitted on %d validation images: %s", temperature,
             len(data.validation_labels), validation)
    return TrainResult(model, final, history, time.perf_counter() - started, data.lineage,
                       temperature, validation)
