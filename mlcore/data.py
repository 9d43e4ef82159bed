"""Data sets: the Fashion-MNIST IDX files and the curated image shards in the lake."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcore.storage import Lake

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CURATED_PREFIX = "curated/images"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetMissing(FileNotFoundError):
    """The Fashion-MNIST files are not where the settings say."""


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 for ``split`` ("train" or "test")."""
    found = []
    for stem in IDX_FILES[split]:
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise DatasetMissing(
                f"{stem}[.gz] not found in {folder}. Install Debian's dataset-fashion-mnist "
                "package or set MLCORE_FMNIST_DIR to a folder with the IDX files."
            )
        found.append(_read_idx(path))
    return found[0], found[1]


def array_hash(*arrays: np.ndarray) -> str:
    """A content hash of arrays (shape and bytes), e.g. to pin the frozen holdout."""
    h = hashlib.sha256()
    for arr in arrays:
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def pixel_sha256(images: np.ndarray) -> list[str]:
    """sha256 of each image's 784 raw pixel bytes: the id that finds an image anywhere."""
    return [hashlib.sha256(img.tobytes()).hexdigest() for img in images]


# --- curated shards ----------------------------------------------------------------------


def curated_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),  # sha256 of the uploaded bytes
            pa.field("pixel_sha256", pa.string(), nullable=False),
            pa.field("pixels", pa.binary(784), nullable=False),
            pa.field("source_key", pa.string(), nullable=False),
            pa.field("batch_id", pa.string(), nullable=False),
            pa.field("label", pa.int8(), nullable=True),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


@dataclass(frozen=True)
class CuratedRow:
    image_id: str
    pixels: bytes
    source_key: str
    label: int | None


def shard_key(ingested_at: datetime, batch_id: str, index: int) -> str:
    """Shards are grouped by ingestion date so scoring can select a data interval cheaply."""
    return f"{CURATED_PREFIX}/dt={ingested_at:%Y-%m-%d}/batch={batch_id}/part-{index:05d}.parquet"


def write_shards(
    lake: Lake, rows: list[CuratedRow], batch_id: str, ingested_at: datetime, shard_rows: int
) -> list[str]:
    """Write accepted images as Parquet shards (each written atomically); return their keys."""
    import pyarrow as pa

    from mlcore.storage import parquet_bytes

    keys = []
    for index, start in enumerate(range(0, len(rows), shard_rows)):
        chunk = rows[start : start + shard_rows]
        table = pa.Table.from_pydict(
            {
                "image_id": [r.image_id for r in chunk],
                "pixel_sha256": [hashlib.sha256(r.pixels).hexdigest() for r in chunk],
                "pixels": [r.pixels for r in chunk],
                "source_key": [r.source_key for r in chunk],
                "batch_id": [batch_id] * len(chunk),
                "label": [r.label for r in chunk],
                "ingested_at": [ingested_at] * len(chunk),
            },
            schema=curated_schema(),
        )
        key = shard_key(ingested_at, batch_id, index)
        lake.write_bytes(key, parquet_bytes(table))
        keys.append(key)
    return keys


def list_shards(lake: Lake) -> list[str]:
    return [k for k in lake.list(CURATED_PREFIX) if k.endswith(".parquet")]


def shards_for_dates(lake: Lake, dates: list[str]) -> list[str]:
    """Shards ingested on the given ``YYYY-MM-DD`` dates."""
    keys = []
    for day in dates:
        keys += [k for k in lake.list(f"{CURATED_PREFIX}/dt={day}") if k.endswith(".parquet")]
    return sorted(keys)


def read_shard(lake: Lake, key: str, columns: list[str] | None = None) -> pa.Table:
    from mlcore.storage import read_parquet

    return read_parquet(lake, key, columns)


def shard_pixels(table: pa.Table) -> np.ndarray:
    """The ``pixels`` column as an (N, 28, 28) uint8 array, without a Python loop."""
    col = table.column("pixels").combine_chunks()
    buf = col.buffers()[1]
    return np.frombuffer(buf, dtype=np.uint8, count=len(col) * 784, offset=col.offset * 784).reshape(
        -1, 28, 28
    )


def known_image_ids(lake: Lake) -> set[str]:
    """Every image id already curated: uploads seen before are recorded as duplicates."""
    ids: set[str] = set()
    for key in list_shards(lake):
        ids.update(read_shard(lake, key, columns=["image_id"]).column("image_id").to_pylist())
    return ids


def count_labeled(lake: Lake) -> int:
    """How many curated images carry a label (reads only the label column)."""
    return sum(read_shard(lake, k, ["label"]).column("label").is_valid().sum().as_py()
               for k in list_shards(lake))


def labeled_curated(lake: Lake, shards: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Curated images that carry a label (from ``shards``, default all), with their shard keys."""
    images, labels, used = [], [], []
    for key in list_shards(lake) if shards is None else shards:
        table = read_shard(lake, key, columns=["pixels", "label"])
        mask = table.column("label").is_valid()
        table = table.filter(mask)
        if table.num_rows:
            images.append(shard_pixels(table))
            labels.append(table.column("label").to_numpy().astype(np.uint8))
            used.append(key)
    if not images:
        return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8), []
    return np.concatenate(images), np.concatenate(labels), used
