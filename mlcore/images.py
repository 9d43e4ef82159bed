"""Safe image decoding and profiling: bytes in, a :class:`FileProfile` out.

The file's *content* decides its format (magic bytes), never its extension. The pixel
count is checked from the header before any pixel is decoded, Pillow's own
decompression-bomb guard stays on, and truncated files are rejected.

Mode policy (documented in docs/data-contract.md):

=============  ==========================================================
mode           handling
=============  ==========================================================
L              used as is
1, P, RGB,     converted to 8-bit grayscale (ITU-R 601 luma); alpha is
RGBA, LA, CMYK dropped
I;16*, I       scaled to 8 bits (value >> 8 for 16-bit)
other          rejected: ``unsupported_mode``
multi-frame    rejected: ``multi_frame``
=============  ==========================================================

JPEGs are turned upright by their EXIF orientation first.

Size policy: images that are not 28x28 are resized (Lanczos) to 28x28 and their
original size is kept in the profile, as long as each side is at most ``MAX_SIDE``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps

SIDE = 28
MAX_SIDE = 4096
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
GRAY_VIA_CONVERT = {"1", "P", "RGB", "RGBA", "LA", "CMYK", "L"}

# Never decode what is not there: a truncated file must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class FileProfile:
    """What we know about one uploaded file. ``reason`` is set when it cannot be used."""

    key: str
    sha256: str
    size_bytes: int
    format: str | None = None
    mode: str | None = None
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
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    return None


def _to_gray(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L"):
        arr = np.asarray(img, dtype=np.uint16) >> 8
        return Image.fromarray(arr.astype(np.uint8))
    if img.mode == "I":
        arr = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(arr.astype(np.uint8))
    return img.convert("L")


def profile_image(key: str, data: bytes, max_pixels: int, max_bytes: int) -> FileProfile:
    """Decode ``data`` safely and describe it; never raises for bad input."""
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
            if img.mode not in GRAY_VIA_CONVERT and not img.mode.startswith("I"):
                return reject("unsupported_mode", f"mode {img.mode}")
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return reject("decompression_bomb", str(exc))
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        return reject(reason, f"{type(exc).__name__}: {exc}")

    gray = _to_gray(ImageOps.exif_transpose(img) if prof.format == "JPEG" else img)
    if gray.size != (SIDE, SIDE):
        gray = gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    arr = np.asarray(gray, dtype=np.uint8)
    prof.decodable = True
    prof.mean, prof.std = float(arr.mean()), float(arr.std())
    prof.pixels = arr.tobytes()
    return prof


def encode_png(pixels: np.ndarray) -> bytes:
    """A 28x28 uint8 array as PNG bytes (used to seed landing batches)."""
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
