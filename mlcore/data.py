"""Data sets: the Fashion-MNIST IDX files and the curated image shards in the lake."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcore.storage import Lake
    from mlcore.task import TaskSpec

CURATED_PREFIX = "curated/images"
# Labels a later batch supplied for images already curated: same schema as the image
# shards, read by training (never by scoring), so each image keeps one row in curated/images.
LABELS_PREFIX = "curated/labels"
# Images of batches marked holdout (batch.json, mlcore.batch_meta): same schema, read only
# by training's holdout evaluation; neither training nor scoring lists this prefix.
HOLDOUT_PREFIX = "curated/holdout"
COMMIT_FILE = "_COMMITTED.json"
LEDGER_PREFIX = "_state/ingest"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def __getattr__(name: str):
    # ``CLASSES`` is the default task's class list (tasks/*.toml), resolved on first use so
    # importing this module reads no settings.
    if name == "CLASSES":
        from mlcore.task import default_task

        return default_task().classes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _spec(task: TaskSpec | None) -> TaskSpec:
    from mlcore.task import default_task

    return task or default_task()


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
    """Images (N, 28, 28) uint8 (the IDX files' own shape) and labels (N,) uint8 for
    ``split`` ("train" or "test")."""
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
    """sha256 of each image's raw pixel bytes: the id that finds an image anywhere."""
    return [hashlib.sha256(img.tobytes()).hexdigest() for img in images]


# --- curated shards ----------------------------------------------------------------------


def curated_schema(task: TaskSpec | None = None) -> pa.Schema:
    """The curated shard schema; ``pixels`` holds the task's H*W*C uint8 bytes (row-major,
    channels last)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),  # sha256 of the uploaded bytes
            pa.field("pixel_sha256", pa.string(), nullable=False),
            pa.field("pixels", pa.binary(_spec(task).pixel_bytes), nullable=False),
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


def shard_key(ingested_at: datetime, batch_id: str, index: int, prefix: str = CURATED_PREFIX) -> str:
    """Shards are grouped by ingestion date so scoring can select a data interval cheaply."""
    return f"{prefix}/dt={ingested_at:%Y-%m-%d}/batch={batch_id}/part-{index:05d}.parquet"


def commit_key(ingested_at: datetime, batch_id: str, prefix: str = CURATED_PREFIX) -> str:
    """The batch's commit record: readers trust only the parts it names."""
    return f"{prefix}/dt={ingested_at:%Y-%m-%d}/batch={batch_id}/{COMMIT_FILE}"


def stage_shards(
    lake: Lake, rows: list[CuratedRow], batch_id: str, ingested_at: datetime, shard_rows: int,
    prefix: str = CURATED_PREFIX,
) -> list[str]:
    """Write the parts (each atomically) but commit nothing: no reader lists them yet."""
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
        key = shard_key(ingested_at, batch_id, index, prefix)
        lake.write_bytes(key, parquet_bytes(table))
        keys.append(key)
    return keys


def commit_shards(lake: Lake, keys: list[str], batch_id: str, ingested_at: datetime,
                  prefix: str = CURATED_PREFIX) -> None:
    """Make the staged ``keys`` visible, all at once: one small object names them.

    Parts a killed attempt left under the batch's folder that this commit does not name are
    deleted (the folder holds only this batch, so this costs O(batch))."""
    commit_folder(lake, commit_key(ingested_at, batch_id, prefix).rsplit("/", 1)[0], keys,
                  batch_id)


def commit_folder(lake: Lake, folder: str, keys: list[str], batch_id: str) -> None:
    """Write ``folder``'s commit record naming ``keys``, then drop parts it does not name."""
    marker = f"{folder}/{COMMIT_FILE}"
    record = json.dumps({"batch_id": batch_id, "parts": sorted(keys)}, indent=1).encode()
    lake.write_bytes(marker, record)
    for stale in set(lake.list(folder)) - set(keys) - {marker}:
        lake.delete(stale)


def uncommit_shards(lake: Lake, batch_id: str, ingested_at: datetime,
                    prefix: str = CURATED_PREFIX) -> None:
    """Withdraw a batch's commit and parts (a retry that now rejects the batch)."""
    folder = commit_key(ingested_at, batch_id, prefix).rsplit("/", 1)[0]
    marker = commit_key(ingested_at, batch_id, prefix)
    if lake.exists(marker):
        lake.delete(marker)
    for key in lake.list(folder):
        lake.delete(key)


def write_shards(
    lake: Lake, rows: list[CuratedRow], batch_id: str, ingested_at: datetime, shard_rows: int
) -> list[str]:
    """Write accepted images as Parquet shards and commit them; return their keys."""
    keys = stage_shards(lake, rows, batch_id, ingested_at, shard_rows)
    commit_shards(lake, keys, batch_id, ingested_at)
    return keys


def _committed(lake: Lake, keys: list[str]) -> list[str]:
    """The parts among ``keys`` (one listing) that a commit record names.

    A batch folder without a record is either a killed attempt (ignored) or a batch
    curated before commit records existed: its ingestion ledger then names its parts."""
    by_folder: dict[str, set[str]] = {}
    for key in keys:
        by_folder.setdefault(key.rsplit("/", 1)[0], set()).add(key)
    out = []
    for folder, present in sorted(by_folder.items()):
        marker = f"{folder}/{COMMIT_FILE}"
        if marker in present:
            named = set(json.loads(lake.read_bytes(marker))["parts"])
        else:
            named = _legacy_parts(lake, folder)
        out += sorted(k for k in present & named if k.endswith(".parquet"))
    return out


def _legacy_parts(lake: Lake, folder: str) -> set[str]:
    from mlcore.batch_ids import is_valid_batch_id

    batch_id = folder.rsplit("batch=", 1)[-1]
    key = f"{LEDGER_PREFIX}/{batch_id}.json"
    if not is_valid_batch_id(batch_id) or not lake.exists(key):
        return set()
    ledger = json.loads(lake.read_bytes(key))
    if ledger.get("status") != "ingested":
        return set()
    return set(ledger.get("shards", [])) | set(ledger.get("label_shards", []))


def list_shards(lake: Lake, prefix: str = CURATED_PREFIX) -> list[str]:
    """Committed image shards (or label shards, ``prefix=LABELS_PREFIX``)."""
    return _committed(lake, lake.list(prefix))


def shards_for_dates(lake: Lake, dates: list[str]) -> list[str]:
    """Committed shards ingested on the given ``YYYY-MM-DD`` dates."""
    keys = []
    for day in dates:
        keys += _committed(lake, lake.list(f"{CURATED_PREFIX}/dt={day}"))
    return sorted(keys)


def read_shard(lake: Lake, key: str, columns: list[str] | None = None) -> pa.Table:
    from mlcore.storage import read_parquet

    return read_parquet(lake, key, columns)


def shard_pixels(table: pa.Table, task: TaskSpec | None = None) -> np.ndarray:
    """The ``pixels`` column as an (N, *task.shape) uint8 array, without a Python loop."""
    spec = _spec(task)
    col = table.column("pixels").combine_chunks()
    buf = col.buffers()[1]
    n = spec.pixel_bytes
    return np.frombuffer(buf, dtype=np.uint8, count=len(col) * n, offset=col.offset * n).reshape(
        -1, *spec.shape
    )


def known_image_ids(lake: Lake) -> set[str]:
    """Every committed image id (reads every shard: for checks and repairs, not per batch)."""
    ids: set[str] = set()
    for key in list_shards(lake):
        ids.update(read_shard(lake, key, columns=["image_id"]).column("image_id").to_pylist())
    return ids


def _label_overrides(lake: Lake, keys: list[str]) -> dict[str, tuple[int, str]]:
    """image id -> (label, label shard) from later batches' labels; the latest shard wins."""
    out: dict[str, tuple[int, str]] = {}
    for key in sorted(keys):
        table = read_shard(lake, key, ["image_id", "label"])
        for image_id, label in zip(*table.to_pydict().values(), strict=True):
            if label is not None:
                out[image_id] = (label, key)
    return out


def count_labeled(lake: Lake) -> int:
    """How many curated images carry a label, their own or one a later batch supplied."""
    overrides = _label_overrides(lake, list_shards(lake, LABELS_PREFIX))
    n = 0
    for key in list_shards(lake):
        table = read_shard(lake, key, ["image_id", "label"])
        for image_id, label in zip(*table.to_pydict().values(), strict=True):
            n += label is not None or image_id in overrides
    return n


def labeled_curated(lake: Lake, shards: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Curated images that carry a label (from ``shards``, default all committed image and
    label shards), with the shard keys used. A label a later batch supplied (a label shard)
    replaces the image's own; each image appears once."""
    if shards is None:
        shards = list_shards(lake) + list_shards(lake, LABELS_PREFIX)
    label_keys = [k for k in shards if k.startswith(LABELS_PREFIX + "/")]
    overrides = _label_overrides(lake, label_keys)
    images, labels, used = [], [], set()
    for key in [k for k in shards if not k.startswith(LABELS_PREFIX + "/")]:
        table = read_shard(lake, key, columns=["image_id", "pixels", "label"])
        ids = table.column("image_id").to_pylist()
        own = table.column("label").to_pylist()
        final = [overrides[i][0] if i in overrides else lab for i, lab in zip(ids, own, strict=True)]
        mask = np.array([lab is not None for lab in final], dtype=bool)
        if mask.any():
            import pyarrow as pa

            images.append(shard_pixels(table.filter(pa.array(mask))))
            labels.append(np.array([lab for lab in final if lab is not None], dtype=np.uint8))
            used.add(key)
            used.update(overrides[i][1] for i in ids if i in overrides)
    if not images:
        return np.zeros((0, *_spec(None).shape), np.uint8), np.zeros((0,), np.uint8), []
    return np.concatenate(images), np.concatenate(labels), sorted(used)
