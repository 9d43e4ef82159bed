"""
### Ingest landing batches

Finds batches in `landing/<batch_id>/` that carry a `_READY` marker and have not been
ingested, and maps one task per batch: profile every file safely, validate the profiles
with Great Expectations, quarantine rejects with a reason, pack accepted images into
curated Parquet shards, and record the batch in the ingestion ledger.

A failed batch-level check fails that batch's task; its log names the failed
expectations and links the Data Docs page. A batch that cannot be ingested at all (a bad
batch id, an unreadable `labels.csv`, an error that outlived every retry) gets a ledger
entry with its reason and fails once: later runs do not take it up again. `publish`
announces the batches that succeeded even when another failed; `all_batches_ok` keeps the
run red when any batch failed. Trigger with `batch_id` to ingest one batch.
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
    def find_ready_batches(params=None, dag_run=None) -> list[str]:
        """Batches with a `_READY` marker whose listing was never handled (new or changed)."""
        from mlcore import audit
        from mlcore.ingest import ready_batches
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        lake = open_lake(get_settings())
        # The run's 10-minute slot picks which ledgered batch is re-verified (round robin).
        ready = ready_batches(lake, tick=int(dag_run.run_after.timestamp()) // 600)
        wanted = (params or {}).get("batch_id")
        if wanted and dag_run.run_type == "manual":
            user = getattr(dag_run, "triggering_user_name", None) or "unknown"
            # When it happened (run_after is the trigger time), not the logical date.
            audit.record(lake, user, dag_run.run_after, action="manual_trigger",
                         target=f"ingest_landing/{wanted}", reason="manual trigger with params",
                         params=dict(params), run_id=dag_run.run_id)
        return [b for b in ready if b == wanted] if wanted else ready

    @task(map_index_template="{{ batch_id }}")
    def ingest(batch_id: str, logical_date=None) -> dict:
        """Profile, validate, quarantine and curate one batch; returns its counts."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from mlcore.data_profile import reference_profile
        from mlcore.ingest import BatchRejected, ingest_batch, record_failure
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake
        from mlcore.validation import ValidationFailed

        context = get_current_context()
        context["batch_id"] = batch_id  # names the mapped task in the UI
        settings = get_settings()
        lake = open_lake(settings)
        ti = context["ti"]
        try:
            # Drift is judged against the champion's training data profile (base data if none).
            return ingest_batch(settings, lake, batch_id, logical_date=logical_date,
                                reference=reference_profile(settings, lake)).summary()
        except ValidationFailed as exc:
            # The plugin's "Data Docs" button on this task reads this key.
            ti.xcom_push(key="data_docs_url", value=exc.docs_url)
            raise AirflowFailException(str(exc)) from exc  # a retry cannot fix bad data
        except BatchRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            if ti.try_number <= ti.max_tries:
                raise  # transient (an S3 outage, a lost worker): the next try may succeed
            # It outlived every retry: record it, so later runs do not fail on it forever.
            record_failure(lake, batch_id, logical_date=logical_date, exc=exc)
            raise AirflowFailException(f"batch {batch_id!r} failed on every try and is recorded "
                                       f"as ingest_error: {exc}") from exc

    @task(outlets=[CURATED_IMAGES, LABELED_IMAGES], trigger_rule="all_done")
    def publish(reports: list[dict], outlet_events=None) -> dict:
        """Announce the batches that succeeded (a failed one has no report) to the DAGs that
        wait on the Assets; nothing new, no event."""
        from airflow.sdk.exceptions import AirflowSkipException

        done = [r for r in reports if r]
        totals = {k: sum(r[k] for r in done) for k in ("accepted", "labeled", "quarantined")}
        if not totals["accepted"] and not totals["labeled"]:
            raise AirflowSkipException("no new curated or labeled images")
        outlet_events[CURATED_IMAGES].extra = {"accepted": totals["accepted"]}
        outlet_events[LABELED_IMAGES].extra = {"labeled": totals["labeled"]}
        return totals

    @task
    def all_batches_ok(reports: list[dict]) -> int:
        """Runs only when every batch succeeded: a failed batch keeps the run red."""
        return len(reports)

    reports = ingest.expand(batch_id=find_ready_batches())
    publish(reports)
    all_batches_ok(reports)


ingest_landing()
