"""Report which lake objects a task read and wrote to Airflow's hook-lineage collector.

Airflow's OpenLineage provider turns these into the inputs and outputs of each task's
OpenLineage events (transport configured in ``airflow.cfg`` / ``AIRFLOW__OPENLINEAGE__*``).
Outside an Airflow task (tests, the CLI) this is a no-op.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlcore.storage import Lake

log = logging.getLogger(__name__)


def report(lake: Lake, inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Record lake keys (objects or prefixes) as this task's lineage inputs and outputs."""
    # A task process has imported the Task SDK already; anywhere else (the CLI, benchmarks,
    # unit tests) importing Airflow just to find there is no task would cost seconds.
    if "airflow.sdk" not in sys.modules:
        return
    from airflow.sdk.lineage import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    try:
        for key in inputs:
            collector.add_input_asset(context=lake, uri=lake.url(key))
        for key in outputs:
            collector.add_output_asset(context=lake, uri=lake.url(key))
    except Exception:  # lineage is metadata: it must never fail the work it describes
        log.warning("could not record lineage for %s -> %s", list(inputs), list(outputs),
                    exc_info=True)
