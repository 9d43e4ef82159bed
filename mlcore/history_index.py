"""Rebuild the incremental state that keeps per-run work flat (``mlcore ingest rebuild-index``).

The label index (``mlcore.label_index``), the realized-accuracy state
(``mlcore.monitor.fold_realized``) and the Data Docs index (``mlcore.data_docs_site``) are
each built automatically on first use; this rebuilds all three at once from the lake
(after an upgrade, a restore or a manual repair), and re-verifies every ledgered landing
batch, which discovery otherwise does one per run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake


def rebuild(settings: Settings, lake: Lake) -> dict:
    """Drop and rebuild the indexes; returns the figures they now give."""
    from mlcore import label_index
    from mlcore.ingest import ready_batches
    from mlcore.monitor import fold_realized
    from mlcore.validation import rebuild_docs_index

    label_index.drop(settings)
    labeled = label_index.labeled_count(settings, lake)
    realized = fold_realized(lake, rebuild=True)
    return {"labeled_images": labeled,
            "realized": {v: {"labeled_predictions": n, "right": r} for v, (n, r) in realized.items()},
            "batches_due": ready_batches(lake, recheck_all=True),
            "data_docs_validations": rebuild_docs_index(lake)}
