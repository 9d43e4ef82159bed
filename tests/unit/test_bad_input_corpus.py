"""A bad-input corpus generated here: each file gets its exact reason, every valid file in
the same batch is accepted, and hostile keys stay inside the lake."""

import io
import json
import unicodedata

import numpy as np
import pytest
from PIL import Image

from mlcore.data import read_shard
from mlcore.images import encode_png, profile_image
from mlcore.ingest import ingest_batch
from mlcore.seed import _png_with_header_size
from mlcore.storage import UnsafeKey
from tests.conftest import DAY


def _garment(seed: int, size=(28, 28)) -> np.ndarray:
    """Something image-like: a bright blob on black, with a mean near the training data's."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(size[::-1], np.uint8)
    h, w = arr.shape
    arr[h // 6 : h - h // 6, w // 4 : w - w // 4] = rng.integers(120, 230)
    return np.clip(arr.astype(int) + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8)


def _save(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _sixteen_bit(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16) * 257).save(buf, format="PNG")
    return buf.getvalue()


def _exif_rotated_jpeg(arr: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _save(arr, "JPEG", quality=95, exif=exif)


def corpus() -> tuple[dict[str, bytes], dict[str, str]]:
    good = encode_png(_garment(0))
    files = {
        "zero-byte.png": (b"", "empty_file"),
        "truncated.png": (encode_png(_garment(1))[:60], "truncated"),
        "text.png": (b"just some text, not pixels\n" * 5, "unsupported_format"),
        "anim.gif": (_save(_garment(2), "GIF"), "unsupported_format"),
        "tiny-1x1.png": (_save(np.full((1, 1), 90, np.uint8), "PNG"), "dimensions"),
        "huge-4000.png": (_save(np.full((4000, 4000), 80, np.uint8), "PNG"), "too_many_pixels"),
        "bomb-100mp.png": (_png_with_header_size(10_001, 10_001), "decompression_bomb"),
        "rgb.png": (_save(_garment(4), "PNG", "RGB"), "accepted"),
        "rgba.png": (_save(_garment(5), "PNG", "RGBA"), "accepted"),
        "sixteen-bit.png": (_sixteen_bit(_garment(6)), "accepted"),
        "palette.png": (_save(_garment(7), "PNG", "P"), "accepted"),
        "exif-rotated.jpg": (_exif_rotated_jpeg(_garment(8, (28, 20))), "accepted"),
        "good.png": (good, "accepted"),
        "z-copy-of-good.png": (good, "duplicate"),  # sorts after good.png: the later key is the duplicate
        "unknown-label.png": (encode_png(_garment(9)), "unknown_label"),
    }
    return {k: v for k, (v, _) in files.items()}, {k: r for k, (_, r) in files.items()}


def test_each_bad_file_gets_its_exact_reason_and_valid_files_are_accepted(lake, settings):
    files, expected = corpus()
    for name, data in files.items():
        lake.write_bytes(f"landing/corpus/{name}", data)
    lake.write_bytes("landing/corpus/labels.csv",
                     b"filename,label\ngood.png,Bag\nunknown-label.png,Hovercraft\nmissing.png,Coat\n")
    lake.write_bytes("landing/corpus/_READY", b"")
    report = ingest_batch(settings.model_copy(update={"max_reject_rate": 0.9}), lake, "corpus", logical_date=DAY)

    got = {r.key.split("/")[-1]: r.reason for r in report.rejections}
    got |= {k.split("/")[-1]: "duplicate" for k in report.duplicate_keys}
    curated = read_shard(lake, report.shards[0]).to_pydict()
    got |= {k.split("/")[-1]: "accepted" for k in curated["source_key"]}
    assert got == expected
    assert [(i.reason, i.detail) for i in report.label_issues] == [("label_for_missing_file", "missing.png")]
    assert report.accepted + report.quarantined + report.duplicates == report.files == len(files)


def test_exif_orientation_is_applied():
    arr = _garment(8, (28, 20))
    prof = profile_image("r.jpg", _exif_rotated_jpeg(arr), max_pixels=4_000_000, max_bytes=5_000_000)
    assert (prof.width, prof.height) == (28, 20)  # stored size; decoded upright as 20 wide x 28 high
    upright = np.asarray(Image.fromarray(np.rot90(arr, k=-1)).resize((28, 28), Image.Resampling.LANCZOS))
    decoded = np.frombuffer(prof.pixels, np.uint8).reshape(28, 28)
    assert np.abs(decoded.astype(int) - upright.astype(int)).mean() < 12


HOSTILE = ["../escape.png", "a/../../escape.png", "/etc/passwd", "..\\win.png"]
ODD_BUT_SAFE = ["with space.png", "x" * 200 + ".png", unicodedata.normalize("NFC", "café.png"),
                unicodedata.normalize("NFD", "café.png")]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_keys_never_write_outside_the_lake(lake, name, tmp_path):
    with pytest.raises(UnsafeKey):
        lake.write_bytes(f"landing/b/{name}" if not name.startswith("/") else name, b"x")
    assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*") if lake.root not in p.parents)


def test_odd_keys_survive_unchanged_into_the_records(lake, settings):
    for i, name in enumerate(ODD_BUT_SAFE):
        lake.write_bytes(f"landing/odd/{name}", encode_png(_garment(20 + i)))
    lake.write_bytes("landing/odd/_READY", b"")
    report = ingest_batch(settings, lake, "odd", logical_date=DAY)
    assert report.accepted == len(ODD_BUT_SAFE)  # NFC and NFD names are distinct keys
    keys = set(read_shard(lake, report.shards[0]).column("source_key").to_pylist())
    assert keys == {f"landing/odd/{n}" for n in ODD_BUT_SAFE}
    ledger = json.loads(lake.read_bytes("_state/ingest/odd.json"))
    assert ledger["files"] == len(ODD_BUT_SAFE)
