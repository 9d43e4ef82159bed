"""Safe image decoding and profiling: bytes in, a :class:`FileProfile` out.

The file's *content* decides its format (magic bytes), never its extension. The pixel
count is checked from the header before any pixel is decoded, Pillow's own
decompression-bomb guard stays on, and truncated files are rejected.

Every image ends in the task's mode and size (``tasks/*.toml``: grayscale ``L`` or
``RGB``, H x W); the profile's ``mode``, ``width`` and ``height`` are the *upload's*, so
a conversion is always on record. Mode policy (documented in docs/data-contract.md):

=============  ==========================================================
mode           handling
=============  ==========================================================
the task's     used as is
1, P, L, RGB,  converted to the task's mode: 8-bit grayscale (ITU-R 601
RGBA, LA, CMYK luma) or RGB (grey replicated); alpha is dropped
I;16*, I       scaled to 8 bits (value >> 8 for 16-bit), then as L
other          rejected: ``unsupported_mode``
multi-frame    rejected: ``multi_frame``
=============  ==========================================================

JPEGs are turned upright by their EXIF orientation first.

Size policy: images that are not the task's H x W are resized (Lanczos) to it and their
original size is kept in the profile, as long as each side is at most ``MAX_SIDE``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps

if TYPE_CHECKING:
    from mlcore.task import TaskSpec

MAX_SIDE = 4096
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
FORMATS = {"PNG": PNG_MAGIC, "JPEG": JPEG_MAGIC}  # what ingestion accepts, by magic bytes
CONVERTIBLE = {"1", "P", "RGB", "RGBA", "LA", "CMYK", "L"}

# Never decode what is not there: a truncated file must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class FileProfile:
    """What we know about one uploaded file. ``reason`` is set when it cannot be used."""

    key: str
    sha256: str
    size_bytes: int
    format: str | None = None
    mode: str | None = None  # the upload's mode, width and height (before conversion)
    width: int | None = None
    height: int | None = None
    decodable: bool = False
    reason: str | None = None
    detail: str | None = None
    mean: float | None = None
    std: float | None = None
    pixels: bytes | None = field(default=None, repr=False)

    def row(self) -> dict:
        """The compact profile row validated by Great Expectations (no pixels)."""
        return {k: v for k, v in self.__dict__.items() if k != "pixels"}


def sniff_format(data: bytes) -> str | None:
    """PNG or JPEG from the magic bytes; ``None`` for anything else."""
    return next((name for name, magic in FORMATS.items() if data.startswith(magic)), None)


def _to_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L"):
        arr = np.asarray(img, dtype=np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8))
    if img.mode == "I":
        arr = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8))
    return img.convert("L")


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` (``L`` or ``RGB``); 16/32-bit integer images go through 8-bit L."""
    if img.mode.startswith("I"):
        img = _to_gray(img)
    if mode == "L":
        return _to_gray(img)
    return img if img.mode == mode else img.convert(mode)


def profile_image(key: str, data: bytes, *, max_pixels: int, max_bytes: int,
                  task: TaskSpec | None = None) -> FileProfile:
    """Decode ``data`` safely into ``task``'s mode and size (default: the deployment's task)
    and describe it; never raises for bad input."""
    if task is None:
        from mlcore.task import default_task

        task = default_task()
    prof = FileProfile(key=key, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

    def reject(reason: str, detail: str) -> FileProfile:
        prof.reason, prof.detail = reason, detail
        return prof

    if not data:
        return reject("empty_file", "zero bytes")
    if len(data) > max_bytes:
        return reject("too_large", f"{len(data)} bytes > limit {max_bytes}")
    prof.format = sniff_format(data)
    if prof.format is None:
        return reject("unsupported_format", "content is neither PNG nor JPEG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[prof.format])
            prof.mode, (prof.width, prof.height) = img.mode, img.size
            if prof.width * prof.height > max_pixels or max(img.size) > MAX_SIDE:
                return reject(
                    "too_many_pixels",
                    f"{prof.width}x{prof.height} exceeds {max_pixels} pixels / side {MAX_SIDE}",
                )
            if getattr(img, "n_frames", 1) > 1:
                return reject("multi_frame", f"{img.n_frames} frames; single images only")
            if img.mode not in CONVERTIBLE and not img.mode.startswith("I"):
                return reject("unsupported_mode", f"mode {img.mode}")
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return reject("decompression_bomb", str(exc))
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        return reject(reason, f"{type(exc).__name__}: {exc}")

    out = _to_mode(ImageOps.exif_transpose(img) if prof.format == "JPEG" else img, task.mode)
    if out.size != (task.width, task.height):
        out = out.resize((task.width, task.height), Image.Resampling.LANCZOS)
    arr = np.asarray(out, dtype=np.uint8)  # (H, W) or (H, W, 3): row-major, channels last
    prof.decodable = True
    prof.mean, prof.std = float(arr.mean()), float(arr.std())
    prof.pixels = arr.tobytes()
    return prof


def encode_png(pixels: np.ndarray) -> bytes:
    """A (H, W) grayscale or (H, W, 3) RGB uint8 array as PNG bytes (seeds landing batches)."""
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
