"""
### Nightly batch scoring

Scores the unlabeled images ingested during the run's data interval with the `champion`
model, pinned once per run, and publishes `predictions/dt=<interval start>/` as Parquet
files plus a `_manifest.json` written last (the commit point). Shards are scored in
parallel by mapped tasks. The `predictions` Asset is updated only when a partition is
committed.
"""

from pathlib import Path

from airflow.sdk import CronDataIntervalTimetable, dag, task

from mlcore.assets import PREDICTIONS
from mlcore.dag_defaults import DEFAULT_ARGS, START_DATE


@dag(
    dag_id=Path(__file__).stem,
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlcore", "scoring"],
    doc_md=__doc__,
)
def batch_score():
    @task
    def pin_champion() -> dict:
        """Resolve `champion` to one version, used by every shard of this run."""
        from dataclasses import asdict

        from mlcore.registry import pin_champion as pin
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        return asdict(pin(settings, open_lake(settings)))

    @task
    def list_input_shards(data_interval_start=None, data_interval_end=None) -> list[str]:
        """Curated shards that may hold images ingested in this data interval."""
        from mlcore.score import shards_in_interval
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        return shards_in_interval(open_lake(get_settings()), data_interval_start, data_interval_end)

    @task
    def score_shard(shard: str, pinned: dict, data_interval_start=None, data_interval_end=None,
                    run_id=None) -> dict | None:
        """Score one shard into one part file."""
        from dataclasses import asdict

        from mlcore.registry import PinnedModel
        from mlcore.score import score_shard as score
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        part = score(open_lake(settings), settings, PinnedModel(**pinned), shard,
                     data_interval_start, data_interval_end, data_interval_end, run_id)
        return asdict(part) if part else None

    @task(outlets=[PREDICTIONS], trigger_rule="none_failed")
    def commit(pinned: dict, parts: list, shards: list[str], data_interval_start=None,
               data_interval_end=None, run_id=None) -> dict:
        """Check the predictions with GX, then write the manifest last."""
        from mlcore.registry import PinnedModel
        from mlcore.score import PartFile, commit_partition, count_inputs
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        lake = open_lake(settings)
        manifest = commit_partition(
            lake, settings, PinnedModel(**pinned), data_interval_start.date(),
            [PartFile(**p) for p in parts or [] if p], shards,
            count_inputs(lake, shards, data_interval_start, data_interval_end),
            run_id, data_interval_end,
        )
        return {"partition": manifest["partition"], "rows": manifest["rows"],
                "files": len(manifest["files"])}

    @task
    def monitor_drift(pinned: dict, shards: list[str], committed: dict, data_interval_start=None,
                      data_interval_end=None) -> dict:
        """Prediction and input drift of the committed partition vs the holdout."""
        from mlcore.monitor import monitor_partition
        from mlcore.registry import PinnedModel
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        report = monitor_partition(settings, open_lake(settings), PinnedModel(**pinned),
                                   data_interval_start.date(), shards, data_interval_start,
                                   data_interval_end)
        return {**report.metrics(), "breached": report.breached}

    @task
    def shadow_score(pinned: dict, shards: list[str], committed: dict, data_interval_start=None,
                     data_interval_end=None, run_id=None) -> dict:
        """Score the same shards with the `challenger` (if any) in shadow; record agreement."""
        from mlcore.registry import PinnedModel, pin_challenger
        from mlcore.score import shadow_score as shadow
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        lake = open_lake(settings)
        challenger = pin_challenger(settings, lake)
        if challenger is None:
            return {"challenger": None}
        return shadow(lake, settings, PinnedModel(**pinned), challenger,
                      data_interval_start.date(), shards, data_interval_start, data_interval_end,
                      run_id)

    @task
    def measure_realized_accuracy(committed: dict) -> list[dict]:
        """Accuracy of past predictions whose labels arrived later (feedback/labels/)."""
        from mlcore.monitor import realized_accuracy
        from mlcore.settings import get_settings
        from mlcore.storage import open_lake

        settings = get_settings()
        return realized_accuracy(settings, open_lake(settings))

    pinned = pin_champion()
    shards = list_input_shards()
    parts = score_shard.partial(pinned=pinned).expand(shard=shards)
    committed = commit(pinned, parts, shards)
    monitor_drift(pinned, shards, committed)
    shadow_score(pinned, shards, committed)
    measure_realized_accuracy(committed)


batch_score()
