"""``mlcore ingest repair``: bring a lake curated before image-id claims up to date, once,
after upgrading.

Batches are visited in ledger order (ingestion time, then batch id). Every image id in a
batch's shards is claimed for that batch; ids another batch claimed first are duplicates
the old check-then-write race let in, and are dropped from the later batch's shards (its
ledger entry, which is also the batch's commit, is corrected and names them in
``duplicate_keys``). Running it again changes nothing. This reads every shard: it is a
one-off repair, not a per-run step.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from mlcore.data import read_shard
from mlcore.layout import LEDGER, ledger_key

if TYPE_CHECKING:
    from mlcore.claims import Claims
    from mlcore.storage import Lake


def repair_curated(lake: Lake, claims: Claims) -> dict[str, int]:
    """Claim and de-duplicate every ingested batch; returns what was done."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlcore.ingest import BatchReport, _dump
    from mlcore.storage import parquet_bytes

    ledgers = []
    for key in lake.list(LEDGER):
        if key.endswith(".json"):
            report = BatchReport.from_json(lake.read_bytes(key))
            if report.status == "ingested":
                ledgers.append(report)
    done: Counter[str] = Counter()
    for report in sorted(ledgers, key=lambda r: (r.ingested_at, r.batch_id)):
        kept, dropped_keys = [], []
        for shard in report.shards:
            if not lake.exists(shard):
                continue
            table = read_shard(lake, shard)
            taken = claims.claim(report.batch_id, table.column("image_id").to_pylist())
            done["claimed"] += table.num_rows - len(taken)
            if taken:
                dup = pc.is_in(table.column("image_id"), value_set=pa.array(sorted(taken)))
                dropped_keys += table.filter(dup).column("source_key").to_pylist()
                table = table.filter(pc.invert(dup))
                if table.num_rows:
                    lake.write_bytes(shard, parquet_bytes(table))
                else:
                    lake.delete(shard)
            if table.num_rows:
                kept.append(shard)
        if dropped_keys:
            report.shards = kept
            report.accepted -= len(dropped_keys)
            labels = [read_shard(lake, k, ["label"]).column("label") for k in kept]
            report.labeled = sum(len(col) - col.null_count for col in labels)
            report.duplicate_keys = sorted(report.duplicate_keys + dropped_keys)
            report.duplicates = len(report.duplicate_keys)
            lake.write_bytes(ledger_key(report.batch_id), _dump(report))
            done["duplicates_removed"] += len(dropped_keys)
    done["batches"] = len(ledgers)
    return {k: done[k] for k in ("batches", "claimed", "duplicates_removed")}


