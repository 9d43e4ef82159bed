"""
### Nightly batch scoring

Scores the unlabeled images ingested during the run's data interval with the `champion`
model, pinned once per run, into the `predictions` Delta table. Mapped tasks score shards in
parallel, each into a new data file of partition `dt=<interval start>`; `commit` validates
them with Great Expectations and replaces that partition in one atomic Delta commit (a rerun
supersedes it; readers see one snapshot or the next, never a mix). The `predictions` Asset is
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
                           data_interval_end=None, logical_date=None) -> dict:
            """The images this run scores and the partition it writes (params may change both)."""
            from mlcore.score import ScoringWindow

            window = ScoringWindow.resolve(data_interval_start, data_interval_end,
                                           params.get("date", ""), params.get("rescore_all", False))
            if dag_run.run_type == "manual" and (params.get("date") or params.get("rescore_all")):
                from mlcore import audit
                from mlcore.runtime import runtime

                audit.record_manual_trigger(runtime(task_dag.task).lake, dag_run,
                                            target=f"batch_score/{window.day}", params=params)
            return window.to_xcom()

        @task
        def pin_champion() -> dict:
            """Resolve `champion` to one version, used by every shard of this run."""
            from dataclasses import asdict

            from mlcore.registry import pin_champion as pin
            from mlcore.runtime import runtime

            settings = runtime(task_dag.task).settings
            return asdict(pin(settings, runtime(task_dag.task).lake))

        @task
        def list_input_shards(window: dict) -> list[str]:
            """Curated shards that may hold images ingested in the window."""
            from mlcore.runtime import runtime
            from mlcore.score import ScoringWindow, shards_in_interval

            w = ScoringWindow.from_xcom(window)
            return shards_in_interval(runtime(task_dag.task).lake, w.start, w.end)

        @task
        def score_shard(shard: str, pinned: dict, window: dict, run_id=None) -> dict | None:
            """Score one shard into one new data file of the run's partition (not yet visible)."""
            from dataclasses import asdict

            from mlcore.registry import PinnedModel
            from mlcore.runtime import runtime
            from mlcore.score import ScoringWindow
            from mlcore.score import score_shard as score

            settings = runtime(task_dag.task).settings
            part = score(runtime(task_dag.task).lake, settings, PinnedModel(**pinned), shard,
                         ScoringWindow.from_xcom(window), dag_run_id=run_id)
            return asdict(part) if part else None

        @task(outlets=[task_assets(task_dag.scope).predictions], trigger_rule="none_failed")
        def commit(pinned: dict, parts: list, shards: list[str], window: dict, run_id=None) -> dict:
            """Check the predictions with GX, then replace the partition in one Delta commit."""
            from mlcore.registry import PinnedModel
            from mlcore.runtime import runtime
            from mlcore.score import PartFile, ScoringWindow, commit_partition, count_inputs

            settings, lake = runtime(task_dag.task).settings, runtime(task_dag.task).lake
            w = ScoringWindow.from_xcom(window)
            return commit_partition(
                lake, settings, PinnedModel(**pinned), w, [PartFile(**p) for p in parts or [] if p],
                shards=shards, expected_rows=count_inputs(lake, shards, w.start, w.end),
                dag_run_id=run_id,
            ).summary()

        @task
        def monitor_drift(pinned: dict, shards: list[str], window: dict, committed: dict) -> dict:
            """Prediction and input drift of the committed partition vs the holdout."""
            from mlcore.monitor import monitor_partition
            from mlcore.registry import PinnedModel
            from mlcore.runtime import runtime
            from mlcore.score import ScoringWindow

            settings = runtime(task_dag.task).settings
            w = ScoringWindow.from_xcom(window)
            report = monitor_partition(settings, runtime(task_dag.task).lake, PinnedModel(**pinned),
                                       w.day, shards, w.start, w.end)
            return {**report.metrics(), "breached": report.breached}

        @task
        def shadow_score(pinned: dict, shards: list[str], window: dict, committed: dict,
                         run_id=None) -> dict:
            """Score the same shards with the `challenger` (if any) in shadow; record agreement."""
            from mlcore.registry import PinnedModel, pin_challenger
            from mlcore.runtime import runtime
            from mlcore.score import ScoringWindow
            from mlcore.score import shadow_score as shadow

            settings, lake = runtime(task_dag.task).settings, runtime(task_dag.task).lake
            challenger = pin_challenger(settings, lake)
            if challenger is None:
                return {"challenger": None}
            return shadow(lake, settings, PinnedModel(**pinned), challenger,
                          ScoringWindow.from_xcom(window), shards, dag_run_id=run_id)

        @task
        def measure_realized_accuracy(committed: dict) -> list[dict]:
            """Accuracy of past predictions whose labels arrived later (feedback/labels/)."""
            from mlcore.monitor import realized_accuracy
            from mlcore.runtime import runtime

            settings = runtime(task_dag.task).settings
            return realized_accuracy(settings, runtime(task_dag.task).lake)

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
        pinned = pin_champion()
        shards = list_input_shards(window)
        parts = score_shard.partial(pinned=pinned, window=window).expand(shard=shards)
        committed = commit(pinned, parts, shards, window)
        monitor_drift(pinned, shards, window, committed)
        shadow_score(pinned, shards, window, committed)
        measure_realized_accuracy(committed)
        committed >> vacuum()  # a sibling, not the last task: a failed monitor still fails the run


    return batch_score()


for _task_dag in task_dags(Path(__file__).stem):
    batch_score(_task_dag)
