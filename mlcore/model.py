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
    """(mean, std) on the 0-1 scale of the base data profile
    (``expectations/base_data_profile.json``): what a model of a task with base data applies
    (and every model registered before the normalization was stored with its weights)."""
    from mlcore.data_profile import base_profile

    norm = base_profile().normalization
    return float(norm["pixel_mean"]), float(norm["pixel_std"])


def default_normalization(task: TaskSpec) -> tuple[float, float]:
    """The normalization of a model not trained yet: the base data's, or none (0, 1) for a
    task without base data, whose training sets it from its own data profile."""
    return pixel_normalization() if task.base_data != "none" else (0.0, 1.0)


def normalization_of_model(model: nn.Module) -> tuple[float, float]:
    """The (mean, std) ``model`` applies to its inputs (stored with its weights)."""
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if mean is None or std is None:
        return pixel_normalization()
    return float(mean), float(std)


class WeightsTampered(ArtifactTampered):
    """The weights file does not match the checksum recorded on the model version."""


# The three blocks' convolutions, each (out channels, in channels, 3, 3).
CONV_WEIGHTS = ("features.0.0.weight", "features.2.0.weight", "features.4.0.weight")


# The head's last linear layer when it has a hidden layer (else its only one is head.2).
HIDDEN_HEAD_OUTPUT = "head.5.weight"


def widths_of(state: dict) -> tuple[int, int, int]:
    """The block channels a set of weights was trained with (read from its convolutions)."""
    return tuple(int(state[name].shape[0]) for name in CONV_WEIGHTS)


def hidden_of(state: dict) -> int:
    """The units of the head's hidden layer a set of weights has (0: a linear head)."""
    return int(state["head.2.weight"].shape[0]) if HIDDEN_HEAD_OUTPUT in state else 0


class FashionCNN(nn.Module):
    """A small VGG-style CNN built for a task's channels, image size and class count (default:
    the deployment's task): three conv blocks, then a head on the (H/8)x(W/8) grid (3x3 for
    28x28, keeping where things are: a sleeve vs a collar), linear or with one hidden layer
    (the task's ``model_hidden``: capacity at almost no cost, 1.2 M multiply-adds at 512).

    Sized for CPU: multiply-adds per image grow with the square of the width; for
    Fashion-MNIST at its task widths (32, 128, 256) about 23 M, so an epoch of 57,000 images
    trains in about 20 s on two cores with bf16 autocast. The first block is the narrow one:
    it works on the full-size image, where batch norm, ReLU and pooling cost the most.
    """

    def __init__(self, task: TaskSpec | None = None, dropout: float = 0.2,
                 normalization: tuple[float, float] | None = None,
                 widths: tuple[int, int, int] | None = None, hidden: int | None = None):
        super().__init__()
        if task is None:
            from mlcore.task import default_task

            task = default_task()
        mean, std = normalization or default_normalization(task)
        # Buffers, so the normalization travels in the safetensors weights with the model.
        # float64: the exact profile values (float32 would round them).
        self.register_buffer("pixel_mean", torch.tensor(float(mean), dtype=torch.float64))
        self.register_buffer("pixel_std", torch.tensor(float(std), dtype=torch.float64))
        # ``widths``, ``hidden``: the blocks' channels and the head's hidden units when not
        # the task's (weights trained before the task spec changed).
        (first, second, third), num_classes = widths or task.model_widths, task.num_classes
        hidden = task.model_hidden if hidden is None else hidden
        grid = (task.height // 8) * (task.width // 8)
        self.input_shape = task.shape  # one uint8 image: (H, W) or (H, W, 3); export traces it

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(task.channels, first),
            nn.MaxPool2d(2),  # 28 -> 14
            block(first, second),
            nn.MaxPool2d(2),  # 14 -> 7
            block(second, third),
            nn.MaxPool2d(2),  # 7 -> 3
        )
        head = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden:  # head.2, then the class scores at head.5 (HIDDEN_HEAD_OUTPUT)
            head += [nn.Linear(third * grid, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.head = nn.Sequential(*head, nn.Linear(hidden or third * grid, num_classes))
        # NHWC makes oneDNN's CPU convolutions markedly faster than the default NCHW.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


def as_channels_first(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> a uint8 tensor viewed as (N, C, H, W)."""
    # Arrays read straight from Parquet buffers are read-only; torch wants writable memory.
    arr = images if images.flags.writeable else images.copy()
    x = torch.from_numpy(np.ascontiguousarray(arr))
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def to_input(images: np.ndarray, normalization: tuple[float, float] | None = None
             ) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> float tensor (N, C, H, W) normalized by
    ``normalization`` (a model's: :func:`normalization_of_model`; default the base data's)."""
    mean, std = normalization or pixel_normalization()
    return as_channels_first(images).to(torch.float32).div_(255.0).sub_(mean).div_(std)


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
        fast = fx_opt.optimize_for_inference(model.eval())  # works on a deep copy
    # The traced graph keeps only what forward uses: carry the normalization over.
    mean, std = normalization_of_model(model)
    fast.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float64))
    fast.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float64))
    return fast


@torch.inference_mode()
def logits(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Raw class scores (N, classes) float32 for uint8 images, in batches to bound memory."""
    model.eval()
    norm = normalization_of_model(model)
    out = [model(to_input(images[i : i + batch_size], norm)).numpy()
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
    state = load(data)
    # The weights' task (default: the deployment's default task), at the widths and head the
    # weights were trained with: a task spec's model may have changed since.
    model = FashionCNN(task, widths=widths_of(state), hidden=hidden_of(state))
    # Weights saved before the normalization was a buffer lack it: they were trained with
    # the base data's, which is what the fresh model holds.
    legacy = {"pixel_mean", "pixel_std"} - set(state)
    model.load_state_dict({**{k: v for k, v in model.state_dict().items() if k in legacy},
                           **state})
    model.eval()
    return model
