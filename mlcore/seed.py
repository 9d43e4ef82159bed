"""Seed ``landing/`` with demo batches made from Fashion-MNIST, written as real image files.

Four batches: two labeled (``labels.csv`` by class name and by index), one unlabeled, and
one that mixes good files with deliberately bad ones, each closed with ``_READY``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mlcore.data import load_fashion_mnist
from mlcore.images import encode_png
from mlcore.layout import LABELS_FILE, landing_file, ready_marker

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake


@dataclass(frozen=True)
class SeededBatch:
    batch_id: str
    files: int
    labeled: bool
    expected_bad: int


def _png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's calling card."""
    png = bytearray(encode_png(np.zeros((28, 28), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(png)


def bad_files(good: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """Named bad (and awkward-but-fine) files with the outcome each should get."""
    png = encode_png(good[0])
    rgb = io.BytesIO()
    Image.fromarray(np.stack([good[1]] * 3, axis=-1)).save(rgb, format="PNG")
    jpeg = io.BytesIO()
    Image.fromarray(good[2]).save(jpeg, format="JPEG", quality=95)
    big = io.BytesIO()
    Image.fromarray(good[3]).resize((56, 56)).save(big, format="PNG")
    return {
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "not-an-image.png": (b"this is a text file with a .png name\n" * 4, "unsupported_format"),
        "bomb.png": (_png_with_header_size(60_000, 60_000), "decompression_bomb"),
        "blank.png": (encode_png(np.zeros((28, 28), np.uint8)), "intensity_out_of_range"),
        "rgb.png": (rgb.getvalue(), "accepted"),
        "photo.jpg": (jpeg.getvalue(), "accepted"),
        "large-56px.png": (big.getvalue(), "accepted"),
    }


def seed_landing(settings: Settings, lake: Lake, *, per_batch: int = 24, offset: int = 0
                 ) -> list[SeededBatch]:
    """Write the demo batches (idempotent: an existing ``_READY`` batch is left alone)."""
    from mlcore.task import task_of

    classes = task_of(settings).classes
    images, labels = load_fashion_mnist(settings.fmnist_dir, "train")
    rng = np.random.default_rng(settings.seed + offset)
    pick = rng.permutation(len(images))
    chunks = [pick[i * per_batch : (i + 1) * per_batch] for i in range(4)]
    batches = []

    def write_batch(batch_id: str, files: dict[str, bytes], labels_csv: str | None) -> None:
        if lake.exists(ready_marker(batch_id)):
            return
        for name, data in files.items():
            lake.write_bytes(landing_file(batch_id, name), data)
        if labels_csv is not None:
            lake.write_bytes(landing_file(batch_id, LABELS_FILE), labels_csv.encode())
        lake.write_bytes(ready_marker(batch_id), b"")  # the upload is complete

    for n, by_name in ((1, True), (2, False)):
        idx = chunks[n - 1]
        files = {f"img-{i:03d}.png": encode_png(images[j]) for i, j in enumerate(idx)}
        rows = [
            f"img-{i:03d}.png,{classes[labels[j]] if by_name else int(labels[j])}"
            for i, j in enumerate(idx)
        ]
        write_batch(f"labeled-{n:02d}", files, "filename,label\n" + "\n".join(rows) + "\n")
        batches.append(SeededBatch(f"labeled-{n:02d}", len(files), True, 0))

    files = {f"img-{i:03d}.png": encode_png(images[j]) for i, j in enumerate(chunks[2])}
    write_batch("unlabeled-01", files, None)
    batches.append(SeededBatch("unlabeled-01", len(files), False, 0))

    good = images[chunks[3]]
    files = {f"good-{i:03d}.png": encode_png(img) for i, img in enumerate(good[5:])}
    bad = bad_files(good)
    files |= {name: data for name, (data, _) in bad.items()}
    files["copy-of-good-000.png"] = files["good-000.png"]  # same bytes under two keys: duplicate
    write_batch("mixed-bad-01", files, None)
    expected_bad = sum(outcome != "accepted" for _, outcome in bad.values())
    batches.append(SeededBatch("mixed-bad-01", len(files), False, expected_bad))
    return batches
