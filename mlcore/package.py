"""The model package a training run registers: the model as it is served, and the evidence.

``build_package`` exports the trained model to ONNX with the fitted temperature inside,
quantizes it to int8 on training images, and evaluates both graphs on the holdout through
ONNX Runtime: the figures the gate judges are those of the int8 graph that scoring runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlcore.calibration import Reliability, reliability
from mlcore.data import array_hash
from mlcore.data_profile import DataProfile, profile_images
from mlcore.serving import ServedModel, sha256_hex
from mlcore.task import task_of
from mlcore.train import Evaluation

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.train import TrainingData, TrainResult


@dataclass
class ModelPackage:
    fp32_onnx: bytes
    int8_onnx: bytes
    temperature: float
    int8: Evaluation  # the served graph on the holdout: what the gate judges
    fp32: Evaluation  # the trained fp32 model on the holdout (its ONNX graph matches it)
    agreement: float  # share of holdout images where int8 and fp32 predict the same class
    holdout_labels: np.ndarray
    int8_predicted: np.ndarray
    fp32_predicted: np.ndarray
    holdout_hash: str  # the evaluated holdout images and labels, in order: pairs runs
    reliability_before: Reliability  # served int8 graph without / with the temperature
    reliability_after: Reliability
    calibration_images: int
    data_profile: DataProfile | None = None  # the training data, and the drift baseline

    @property
    def int8_sha256(self) -> str:
        return sha256_hex(self.int8_onnx)

    @property
    def fp32_sha256(self) -> str:
        return sha256_hex(self.fp32_onnx)

    def metrics(self) -> dict[str, float]:
        """What the run logs: unprefixed figures are the served int8 model's."""
        return {**self.int8.metrics(), **self.fp32.metrics("fp32_"),
                "int8_fp32_agreement": self.agreement, "temperature": self.temperature,
                "holdout_ece_uncalibrated": self.reliability_before.ece,
                "holdout_ece": self.reliability_after.ece}

    def evaluation_record(self) -> dict:
        """The per-image evidence (``evaluation.json``): the paired test and the card use it."""
        return {
            "holdout_hash": self.holdout_hash,
            "labels": self.holdout_labels.astype(int).tolist(),
            "int8_predicted": self.int8_predicted.astype(int).tolist(),
            "fp32_predicted": self.fp32_predicted.astype(int).tolist(),
            "int8_confusion": self.int8.confusion.astype(int).tolist(),
            "fp32_confusion": self.fp32.confusion.astype(int).tolist(),
            "agreement": self.agreement,
            "temperature": self.temperature,
            "reliability_uncalibrated": self.reliability_before.as_dict(),
            "reliability": self.reliability_after.as_dict(),
            "calibration_images": self.calibration_images,
        }


def calibration_sample(settings: Settings, images: np.ndarray) -> np.ndarray:
    """A seeded sample of training images for the quantizer: never holdout images."""
    n = min(settings.quantize_calibration_images, len(images))
    idx = np.sort(np.random.default_rng(settings.seed + 2).permutation(len(images))[:n])
    return images[idx]


def untempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling: softmax(T * log p) = softmax(z), since
    log p = z / T - const. For the served graph's ECE before calibration."""
    from mlcore.calibration import softmax

    return softmax(temperature * np.log(np.maximum(probs.astype(np.float64), 1e-300)))


def build_package(settings: Settings, result: TrainResult, data: TrainingData) -> ModelPackage:
    from mlcore.export import quantize_int8, to_onnx
    from mlcore.model import normalization_of_model, predict_proba
    from mlcore.monitor import Profile, image_means

    calibration = calibration_sample(settings, data.images)
    fp32 = to_onnx(result.model, result.temperature)
    int8 = quantize_int8(fp32, calibration)
    labels = data.holdout_labels.astype(np.int64)
    batch = settings.score_batch_size
    fp32_probs = predict_proba(result.model, data.holdout_images)  # = result.evaluation's
    int8_probs = ServedModel(int8, sha256_hex(int8)).predict_proba(data.holdout_images, batch)
    raw_probs = untempered(int8_probs, result.temperature)
    fp32_pred, int8_pred = fp32_probs.argmax(axis=1), int8_probs.argmax(axis=1)
    mean, std = normalization_of_model(result.model)
    profile = profile_images(data.images, data.labels, {"pixel_mean": mean, "pixel_std": std},
                             source="training data of this version",
                             num_classes=task_of(settings).num_classes)
    # What the monitor compares a night with: this served model on the holdout.
    profile.drift_baseline = asdict(Profile.of(int8_probs, image_means(data.holdout_images)))
    return ModelPackage(
        fp32_onnx=fp32, int8_onnx=int8, temperature=result.temperature,
        int8=Evaluation.of(int8_pred, labels, num_classes=int8_probs.shape[1]),
        fp32=Evaluation.of(fp32_pred, labels, num_classes=fp32_probs.shape[1]),
        agreement=float((fp32_pred == int8_pred).mean()) if len(labels) else 1.0,
        holdout_labels=labels, int8_predicted=int8_pred, fp32_predicted=fp32_pred,
        holdout_hash=array_hash(data.holdout_images, data.holdout_labels),
        reliability_before=reliability(raw_probs, labels),
        reliability_after=reliability(int8_probs, labels),
        calibration_images=len(calibration), data_profile=profile,
    )
