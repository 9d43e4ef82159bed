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

One DAG per deployed task (`docs/tasks.md`): the default task's is `ingest_landing` and
reads `landing/`, task `t`'s is `ingest_landing__t` and reads `tasks/t/landing/`.
"""

from pathlib import Path

from airflow.sdk import Param, dag, task

from mlcore.assets import task_assets
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE, TaskDag, task_dags


def ingest_landing(task_dag: TaskDag):
    assets = task_assets(task_dag.scope)

    @dag(
        dag_id=task_dag.dag_id,
        schedule="*/10 * * * *",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlcore", "ingestion", *task_dag.tags],
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
            from mlcore.ingest_steps import find_ready_batches
            from mlcore.runtime import runtime

            return find_ready_batches(runtime(task_dag.task), dag_run, params)

        @task(map_index_template="{{ batch_id }}")
        def ingest(batch_id: str, ti=None, logical_date=None):
            """Profile, validate, quarantine and curate one batch; returns its counts."""
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException

            from mlcore.ingest import BatchRejected
            from mlcore.ingest_steps import IngestFailedEveryTry, ingest_ready_batch
            from mlcore.runtime import runtime
            from mlcore.validation import ValidationFailed

            get_current_context()["batch_id"] = batch_id  # names the mapped task in the UI
            try:
                return ingest_ready_batch(runtime(task_dag.task), batch_id, logical_date=logical_date,
                                          last_try=ti.try_number > ti.max_tries)
            except ValidationFailed as exc:
                # The plugin's "Data Docs" button on this task reads this key.
                ti.xcom_push(key="data_docs_url", value=exc.docs_url)
                raise AirflowFailException(str(exc)) from exc  # a retry cannot fix bad data
            except (BatchRejected, IngestFailedEveryTry) as exc:
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[assets.curated_images, assets.labeled_images], trigger_rule="all_done")
        def publish(outcomes: list, outlet_events=None):
            """Announce the batches that succeeded (a failed one has no outcome) to the DAGs
            that wait on the Assets; nothing new, no event."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlcore.ingest_steps import totals

            added = totals(outcomes)
            if not added.anything_new:
                raise AirflowSkipException("no new curated or labeled images")
            outlet_events[assets.curated_images].extra = {"accepted": added.accepted}
            outlet_events[assets.labeled_images].extra = {"labeled": added.labeled}
            return added

        @task
        def all_batches_ok(outcomes: list) -> int:
            """Runs only when every batch succeeded: a failed batch keeps the run red."""
            return len(outcomes)

        outcomes = ingest.expand(batch_id=find_ready_batches())
        publish(outcomes)
        all_batches_ok(outcomes)

    return ingest_landing()


for _task_dag in task_dags(Path(__file__).stem):
    ingest_landing(_task_dag)
