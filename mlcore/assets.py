"""The Airflow Assets each deployed task produces, with stable names and URIs.

The default task keeps the names and URIs it always had (``curated_images``,
``mlcore://lake/curated/images``); task ``t``'s carry it: ``curated_images__t`` at
``mlcore://lake/tasks/t/curated/images`` (its lake prefix). Imported by DAG files only (it
needs Airflow, nothing heavy).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import Asset


@dataclass(frozen=True)
class TaskAssets:
    curated_images: Asset
    labeled_images: Asset
    predictions: Asset


def task_assets(scope: str = "") -> TaskAssets:
    """The Assets of the task ``scope`` (``""``: the default task; see ``Settings.task_scope``)."""
    suffix, root = (f"__{scope}", f"tasks/{scope}/") if scope else ("", "")
    return TaskAssets(
        curated_images=Asset(name=f"curated_images{suffix}",
                             uri=f"mlcore://lake/{root}curated/images"),
        labeled_images=Asset(name=f"labeled_images{suffix}",
                             uri=f"mlcore://lake/{root}curated/images/labeled"),
        predictions=Asset(name=f"predictions{suffix}", uri=f"mlcore://lake/{root}predictions"),
    )
