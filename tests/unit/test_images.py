import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from mlcore.images import encode_png, profile_image
from mlcore.seed import _png_with_header_size

LIMITS = {"max_pixels": 4_000_000, "max_bytes": 5_000_000}


def _img(mode: str, size=(28, 28), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    arr = (np.arange(size[0] * size[1]) % 251).astype(np.uint8).reshape(size[1], size[0])
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def test_png_is_decoded_to_784_gray_bytes():
    prof = profile_image("k", _img("L"), **LIMITS)
    assert prof.decodable and prof.reason is None
    assert prof.format == "PNG" and len(prof.pixels) == 784


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "1", "I;16"])
def test_modes_are_converted_to_grayscale(mode):
    prof = profile_image("k", _img(mode), **LIMITS)
    assert prof.decodable, prof.detail
    assert prof.mode == mode and len(prof.pixels) == 784


def test_jpeg_named_png_is_decided_by_content():
    prof = profile_image("x.png", _img("L", fmt="JPEG"), **LIMITS)
    assert prof.decodable and prof.format == "JPEG"


def test_text_file_with_image_extension_is_unsupported():
    prof = profile_image("x.png", b"hello, not an image" * 10, **LIMITS)
    assert prof.reason == "unsupported_format" and not prof.decodable


def test_truncated_png_is_rejected_not_loaded_anyway():
    data = encode_png(np.full((28, 28), 90, np.uint8) + np.eye(28, dtype=np.uint8))
    prof = profile_image("t.png", data[: len(data) // 2], **LIMITS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert prof.reason in ("truncated", "corrupt") and not prof.decodable


def test_decompression_bomb_is_rejected_from_its_header():
    prof = profile_image("bomb.png", _png_with_header_size(60_000, 60_000), **LIMITS)
    assert prof.reason == "decompression_bomb" and prof.pixels is None


def test_pixel_limit_applies_before_decoding():
    prof = profile_image("big.png", _img("L", size=(300, 300)), max_pixels=10_000, max_bytes=10**7)
    assert prof.reason == "too_many_pixels" and prof.pixels is None


def test_non_28px_image_is_resized_and_original_size_kept():
    prof = profile_image("big.png", _img("L", size=(56, 40)), **LIMITS)
    assert prof.decodable and (prof.width, prof.height) == (56, 40) and len(prof.pixels) == 784


def test_oversized_file_is_rejected_before_decoding():
    prof = profile_image("k", _img("L"), max_pixels=4_000_000, max_bytes=10)
    assert prof.reason == "too_large"


def test_multi_frame_image_is_rejected():
    buf = io.BytesIO()
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 200)]
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    assert profile_image("anim.png", buf.getvalue(), **LIMITS).reason == "multi_frame"


# --- the task decides the mode and size (tasks/*.toml); the profile keeps the upload's ---

def _rgb_task():
    from mlcore.task import TaskSpec

    return TaskSpec(name="rgb-test", classes=("a", "b"), height=32, width=24, channels=3,
                    base_data="none", holdout="batches")


def test_rgb_upload_to_the_grayscale_task_is_converted_and_recorded():
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    prof = profile_image("c.png", buf.getvalue(), **LIMITS)  # the default task: Fashion-MNIST
    assert prof.decodable and prof.reason is None
    assert (prof.mode, prof.width, prof.height) == ("RGB", 50, 40)  # the upload, on record
    pixels = np.frombuffer(prof.pixels, np.uint8)
    assert len(pixels) == 28 * 28
    # ITU-R 601 luma of (200, 100, 50): 0.299*200 + 0.587*100 + 0.114*50 = 124.4
    assert abs(int(np.median(pixels)) - 124) <= 1


def test_grayscale_upload_to_the_rgb_task_is_converted_and_recorded():
    task = _rgb_task()
    prof = profile_image("g.png", _img("L", size=(56, 40)), **LIMITS, task=task)
    assert prof.decodable and (prof.mode, prof.width, prof.height) == ("L", 56, 40)
    arr = np.frombuffer(prof.pixels, np.uint8).reshape(task.shape)  # (32, 24, 3)
    assert len(prof.pixels) == task.pixel_bytes
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "CMYK"])
def test_other_modes_are_converted_to_rgb_for_the_rgb_task(mode):
    task = _rgb_task()
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    prof = profile_image("k", _img(mode, fmt=fmt), **LIMITS, task=task)
    assert prof.decodable, prof.detail
    assert prof.mode == mode and len(prof.pixels) == task.pixel_bytes
