"""One settings object for the whole platform, read from ``MLCORE_*`` environment variables.

Nothing is read at import time: call :func:`get_settings` (cached) inside a task or
command, or build ``Settings(...)`` with overrides in tests. ``docs/configuration.md``
lists every field; a test keeps the two in step. :meth:`Settings.for_task` gives the
settings of one deployed task (its own lake prefix, model and experiment).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLCORE_", extra="ignore")

    # --- what is classified (docs/tasks.md) -----------------------------------------------
    task: str = Field(
        "fashion-mnist",
        description="The default task: a file name in `<repo>/tasks` (without `.toml`) or a "
        "path to a spec file. It keeps the plain DAG ids, lake root and model name; every other "
        "spec in `tasks_dir` is deployed too, under its own names (`docs/tasks.md`).",
    )
    tasks_dir: Path = Field(
        REPO_ROOT / "tasks", description="Committed task specs (TOML, one per task): every "
        "spec here is a deployed task with its own three DAGs."
    )

    # --- where things live -------------------------------------------------------------
    home: Path = Field(
        Path("var"), description="Local state folder: the default lake, MLflow DB, Airflow home."
    )
    lake_uri: str = Field(
        "",
        description="Lake root: a folder path, `file:///abs/path` or `s3://bucket/prefix`. "
        "Empty means `<home>/lake`. The default task's keys are at the root, task `t`'s under "
        "`tasks/t/`.",
    )
    s3_endpoint_url: str = Field("", description="S3 endpoint (MinIO, moto); empty for AWS.")
    s3_access_key_id: SecretStr = Field(SecretStr(""), description="S3 access key (secret).")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret key (secret).")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_conn_id: str = Field(
        "",
        description="Airflow Connection (type `aws`) with the S3 keys, and `endpoint_url` / "
        "`region_name` in its extra; when set it wins over the `s3_*` endpoint, keys and region.",
    )
    s3_max_attempts: int = Field(4, description="boto3 retry attempts (retry mode `standard`).")
    s3_timeout_s: float = Field(10.0, description="boto3 connect and read timeout, seconds.")
    fmnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"),
        description="Folder with the four Fashion-MNIST IDX files (Debian `dataset-fashion-mnist`).",
    )
    gx_suites_dir: Path = Field(
        REPO_ROOT / "expectations" / "suites",
        description="Committed Great Expectations suites (JSON).",
    )

    data_docs_url: str = Field(
        "http://localhost:8080/data-docs",
        description="Where people open Data Docs: the Airflow plugin's route (task logs, "
        "`mlcore batch status`, alerts, the demo summary).",
    )

    mlflow_ui_url: str = Field(
        "http://localhost:5000",
        description="Where people open MLflow: the Airflow menu link, alert and summary links.",
    )
    airflow_ui_url: str = Field(
        "http://localhost:8080", description="Where people open Airflow (links in alerts)."
    )

    airflow_db_url: SecretStr = Field(
        SecretStr(""),
        description="Airflow metadata DB (SQLAlchemy URL, secret) for local runs; empty means "
        "SQLite in `<home>/airflow`.",
    )

    # --- MLflow --------------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking URI. Empty means SQLite at `<home>/mlflow.db`."
    )
    mlflow_experiment: str = Field("fashion-classifier", description="MLflow experiment name "
                                   "of the default task (another task `t`: `t-classifier`).")
    model_name: str = Field("fashion-classifier", description="Registered model name of the "
                            "default task (another task `t`: `t-classifier`).")

    # --- ingestion -----------------------------------------------------------------------
    max_file_bytes: int = Field(5_000_000, description="Largest accepted upload, bytes.")
    max_image_pixels: int = Field(
        4_000_000, description="Largest width*height decoded; checked before decoding."
    )
    max_reject_rate: float = Field(
        0.5, description="Batch fails (whole batch quarantined) above this reject rate."
    )
    max_batch_files: int = Field(200_000, description="Upper bound on files per batch.")
    max_label_share: float = Field(
        0.8, description="Batch fails when one class holds more than this share of its labels."
    )
    shard_rows: int = Field(50_000, description="Rows per curated Parquet shard.")
    claims_db_url: SecretStr = Field(
        SecretStr(""),
        description="SQL database (SQLAlchemy URL, secret) holding the image-id claims that "
        "make duplicates impossible across concurrent batches; empty means SQLite at "
        "`<home>/ingest_claims.db`. Use PostgreSQL when workers run on several machines.",
    )

    # --- training ------------------------------------------------------------------------
    seed: int = Field(42, description="Seed for shuffling, init and subsets.")
    train_epochs: int = Field(20, description="Training epochs.")
    train_batch_size: int = Field(128, description="Training batch size.")
    learning_rate: float = Field(3e-3, description="Peak learning rate (one-cycle).")
    weight_decay: float = Field(5e-4, description="AdamW's decoupled weight decay.")
    augment_shift_pixels: int = Field(
        1, ge=0, description="Each training image is moved by a random 0 to N pixels each way "
        "(the uncovered border black), drawn from `seed`; 0 turns shifting off."
    )
    augment_brightness: float = Field(
        0.1, ge=0, lt=1, description="Each training image's brightness is scaled by a random "
        "factor within 1 ± this, drawn from `seed`; 0 turns it off."
    )
    train_precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="Arithmetic of the training forward and backward passes: `bf16` "
        "(autocast; the weights stay fp32) is ~2x faster on CPUs with AMX or AVX512-BF16; "
        "`fp32` for CPUs without them. Evaluation and the exported model are fp32 either way."
    )
    train_subset: int = Field(0, description="Use only N base training images (0 = all 60,000).")
    holdout_subset: int = Field(0, description="Evaluate on N holdout images (0 = all 10,000).")
    torch_threads: int = Field(0, description="torch intra-op threads (0 = torch default).")
    validation_fraction: float = Field(
        0.05, description="Share of the training data set aside (seeded) to fit the "
        "temperature that calibrates `confidence`; never the holdout."
    )
    quantize_calibration_images: int = Field(
        1024, description="Training images the int8 quantizer calibrates its ranges on."
    )
    retrain_min_new_labels: int = Field(
        100, description="An asset-triggered retrain runs only with this many new labeled images."
    )
    train_queue: str = Field("default", description="Airflow queue for training (e.g. `gpu`).")

    # --- promotion gate ------------------------------------------------------------------
    promote_floor: float = Field(0.85, description="Minimum holdout accuracy to be champion.")
    promote_margin: float = Field(
        0.001, description="A challenger must beat the champion by at least this much."
    )
    max_class_drop: float = Field(
        0.03, description="Largest allowed per-class accuracy drop vs the champion."
    )
    promote_significance: float = Field(
        0.05, description="A challenger must also beat the champion in McNemar's exact test "
        "on the holdout (paired, two-sided) at this level: p below it."
    )
    min_agreement: float = Field(
        0.995, description="Least share of holdout images on which the served int8 model "
        "predicts the fp32 model's class; below it the version is refused."
    )

    # --- scoring -------------------------------------------------------------------------
    score_batch_size: int = Field(
        256, description="Images per forward pass when scoring (256 is fastest on 2 CPU "
        "cores: larger batches spill out of cache)."
    )
    drift_threshold: float = Field(
        0.25, description="Drift score (PSI / JS) above which a scoring run's drift is a breach."
    )
    drift_action: Literal["warn", "fail"] = Field(
        "warn", description="On a drift breach: `warn` in the log, or `fail` the monitor task."
    )
    predictions_retention_hours: float = Field(
        168.0, description="Vacuum keeps every file a prediction snapshot of the last N hours "
                           "needs (time travel reaches that far back; default 7 days)."
    )

    # --- alerts (docs/operations.md) ------------------------------------------------------
    alert_smtp_conn_id: str = Field(
        "mlcore_alert_smtp",
        description="Airflow Connection (type `smtp`) for alert e-mails; e-mail alerts are "
        "off while it does not exist or `alert_email_to` is empty.",
    )
    alert_email_to: str = Field("", description="Alert e-mail recipients, comma-separated.")
    alert_email_from: str = Field(
        "", description="Sender of alert e-mails; empty: the Connection's `from_email`."
    )
    alert_slack_conn_id: str = Field(
        "mlcore_alert_slack",
        description="Airflow Connection (type `slackwebhook`, any Slack-compatible webhook) "
        "for chat alerts; off while it does not exist.",
    )
    score_deadline: str = Field(
        "06:00",
        description="Time of day (HH:MM, UTC) by which the night's predictions partition must "
        "be committed; later, a deadline alert is sent.",
        pattern=r"^([01]?\d|2[0-3]):[0-5]\d$",
    )
    deadline_alerts: bool = Field(
        True,
        description="Attach the nightly DeadlineAlert to batch_score. `airflow dags test` "
        "runs (demo, tests) switch it off: Airflow 3.3.2's dags test cannot finish a "
        "successful run of a DAG with a deadline (it looks the alert up by an id it never stored).",
    )

    # Set by for_task only: the task these settings are scoped to ("" for the default task)
    # and the deployment's settings they were derived from.
    _scope: str = PrivateAttr("")
    _root: Settings | None = PrivateAttr(None)

    @property
    def resolved_lake_uri(self) -> str:
        return self.lake_uri or str((self.home / "lake").resolve())

    @property
    def task_scope(self) -> str:
        """``""`` for the deployment's default task; a scoped task's name otherwise: what its
        DAG ids, Asset names, lake prefix (``tasks/<name>/``) and image-id claims carry."""
        return self._scope

    @property
    def deployment(self) -> Settings:
        """The deployment's own settings (its default task's), whichever task these are for."""
        return self._root or self

    def for_task(self, name: str) -> Settings:
        """These settings for the deployed task ``name`` (``docs/tasks.md``).

        The default task (``task``) gets these settings unchanged, so an existing lake and
        registry keep working. Any other task gets its own lake root ``<root>/tasks/<name>``
        (a folder or ``s3://bucket/prefix`` alike), model and experiment ``<name>-classifier``
        and Data Docs under ``<data_docs_url>/t/<name>``; everything else is shared.
        """
        from mlcore.task import UnknownTask, deployed_tasks

        root = self.deployment
        names = [spec.name for spec in deployed_tasks(root)]
        if name not in names:
            raise UnknownTask(f"unknown task {name!r}: this deployment serves {names} "
                              f"(specs in {root.tasks_dir})")
        if name == names[0]:
            return root
        scoped = root.model_copy(update={
            "task": name,
            "lake_uri": f"{root.resolved_lake_uri.rstrip('/')}/tasks/{name}",
            "model_name": f"{name}-classifier",
            "mlflow_experiment": f"{name}-classifier",
            "data_docs_url": f"{root.data_docs_url.rstrip('/')}/t/{name}",
        })
        scoped._scope, scoped._root = name, root
        return scoped

    @property
    def resolved_claims_db_url(self) -> str:
        url = self.claims_db_url.get_secret_value()
        return url or f"sqlite:///{(self.home / 'ingest_claims.db').resolve()}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built from the environment on first use."""
    return Settings()
