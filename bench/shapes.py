"""Shapes: the served int8 model's holdout accuracy and wall time on generated batches.

Writes the demo's shapes landing batches (``mlcore.demo.seed_sample_batches``: labeled
training batches and a batch marked holdout) into a temporary lake, ingests them with the
real ingestion code, then ``build_training_data`` -> ``train`` -> ``build_package`` with
the demo's shapes settings (``mlcore.demo.demo_settings``). No Airflow, no MLflow. The
documented figure in docs/tasks.md comes from this script.

    MLCORE_TASK=shapes .venv/bin/python bench/shapes.py [--epochs E]
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import _report

GOAL_ACCURACY = 0.9
GOAL_SECONDS = 120


def main() -> None:
    p = _report.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None, help="override train_epochs")
    args = p.parse_args()
    if os.environ.get("MLCORE_TASK") != "shapes":
        raise SystemExit("run with MLCORE_TASK=shapes (a shapes deployment)")

    from mlcore.demo import demo_settings, seed_sample_batches
    from mlcore.ingest import ingest_batch
    from mlcore.package import build_package
    from mlcore.storage import open_lake
    from mlcore.train import build_training_data, train

    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        overrides = {"train_epochs": args.epochs} if args.epochs else {}
        settings = demo_settings("test", "shapes", home=Path(tmp), **overrides)
        lake = open_lake(settings)
        report = _report.Report("shapes", "shapes: generated batches, no base data, batch holdout", {
            "epochs": settings.train_epochs, "batch_size": settings.train_batch_size,
            "learning_rate": settings.learning_rate, "seed": settings.seed,
            "torch_threads_setting": settings.torch_threads,
        })
        with _report.timer() as t_seed:
            batch_ids = seed_sample_batches(settings, per_batch=12)
            for batch_id in batch_ids:
                ingest_batch(settings, lake, batch_id, logical_date=datetime(2026, 11, 22, tzinfo=UTC))
        with _report.timer() as t_data:
            data = build_training_data(settings, lake)
        with _report.timer() as t_train:
            result = train(settings, data, progress=lambda e, row: print(
                f"  epoch {e}/{settings.train_epochs}: holdout {row['holdout_accuracy']:.4f}, "
                f"{row['seconds']:.1f} s", flush=True))
        with _report.timer() as t_package:
            package = build_package(settings, result, data)
        acc = package.int8.accuracy
        wall = t_data.seconds + t_train.seconds + t_package.seconds
        report.add("holdout_accuracy", "holdout accuracy (served int8 graph)", acc)
        report.add("fp32_holdout_accuracy", "holdout accuracy (fp32)", package.fp32.accuracy)
        report.add("agreement", "int8/fp32 agreement", package.agreement)
        report.add("train_images", "train images", len(data.images))
        report.add("holdout_images", "holdout images", len(data.holdout_images))
        report.add("seed_ingest_s", "generate + ingest the batches (untimed goal)",
                   t_seed.seconds, "s")
        report.add("wall_s", "wall time (data + train + package)", wall, "s")
        report.add("train_s", "  train()", t_train.seconds, "s")
        report.add_peak_rss()
        report.goal(f"accuracy >= {GOAL_ACCURACY} within {GOAL_SECONDS} s",
                    acc >= GOAL_ACCURACY and wall <= GOAL_SECONDS,
                    f"accuracy {acc:.4f} in {wall:.0f} s")
        report.finish()


if __name__ == "__main__":
    main()
