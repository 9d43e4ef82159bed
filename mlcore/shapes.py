"""The ``shapes`` reference task's images, made procedurally: seeded, numpy only, fast.

Each image is one filled shape (circle, square, triangle, cross, star) of random size,
rotation, position and colour on a random background with a brightness gradient and
Gaussian noise. Given the seed, the images and labels are the same on every machine;
classes are balanced (counts differ by at most one). Thousands of images a second: masks
are computed for a whole class at once on a coordinate grid.

:func:`write_landing_batches` writes them as a user would upload them (PNG files,
``labels.csv`` by class name, ``_READY`` last); the holdout batch carries the batch
metadata file (``batch.json`` ``{"holdout": true}``, ``mlcore.batch_meta``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlcore.storage import Lake
    from mlcore.task import TaskSpec

# Radius as a share of the image side: big enough to stay recognisable at 32 px.
MIN_RADIUS, MAX_RADIUS = 0.3, 0.45
MIN_CONTRAST = 80  # per colour channel, between shape and background (0-255)
MAX_NOISE = 12.0  # std of the Gaussian pixel noise (0-255)
MAX_GRADIENT = 30.0  # brightness change across the background (0-255)


def _circle(x, y, r, _angle):
    return x * x + y * y <= r * r


def _rotated(x, y, angle):
    c, s = np.cos(angle), np.sin(angle)
    return x * c + y * s, -x * s + y * c


def _square(x, y, r, angle):
    u, v = _rotated(x, y, angle)
    return np.maximum(np.abs(u), np.abs(v)) <= r * 0.8


def _triangle(x, y, r, angle):
    inside = np.ones(np.broadcast_shapes(x.shape, r.shape), bool)
    for k in range(3):  # equilateral: three half-planes at the inradius (r / 2)
        a = angle + np.pi / 2 + k * 2 * np.pi / 3
        inside &= x * np.cos(a) + y * np.sin(a) <= r / 2
    return inside


def _cross(x, y, r, angle):
    u, v = np.abs(_rotated(x, y, angle))
    arm = r * 0.3
    return ((u <= arm) & (v <= r)) | ((v <= arm) & (u <= r))


def _star(x, y, r, angle):
    rho = np.sqrt(x * x + y * y)
    phase = np.mod(np.arctan2(y, x) - angle, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0..1 per point
    tip = 1.0 - 2.0 * np.abs(phase - 0.5)  # 1 at a point, 0 between two
    return rho <= r * (0.4 + 0.6 * tip)


SHAPES = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross,
          "star": _star}


class UnknownShape(ValueError):
    """A task class the generator cannot draw."""


def generate(classes: tuple[str, ...] | list[str], n: int, seed: int, size: int = 32
             ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images ``(n, size, size, 3)`` uint8 and labels ``(n,)`` uint8, label ``i``
    being ``classes[i]``; balanced and deterministic given ``seed``."""
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise UnknownShape(f"no generator for classes {unknown}; it draws {sorted(SHAPES)}")
    rng = np.random.default_rng(seed)
    k = len(classes)
    labels = rng.permutation(np.arange(n) % k).astype(np.uint8)
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS, n) * size
    # Centres keep most of the shape inside the frame.
    cx = rng.uniform(radius * 0.8, size - radius * 0.8)
    cy = rng.uniform(radius * 0.8, size - radius * 0.8)
    angle = rng.uniform(0, 2 * np.pi, n)
    background = rng.integers(0, 256, (n, 3))
    offset = rng.integers(MIN_CONTRAST, 256 - MIN_CONTRAST + 1, (n, 3))
    foreground = (background + offset) % 256  # each channel at least MIN_CONTRAST away
    gradient = rng.uniform(-MAX_GRADIENT, MAX_GRADIENT, (n, 2))
    noise_std = rng.uniform(0, MAX_NOISE, n)

    grid = np.arange(size, dtype=np.float32) + 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")  # (size, size)
    mask = np.zeros((n, size, size), bool)
    for label, name in enumerate(classes):
        idx = np.flatnonzero(labels == label)
        if not len(idx):
            continue
        col = (slice(None), None, None)
        x, y = gx[None] - cx[idx][col], gy[None] - cy[idx][col]
        mask[idx] = SHAPES[name](x, y, radius[idx][col], angle[idx][col])

    ramp = (gradient[:, 0, None, None] * (gx[None] / size - 0.5)
            + gradient[:, 1, None, None] * (gy[None] / size - 0.5))  # (n, size, size)
    pixels = np.where(mask[..., None], foreground[:, None, None, :],
                      background[:, None, None, :]).astype(np.float32)
    pixels += ramp[..., None]
    pixels += (rng.standard_normal(pixels.shape, dtype=np.float32)
               * noise_std[:, None, None, None].astype(np.float32))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), labels


@dataclass(frozen=True)
class GeneratedBatch:
    batch_id: str
    files: int
    holdout: bool


def write_batch(lake: Lake, batch_id: str, images: np.ndarray, labels: np.ndarray | None,
                classes: tuple[str, ...], *, holdout: bool = False) -> GeneratedBatch:
    """One landing batch as an uploader sends it: PNGs, ``labels.csv`` (class names) when
    ``labels`` are given, ``batch.json`` for a holdout batch, ``_READY`` last. A batch whose
    ``_READY`` exists is left alone (idempotent)."""
    from mlcore.batch_meta import META_FILE
    from mlcore.images import encode_png
    from mlcore.ingest import LABELS_FILE, LANDING, READY_MARKER

    prefix = f"{LANDING}/{batch_id}"
    if not lake.exists(f"{prefix}/{READY_MARKER}"):
        names = [f"img-{i:05d}.png" for i in range(len(images))]
        for name, img in zip(names, images, strict=True):
            lake.write_bytes(f"{prefix}/{name}", encode_png(img))
        if labels is not None:
            rows = "".join(f"{n},{classes[lab]}\n" for n, lab in zip(names, labels, strict=True))
            lake.write_bytes(f"{prefix}/{LABELS_FILE}", ("filename,label\n" + rows).encode())
        if holdout:
            lake.write_bytes(f"{prefix}/{META_FILE}", json.dumps({"holdout": True}).encode())
        lake.write_bytes(f"{prefix}/{READY_MARKER}", b"")
    return GeneratedBatch(batch_id, len(images), holdout)


def write_landing_batches(lake: Lake, task: TaskSpec, seed: int, *, train_batches: int = 2,
                          per_batch: int = 500, holdout_images: int = 500,
                          unlabeled_images: int = 50) -> list[GeneratedBatch]:
    """Labeled training batches ``shapes-train-NN``, one labeled holdout batch
    ``shapes-holdout-01`` and one unlabeled batch ``shapes-unlabeled-01`` (what scoring
    predicts), each from its own seed so batches never share images."""
    if task.channels != 3:
        raise UnknownShape(f"task {task.name}: the shapes generator makes RGB images")
    if task.height != task.width:
        raise UnknownShape(f"task {task.name}: the shapes generator makes square images")
    make = lambda n, offset: generate(task.classes, n, seed + offset, task.height)  # noqa: E731
    out = []
    for b in range(train_batches):
        images, labels = make(per_batch, 1 + b)
        out.append(write_batch(lake, f"shapes-train-{b + 1:02d}", images, labels, task.classes))
    images, labels = make(holdout_images, 1000)
    out.append(write_batch(lake, "shapes-holdout-01", images, labels, task.classes, holdout=True))
    images, _ = make(unlabeled_images, 2000)
    out.append(write_batch(lake, "shapes-unlabeled-01", images, None, task.classes))
    return out
