"""The classifier and its safe (de)serialization.

Weights travel only as safetensors (a flat tensor container: no code inside), are
loaded into our own :class:`FashionCNN`, and their sha256 is checked against the value
recorded when the model was registered. Nothing here ever unpickles.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlcore.serving import ArtifactTampered, sha256_hex

if TYPE_CHECKING:
    from mlcore.task import TaskSpec


@lru_cache(maxsize=1)
def pixel_normalization() -> tuple[float, float]:
    """(mean, std) on the 0-1 scale applied to every input (train, holdout, scoring): the
    base data profile's statistics (``expectations/base_data_profile.json``), not constants."""
    from mlcore.data_profile import base_profile

    norm = base_profile().normalization
    return float(norm["pixel_mean"]), float(norm["pixel_std"])


def __getattr__(name: str) -> float:
    # PIXEL_MEAN / PIXEL_STD: the names the export and package code import, from the profile.
    if name in ("PIXEL_MEAN", "PIXEL_STD"):
        return pixel_normalization()[name == "PIXEL_STD"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class WeightsTampered(ArtifactTampered):
    """The weights file does not match the checksum recorded on the model version."""


class FashionCNN(nn.Module):
    """A small VGG-style CNN built for a task's channels, image size and class count (default:
    the deployment's task): three conv blocks, then a linear head on the (H/8)x(W/8) grid
    (3x3 for 28x28, keeping where things are: a sleeve vs a collar).

    Sized for CPU: for Fashion-MNIST about 7.5 M multiply-adds per image, so an epoch of
    60,000 images trains in under a minute on two cores.
    """

    def __init__(self, task: TaskSpec | None = None, dropout: float = 0.2):
        super().__init__()
        if task is None:
            from mlcore.task import default_task

            task = default_task()
        width, num_classes = task.model_width, task.num_classes
        grid = (task.height // 8) * (task.width // 8)
        self.input_shape = task.shape  # one uint8 image: (H, W) or (H, W, 3); export traces it

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(task.channels, width),
            nn.MaxPool2d(2),  # 28 -> 14
            block(width, 2 * width),
            nn.MaxPool2d(2),  # 14 -> 7
            block(2 * width, 4 * width),
            nn.MaxPool2d(2),  # 7 -> 3
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width * grid, num_classes)
        )
        # NHWC makes oneDNN's CPU convolutions markedly faster than the default NCHW.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


def to_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> normalized float tensor (N, C, H, W)."""
    # Arrays read straight from Parquet buffers are read-only; torch wants writable memory.
    arr = images if images.flags.writeable else images.copy()
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).div_(255.0)
    mean, std = pixel_normalization()
    x = x.sub_(mean).div_(std)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` rewritten for CPU scoring with ``torch.fx``.

    Each BatchNorm is folded into its convolution, Dropout is removed, and the convolutions
    run on oneDNN tensors with weights packed once instead of on every call: about 2x the
    eager forward pass at scoring batch sizes. Outputs equal the eager model's within float
    rounding (``tests/unit/test_model.py``); any batch size works. ``model`` is left as it
    was.
    """
    import torch.fx.experimental.optimization as fx_opt

    with warnings.catch_warnings():
        # oneDNN's module wrappers still use torch.jit.script_method internally.
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated",
                                FutureWarning)
        return fx_opt.optimize_for_inference(model.eval())  # works on a deep copy


@torch.inference_mode()
def logits(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Raw class scores (N, classes) float32 for uint8 images, in batches to bound memory."""
    model.eval()
    out = [model(to_input(images[i : i + batch_size])).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, _num_classes(model)), np.float32)


@torch.inference_mode()
def predict_proba(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (N, classes) float32 for uint8 images (uncalibrated: the served model,
    :class:`mlcore.serving.ServedModel`, applies the fitted temperature)."""
    return torch.softmax(torch.from_numpy(logits(model, images, batch_size)), dim=1).numpy()


def _num_classes(model: nn.Module) -> int:
    # An fx-optimized copy (for_inference) has no ``head`` attribute path; its task's does.
    head = getattr(model, "head", None)
    if head is not None:
        return head[-1].out_features
    from mlcore.task import default_task

    return default_task().num_classes


def weights_bytes(model: nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def load_weights(data: bytes, expected_sha256: str, task: TaskSpec | None = None) -> FashionCNN:
    """Rebuild the model from safetensors bytes, refusing anything whose checksum differs."""
    from safetensors.torch import load

    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise WeightsTampered(
            f"weights checksum {actual[:12]}... does not match the registered "
            f"{expected_sha256[:12]}...; refusing to load"
        )
    model = FashionCNN(task)  # the weights' task (default: the deployment's default task)
    model.load_state_dict(load(data))
    model.eval()
    return model
