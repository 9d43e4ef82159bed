"""Ingestion throughput: a landing batch of N real PNG files -> curated shards, end to end.

Setup (untimed, in a separate process so it does not count towards peak RSS): the first N
Fashion-MNIST train images are PNG-encoded with ``mlcore.images.encode_png`` and written to
``landing/<batch>/`` of a temporary LocalLake, followed by ``_READY``.

Timed: one call of ``mlcore.ingest.ingest_batch``. Wrappers installed in this process only
attribute time to Great Expectations (``run_suite``), to profiling/decoding
(``profile_image``), to reading landing objects, to the duplicate lookup and to writing
shards; the rest (listing, hashing, dedupe, building frames, quarantine, ledger) is "other".

    .venv/bin/python bench/ingest.py [--n 10000]
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import _report

GOAL_FILES_PER_S = 2_000
LOGICAL_DATE = datetime(2024, 1, 1, tzinfo=UTC)
TRAIN_IMAGES = 60_000


def seed_landing(lake_root: str, batch_id: str, n: int) -> dict:
    """Write N PNGs and ``_READY`` into ``landing/<batch_id>/`` (runs in a child process)."""
    from mlcore.data import load_fashion_mnist
    from mlcore.images import encode_png
    from mlcore.layout import landing_file, ready_marker
    from mlcore.settings import Settings
    from mlcore.storage import LocalLake

    started = time.perf_counter()
    images, _ = load_fashion_mnist(Settings().fmnist_dir, "train")
    lake = LocalLake(Path(lake_root))
    total = 0
    for i in range(n):
        img = images[i % TRAIN_IMAGES]
        if i >= TRAIN_IMAGES:  # beyond the train split: flip one pixel so content stays unique
            img = img.copy()
            img.flat[(i // TRAIN_IMAGES) % img.size] ^= 0xFF
        data = encode_png(img)
        total += len(data)
        lake.write_bytes(landing_file(batch_id, f"img-{i:07d}.png"), data)
    lake.write_bytes(ready_marker(batch_id), b"")
    return {"files": n, "bytes": total, "seconds": time.perf_counter() - started}


def main() -> None:
    args = _report.parser(__doc__.splitlines()[0], default_n=10_000).parse_args()
    n = args.n
    batch_id = f"bench-{n}"

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        lake_root = Path(tmp) / "lake"
        report = _report.Report("ingest", f"ingest: {n:,} PNG files, landing -> curated", {
            "n": n, "batch_id": batch_id, "lake": "LocalLake (temp dir)",
            "lake_fs": _report.fs_type(Path(tmp)),
        })
        seeded, setup_rss = _report.run_in_child(seed_landing, str(lake_root), batch_id, n)

        with _report.timer() as imports:  # a fresh Airflow task pays these once per process
            import great_expectations  # noqa: F401
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401

            import mlcore.ingest
            from mlcore.settings import Settings
            from mlcore.storage import LocalLake

        settings = Settings(home=Path(tmp), lake_uri=str(lake_root))
        lake = LocalLake(lake_root)
        sw = _report.Stopwatch()
        sw.patch(mlcore.ingest, "run_suite", "gx")
        sw.patch(mlcore.ingest, "profile_image", "profile")
        import mlcore.claims

        sw.patch(mlcore.claims.Claims, "claim", "known_ids")
        sw.patch(mlcore.ingest, "stage_shards", "shards")
        lake.read_bytes = sw.wrap(lake.read_bytes, "read")
        try:
            with _report.timer() as total:
                result = mlcore.ingest.ingest_batch(settings, lake, batch_id, logical_date=LOGICAL_DATE)
        finally:
            sw.restore()
        s = sw.seconds
        other = total.seconds - sum(s.values())

        report.add("files", "files in batch", result.files)
        report.add("landing_mib", "landing size", round(seeded["bytes"] / _report.MIB, 2), "MiB")
        report.add("accepted", "accepted / quarantined / duplicates",
                   f"{result.accepted:,} / {result.quarantined:,} / {result.duplicates:,}")
        report.add("status", "batch status", result.status)
        report.add("files_per_s", "throughput (ingest_batch)", result.files / total.seconds,
                   "files/s")
        report.add("total_s", "ingest_batch wall time", total.seconds, "s")
        report.add("gx_s", "  in Great Expectations (run_suite x"
                   f"{sw.calls['gx']})", s["gx"], "s")
        report.add("profile_s", "  profiling/decoding (profile_image)", s["profile"], "s")
        report.add("read_s", "  reading landing objects", s["read"], "s")
        report.add("known_ids_s", "  duplicate claims (Claims.claim)", s["known_ids"], "s")
        report.add("shards_s", "  writing curated shards", s["shards"], "s")
        report.add("other_s", "  other (list, hash, frames, quarantine, ledger)", other, "s")
        report.add("imports_s", "one-off imports (GX, pandas, pyarrow; untimed)",
                   imports.seconds, "s")
        report.add("files_per_s_cold", "throughput incl. one-off imports",
                   result.files / (total.seconds + imports.seconds), "files/s")
        report.add("setup_s", "setup: encode + write PNGs (untimed, child)",
                   seeded["seconds"], "s")
        report.add_peak_rss()
        report.add("setup_peak_rss_bytes", "peak RSS of the setup child (untimed)", setup_rss,
                   "B")
        report.note("peak RSS (this process) covers the imports + ingest_batch (setup ran in "
                    "a separate process).")
        if result.quarantined or result.duplicates:
            report.note("some Fashion-MNIST images were quarantined or are duplicates; they "
                        "are still fully processed and counted in files/s.")

        rate = result.files / total.seconds
        report.goal(f">= {GOAL_FILES_PER_S:,} files/s", rate >= GOAL_FILES_PER_S,
                    f"{rate:,.0f} files/s over {result.files:,} files (imports excluded)")
        report.finish()


if __name__ == "__main__":
    main()
