"""
### Nightly batch scoring

Scores the unlabeled images ingested during the run's data interval with the `champion`
model, pinned once per run, into the `predictions` Delta table. Mapped tasks score shards in
parallel, each into a new data file of partition `dt=<interval start>` (and, when a
`challenger` is pinned, into the shadow table from the same read), and return the drift
profile of what they scored, which monitoring folds: each shard is read once per run.
`commit` validates the files with Great Expectations and replaces that partition in one
atomic Delta commit (a rerun supersedes it; readers see one snapshot or the next, never a
mix). The `predictions` Asset is
updated only when a partition is committed. `vacuum` deletes files that no snapshot inside
the retention (`MLCORE_PREDICTIONS_RETENTION_HOURS`) needs.

Manual runs can score another day (`date`) or rescore everything ingested up to the
interval's end (`rescore_all`, e.g. after a rollback) into the run's partition.

One DAG per deployed task (`docs/tasks.md`): the default task's is `batch_score`, task
`t`'s is `batch_score__t` (model `t-classifier`, table `tasks/t/predictions/`).
"""

from pathlib import Path

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from mlcore.assets import task_assets
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE, TaskDag, nightly_deadline, task_dags


def batch_score(task_dag: TaskDag):
    @dag(
        dag_id=task_dag.dag_id,
        schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        deadline=nightly_deadline(runs_at="03:00"),
        tags=["mlcore", "scoring", *task_dag.tags],
        doc_md=__doc__,
        params={
            "date": Param("", type="string", title="Partition date",
                          description="Score this day (YYYY-MM-DD) instead of the run's interval."),
            "rescore_all": Param(False, type="boolean", title="Rescore everything",
                                 description="Score every unlabeled image ingested before the "
                                             "interval's end, into this run's partition."),
        },
    )
    def batch_score():
        @task
        def resolve_window(params=None, dag_run=None, data_interval_start=None,
                           data_interval_end=None, logical_date=None):
            """The images this run scores and the partition it writes (params may change both)."""
            from mlcore.score import ScoringWindow

            window = ScoringWindow.resolve(data_interval_start, data_interval_end,
                                           on_date=params.get("date", ""),
                                           rescore_all=params.get("rescore_all", False))
            if dag_run.run_type == "manual" and (params.get("date") or params.get("rescore_all")):
                from mlcore import audit
                from mlcore.runtime import runtime

                audit.record_manual_trigger(runtime(task_dag.task).lake, dag_run,
                                            target=f"batch_score/{window.day}", params=params)
            return window

        @task
        def pin_champion(window, run_id=None):
            """Resolve `champion` (and `challenger`, if any) to one version each: the run every
            shard of it scores."""
            from mlcore.runtime import runtime
            from mlcore.score import pin_run

            return pin_run(runtime(task_dag.task), window=window, run_id=run_id)

        @task
        def list_input_shards(run) -> list[str]:
            """Curated shards that may hold images ingested in the window."""
            from mlcore.runtime import runtime
            from mlcore.score import input_shards

            return input_shards(runtime(task_dag.task), run)

        @task
        def score_shard(shard: str, run):
            """Score one shard (with the challenger too, if pinned) into new data files of the
            run's partition (not yet visible), profiling it for drift from the same read."""
            from mlcore.runtime import runtime
            from mlcore.score import score_shard as score

            return score(runtime(task_dag.task), run, shard=shard)

        @task(outlets=[task_assets(task_dag.scope).predictions], trigger_rule="none_failed")
        def commit(run, scored: list, shards: list[str]):
            """Check the predictions with GX, then replace the partition in one Delta commit."""
            from mlcore.runtime import runtime
            from mlcore.score import commit as commit_run

            return commit_run(runtime(task_dag.task), run, scored=list(scored or []), shards=shards)

        @task
        def monitor_drift(run, scored: list, committed):
            """Prediction and input drift of the committed partition vs the holdout, folded from
            the profiles the scoring tasks returned."""
            from mlcore.monitor import monitor_partition
            from mlcore.runtime import runtime

            return monitor_partition(runtime(task_dag.task), run, scored=list(scored or []))

        @task
        def shadow_score(run, scored: list, shards: list[str], committed):
            """Commit the `challenger`'s shadow predictions (if one is pinned); record agreement."""
            from mlcore.runtime import runtime
            from mlcore.shadow import commit_shadow

            return commit_shadow(runtime(task_dag.task), run, scored=list(scored or []), shards=shards)

        @task
        def measure_realized_accuracy(committed) -> list[dict]:
            """Accuracy of past predictions whose labels arrived later (feedback/labels/)."""
            from mlcore.monitor import realized_accuracy
            from mlcore.runtime import runtime

            return realized_accuracy(runtime(task_dag.task))

        @task(trigger_rule="all_done")
        def vacuum() -> dict:
            """Delete files no snapshot inside the retention needs (superseded or never committed)."""
            from mlcore.predictions import PREDICTIONS as TABLE
            from mlcore.predictions import SHADOW
            from mlcore.predictions import vacuum as vacuum_table
            from mlcore.runtime import runtime

            settings, lake = runtime(task_dag.task).settings, runtime(task_dag.task).lake
            hours = settings.predictions_retention_hours
            return {t: len(vacuum_table(lake, table=t, retention_hours=hours)) for t in (TABLE, SHADOW)}

        window = resolve_window()
        run = pin_champion(window)
        shards = list_input_shards(run)
        scored = score_shard.partial(run=run).expand(shard=shards)
        committed = commit(run, scored, shards)
        monitor_drift(run, scored, committed)
        shadow_score(run, scored, shards, committed)
        measure_realized_accuracy(committed)
        committed >> vacuum()  # a sibling, not the last task: a failed monitor still fails the run

    return batch_score()


for _task_dag in task_dags(Path(__file__).stem):
    batch_score(_task_dag)
