"""``batch.json``: what an uploader says about a batch as a whole (``docs/tasks.md``).

Optional, next to ``labels.csv`` in ``landing/<batch_id>/``. Today it says one thing:
``{"holdout": true}`` marks a labeled batch as frozen holdout for a task whose spec has
``holdout = "batches"``; its images are curated apart (``curated/holdout``), never
trained on and never scored. The file is accounted for like ``labels.csv`` (in the
batch's content hash, not an image); one that is not a JSON object with known fields
rejects the batch as a whole (``batch_meta_unreadable``), since ingesting a holdout batch
as training data by mistake would leak the holdout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlcore.layout import BATCH_META_FILE as META_FILE  # noqa: F401 (ingest, shapes)

MAX_META_BYTES = 64 << 10


class BatchMetaUnreadable(ValueError):
    """``batch.json`` is not a valid batch metadata file; the message says why."""


@dataclass(frozen=True)
class BatchMeta:
    holdout: bool = False


def parse_batch_meta(raw: bytes) -> BatchMeta:
    """``batch.json`` bytes -> :class:`BatchMeta`; :class:`BatchMetaUnreadable` otherwise."""
    if len(raw) > MAX_META_BYTES:
        raise BatchMetaUnreadable(f"{len(raw)} bytes > {MAX_META_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchMetaUnreadable(f"not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BatchMetaUnreadable(f"a JSON object is expected, not {type(data).__name__}")
    unknown = sorted(set(data) - {"holdout"})
    if unknown:
        raise BatchMetaUnreadable(f"unknown fields {unknown}; known: ['holdout']")
    holdout = data.get("holdout", False)
    if not isinstance(holdout, bool):
        raise BatchMetaUnreadable(f"holdout must be true or false, not {holdout!r}")
    return BatchMeta(holdout=holdout)
