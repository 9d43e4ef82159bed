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

from mlcore.layout import (
    CURATED_IMAGES,
    CURATED_LABELS,
    CURATED_PREFIXES,
    batch_of_folder,
    commit_record,
    curated_batch,
    curated_day,
    ledger_key,
    shard_key,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcore.storage import Lake
    from mlcore.task import TaskSpec

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


def stage_shards(
    lake: Lake, rows: list[CuratedRow], batch_id: str, *, ingested_at: datetime, shard_rows: int,
    prefix: str = CURATED_IMAGES, task: TaskSpec | None = None,
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
            schema=curated_schema(task),
        )
        key = shard_key(ingested_at, batch_id, index, prefix=prefix)
        lake.write_bytes(key, parquet_bytes(table))
        keys.append(key)
    return keys


def commit_shards(lake: Lake, keys: list[str], batch_id: str, *, ingested_at: datetime,
                  prefix: str = CURATED_IMAGES) -> None:
    """Make staged ``keys`` of a batch that has no ledger entry visible, all at once: one
    small object in the folder names them (shards written outside ingestion: tests,
    benchmarks, synthetic lakes). Ingestion never calls this: its ledger entry is the
    batch's one commit, for every prefix (:func:`committed_parts`).

    Parts a killed attempt left under the batch's folder that this commit does not name are
    deleted (the folder holds only this batch, so this costs O(batch))."""
    commit_folder(lake, curated_batch(ingested_at, batch_id, prefix), keys, batch_id=batch_id)


def commit_folder(lake: Lake, folder: str, keys: list[str], *, batch_id: str) -> None:
    """Write ``folder``'s commit record naming ``keys``, then drop parts it does not name."""
    marker = commit_record(folder)
    record = json.dumps({"batch_id": batch_id, "parts": sorted(keys)}, indent=1).encode()
    lake.write_bytes(marker, record)
    for stale in set(lake.list(folder)) - set(keys) - {marker}:
        lake.delete(stale)


def uncommit_shards(lake: Lake, batch_id: str, ingested_at: datetime, *,
                    prefix: str = CURATED_IMAGES) -> None:
    """Delete a batch's folder under ``prefix``: its parts and any folder commit record
    (a killed attempt's leftovers, or a retry that now rejects the batch)."""
    folder = curated_batch(ingested_at, batch_id, prefix)
    marker = commit_record(folder)
    if lake.exists(marker):  # first: a reader that trusts it never meets a deleted part
        lake.delete(marker)
    for key in lake.list(folder):
        lake.delete(key)


def drop_unnamed_parts(lake: Lake, batch_id: str, *, ingested_at: datetime,
                       named: set[str]) -> None:
    """After a batch committed ``named``: delete what else its folders of ``ingested_at``
    hold (parts of a killed attempt, a folder commit record an older version wrote).
    Nothing deleted here was visible: the batch's ledger entry overrides folder records."""
    for prefix in CURATED_PREFIXES:
        for key in lake.list(curated_batch(ingested_at, batch_id, prefix)):
            if key not in named:
                lake.delete(key)


def write_shards(
    lake: Lake, rows: list[CuratedRow], batch_id: str, *, ingested_at: datetime, shard_rows: int
) -> list[str]:
    """Write accepted images as Parquet shards and commit them with a folder commit record
    (:func:`commit_shards`), as shards written outside ingestion are; return their keys."""
    keys = stage_shards(lake, rows, batch_id, ingested_at=ingested_at, shard_rows=shard_rows)
    commit_shards(lake, keys, batch_id, ingested_at=ingested_at)
    return keys


def ledger_parts(ledger: dict) -> set[str]:
    """The parts a ledger entry commits: every prefix's, if the batch was ingested."""
    if ledger.get("status") != "ingested":
        return set()
    return {k for name in ("shards", "label_shards", "holdout_shards") for k in ledger.get(name, [])}


def committed_parts(lake: Lake, folder: str, present: set[str]) -> set[str]:
    """The parts of curated ``folder`` (``present``: its listing) that readers may trust.

    A batch's ledger entry is its commit: when one exists, it alone decides (the parts it
    names; none if the batch was rejected), so parts and ledger entry become visible with one
    write, and parts of a killed attempt under this or another date are never trusted. A
    folder of a batch without a ledger entry is trusted only through its own commit record
    (:data:`mlcore.layout.COMMIT_FILE`: a lake written before the ledger was the commit, or
    shards written outside ingestion); without one it is a killed attempt, ignored."""
    from mlcore.batch_ids import is_valid_batch_id

    batch_id = batch_of_folder(folder)
    if is_valid_batch_id(batch_id):
        try:  # one GET, no HEAD first: this runs for every folder a reader lists
            return ledger_parts(json.loads(lake.read_bytes(ledger_key(batch_id))))
        except FileNotFoundError:
            pass
    marker = commit_record(folder)
    if marker in present:
        return set(json.loads(lake.read_bytes(marker))["parts"])
    return set()


def _committed(lake: Lake, keys: list[str]) -> list[str]:
    """The parts among ``keys`` (one listing) that readers trust (:func:`committed_parts`)."""
    by_folder: dict[str, set[str]] = {}
    for key in keys:
        by_folder.setdefault(key.rsplit("/", 1)[0], set()).add(key)
    out = []
    for folder, present in sorted(by_folder.items()):
        named = committed_parts(lake, folder, present)
        out += sorted(k for k in present & named if k.endswith(".parquet"))
    return out


def list_shards(lake: Lake, prefix: str = CURATED_IMAGES) -> list[str]:
    """Committed image shards (or label shards, ``prefix=CURATED_LABELS``)."""
    return _committed(lake, lake.list(prefix))


def shards_for_dates(lake: Lake, dates: list[str]) -> list[str]:
    """Committed shards ingested on the given ``YYYY-MM-DD`` dates."""
    keys = []
    for day in dates:
        keys += _committed(lake, lake.list(curated_day(day)))
    return sorted(keys)


def read_shard(lake: Lake, key: str, columns: list[str] | None = None) -> pa.Table:
    """One curated shard's ``columns`` (default: all); only those are fetched (a shard is
    mostly pixels, and most readers want none)."""
    from mlcore.storage import read_columns

    return read_columns(lake, key, columns)


def shard_pixels(table: pa.Table, task: TaskSpec | None = None) -> np.ndarray:
    """The ``pixels`` column as an (N, *task.shape) uint8 array, without a Python loop."""
    spec = _spec(task)
    chunks = table.column("pixels")
    # combine_chunks copies even a single chunk (pyarrow 25): 40 MB per 50,000-row shard.
    col = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
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
    overrides = _label_overrides(lake, list_shards(lake, CURATED_LABELS))
    n = 0
    for key in list_shards(lake):
        table = read_shard(lake, key, ["image_id", "label"])
        for image_id, label in zip(*table.to_pydict().values(), strict=True):
            n += label is not None or image_id in overrides
    return n


def labeled_curated(lake: Lake, shards: list[str] | None = None, *, task: TaskSpec | None = None
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Curated images that carry a label (from ``shards``, default all committed image and
    label shards), with the shard keys used. A label a later batch supplied (a label shard)
    replaces the image's own; each image appears once."""
    if shards is None:
        shards = list_shards(lake) + list_shards(lake, CURATED_LABELS)
    label_keys = [k for k in shards if k.startswith(CURATED_LABELS + "/")]
    overrides = _label_overrides(lake, label_keys)
    images, labels, used = [], [], set()
    for key in [k for k in shards if not k.startswith(CURATED_LABELS + "/")]:
        table = read_shard(lake, key, columns=["image_id", "pixels", "label"])
        ids = table.column("image_id").to_pylist()
        own = table.column("label").to_pylist()
        final = [overrides[i][0] if i in overrides else lab for i, lab in zip(ids, own, strict=True)]
        mask = np.array([lab is not None for lab in final], dtype=bool)
        if mask.any():
            import pyarrow as pa

            images.append(shard_pixels(table.filter(pa.array(mask)), task))
            labels.append(np.array([lab for lab in final if lab is not None], dtype=np.uint8))
            used.add(key)
            used.update(overrides[i][1] for i in ids if i in overrides)
    if not images:
        return np.zeros((0, *_spec(task).shape), np.uint8), np.zeros((0,), np.uint8), []
    return np.concatenate(images), np.concatenate(labels), sorted(used)
