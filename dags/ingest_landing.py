"""
### Ingest landing batches

Finds batches in `landing/<batch_id>/` that carry a `_READY` marker and have not been
ingested, and maps one task per batch: profile every file safely, validate the profiles
with Great Expectations, quarantine rejects with a reason, pack accepted images into
curated Parquet shards, and record the batch in the ingestion ledger.

A failed batch-level check fails that batch's task; its log names the failed
expectations and links the Data Docs page. Trigger with `batch_id` to ingest one batch.
"""

from pathlib import Path

from airflow.sdk import Param, dag, task

from mlcore.assets import CURATED_IMAGES, LABELED_IMAGES
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id=Path(__file__).stem,
    schedule="*/10 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlcore", "ingestion"],
    doc_md=__doc__,
    params={
        "batch_id": Param(
            "",
            type="string",
            title="Batch id",
            description="Ingest only this batch (empty: every ready batch).",
        )
    },
)
def ingest_landing():
    @task
    def find_ready_batches(params=None, dag_run=None, logical_date=None) -> list[str]:
        """Batches with a `_READY` marker and no ledger entry."""
        from mlcore import audit
        from mlcore.ingest import ready_batches
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        lake = open_lake(get_settings())
        ready = ready_batches(lake)
        wanted = (params or {}).get("batch_id")
        if wanted and dag_run.run_type == "manual":
            user = getattr(dag_run, "triggering_user_name", None) or "unknown"
            audit.record(lake, user, logical_date, "manual_trigger", f"ingest_landing/{wanted}",
                         "manual trigger with params", params=dict(params), run_id=dag_run.run_id)
        return [b for b in ready if b == wanted] if wanted else ready

    @task(map_index_template="{{ batch_id }}")
    def ingest(batch_id: str, logical_date=None) -> dict:
        """Profile, validate, quarantine and curate one batch; returns its counts."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from mlcore.data_profile import reference_profile
        from mlcore.ingest import ingest_batch
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake
        from mlcore.validation import ValidationFailed

        context = get_current_context()
        context["batch_id"] = batch_id  # names the mapped task in the UI
        settings = get_settings()
        try:
            lake = open_lake(settings)
            # Drift is judged against the champion's training data profile (base data if none).
            return ingest_batch(lake, settings, batch_id, logical_date,
                                reference_profile(settings, lake)).summary()
        except ValidationFailed as exc:
            # The plugin's "Data Docs" button on this task reads this key.
            context["ti"].xcom_push(key="data_docs_url", value=exc.docs_url)
            raise AirflowFailException(str(exc)) from exc  # a retry cannot fix bad data

    @task(outlets=[CURATED_IMAGES, LABELED_IMAGES])
    def publish(reports: list[dict], outlet_events=None) -> dict:
        """Announce new curated (and labeled) images to DAGs that wait on the Assets."""
        totals = {k: sum(r[k] for r in reports) for k in ("accepted", "labeled", "quarantined")}
        outlet_events[CURATED_IMAGES].extra = {"accepted": totals["accepted"]}
        outlet_events[LABELED_IMAGES].extra = {"labeled": totals["labeled"]}
        return totals

    publish(ingest.expand(batch_id=find_ready_batches()))


ingest_landing()
