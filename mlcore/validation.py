"""Great Expectations: the committed suites decide what is accepted, and why.

We call GX directly (the Airflow GX provider lags Airflow 3). The context is ephemeral
but its validation results and Data Docs stores live in the lake, so every worker writes
to one shared history and the Data Docs index lists the latest ``DOCS_INDEX_RECENT``
validations (every page stays in the lake, linked from its ledger entry and task).
Validation always uses ``result_format=COMPLETE`` keyed by ``key``: GX otherwise reports
only a sample of failing rows, and we must quarantine exactly the failing files.

Every string GX renders from data (file keys, batch ids as run names) is neutralised first
and restored when read back (:mod:`mlcore.data_docs`), and the Data Docs views run no
inline script (:mod:`mlcore.data_docs_views`): an uploaded name never becomes markup.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlcore.data_docs import neutralise, neutralise_frame, page_url, restore
from mlcore.layout import DATA_DOCS, VALIDATION_RESULTS, validation_page

if TYPE_CHECKING:
    import pandas as pd

    from mlcore.storage import Lake

log = logging.getLogger(__name__)

DOCS_INDEX_RECENT = 1000  # validations the Data Docs index lists (the newest)


@dataclass
class ValidationOutcome:
    """One suite run: overall success, failing keys with reason codes, and where to read more."""

    suite: str
    success: bool
    failed_expectations: list[str]
    failures: dict[str, list[str]] = field(default_factory=dict)  # key -> reason codes
    docs_key: str | None = None  # lake key of this run's Data Docs page
    statistics: dict[str, Any] = field(default_factory=dict)


class ValidationFailed(RuntimeError):
    """A batch- or partition-level suite failed; the message names the rules and the docs page."""

    def __init__(self, subject: str, failed_expectations: list[str], docs_url: str,
                 docs_location: str):
        self.subject, self.failed_expectations = subject, failed_expectations
        self.docs_url, self.docs_location = docs_url, docs_location
        super().__init__(
            f"{subject} failed validation: {', '.join(failed_expectations)}. "
            f"Data Docs: {docs_url} (stored at {docs_location})"
        )

    @classmethod
    def for_page(cls, subject: str, failed_expectations: list[str], docs_key: str, *, lake: Lake,
                 data_docs_url: str) -> ValidationFailed:
        """Name the Data Docs page both as the Airflow-served link (percent-encoded) and as
        its lake location."""
        return cls(subject, failed_expectations, page_url(data_docs_url, docs_key),
                   lake.url(docs_key))


def _context(lake: Lake):
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

    from mlcore.data_docs_site import SITE_BUILDER
    from mlcore.data_docs_views import INDEX_VIEW, VIEW
    from mlcore.gx_store import store_backend_config

    memory = {"class_name": "InMemoryStoreBackend"}
    config = DataContextConfig(
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": memory},
            "validation_results_store": {
                "class_name": "ValidationResultsStore",
                "store_backend": store_backend_config(lake, VALIDATION_RESULTS),
            },
            "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": memory},
            "validation_definition_store": {
                "class_name": "ValidationDefinitionStore",
                "store_backend": memory,
            },
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            "lake": {
                **SITE_BUILDER,  # renders what a validation adds, not the site's history
                "show_how_to_buttons": False,
                "store_backend": store_backend_config(lake, DATA_DOCS),
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                       "view": INDEX_VIEW,
                                       "validation_results_limit": DOCS_INDEX_RECENT},
                "site_section_builders": {"expectations": {"view": VIEW},
                                          "validations": {"view": VIEW},
                                          "profiling": {"view": VIEW}},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def rebuild_docs_index(lake: Lake) -> int:
    """Rebuild the Data Docs index from the stored results (``rebuild-index``); rows listed."""
    ctx = _context(lake)
    site = ctx._init_site_builder_for_data_docs_site_creation(  # GX's own factory for a site
        site_name="lake", site_config=ctx.variables.data_docs_sites["lake"])
    return site.reindex()


def load_suite(suites_dir: Path, name: str):
    import great_expectations as gx

    spec = json.loads((suites_dir / f"{name}.json").read_text())
    return gx.ExpectationSuite(
        name=spec["name"],
        expectations=[
            gx.expectations.registry.get_expectation_impl(e["type"])(**e["kwargs"], meta=e["meta"])
            for e in spec["expectations"]
        ],
        meta=spec.get("meta", {}),
    )


def run_suite(
    lake: Lake,
    suites_dir: Path,
    suite_name: str,
    *,
    frame: pd.DataFrame,
    run_name: str,
    run_time: datetime,
    parameters: dict[str, Any] | None = None,
    key_column: str = "key",
) -> ValidationOutcome:
    """Validate ``frame`` against a committed suite, store the result and rebuild Data Docs."""
    import great_expectations as gx
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
    from great_expectations.core.run_identifier import RunIdentifier

    # GX fingerprints every in-memory frame under 1 GB by hashing all its rows, which
    # doubles the peak memory of validating a night's predictions; nothing we use reads it.
    pandas_engine.HASH_THRESHOLD = 0
    ctx = _context(lake)
    suite = ctx.suites.add(load_suite(suites_dir, suite_name))
    batch_def = (
        ctx.data_sources.add_pandas("lake")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite)
    )
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [key_column],
            },
        )
    )
    result = checkpoint.run(
        batch_parameters={"dataframe": neutralise_frame(frame)},
        expectation_parameters=parameters or {},
        run_id=RunIdentifier(run_name=neutralise(run_name), run_time=run_time),
    )
    (identifier, run_result), = result.run_results.items()
    failures: dict[str, list[str]] = {}
    failed = []
    for r in run_result.results:
        if r.success:
            continue
        reason = r.expectation_config.meta.get("reason", r.expectation_config.type)
        failed.append(f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')})"
                      f" [{reason}]")
        for row in r.result.get("unexpected_index_list") or []:
            failures.setdefault(restore(str(row[key_column])), []).append(reason)
    docs_key = validation_page("/".join(identifier.to_tuple()))
    log.info("suite %s on %s: success=%s, %d failing rows", suite_name, run_name,
             result.success, len(failures))
    return ValidationOutcome(
        suite=suite_name,
        success=bool(result.success),
        failed_expectations=failed,
        failures=failures,
        docs_key=docs_key,
        statistics=dict(run_result.statistics),
    )
