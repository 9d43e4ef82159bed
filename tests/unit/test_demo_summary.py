"""The demo summary sends people to the UI routes from settings, not to lake file paths."""

from rich.console import Console

from mlcore.demo import print_summary


def _summary(**changes) -> dict:
    """A summary as ``mlcore.demo.summarize`` returns it, for the default task."""
    return {
        "batches": [{"batch_id": "mixed-bad-01", "status": "ingested", "files": 3, "accepted": 2,
                     "labeled": 0, "quarantined": 1, "duplicates": 0,
                     "reasons": ["bomb.png: decompression_bomb"]}],
        "model": {"name": "fashion-classifier", "versions": 1, "champion": "1",
                  "champion_holdout_accuracy": 0.81},
        "predictions": {"partition": "dt=2026-11-22", "rows": 2, "files": ["part-0.parquet"]},
        "drift": {},
        "lake": "file:///srv/lake",
        "task": "",
        "tracking_uri": "sqlite:////srv/mlflow.db",
        "links": {"airflow": "https://airflow.example.test",
                  "data_docs": "https://airflow.example.test/data-docs",
                  "mlflow": "https://mlflow.example.test"},
        **changes,
    }


def _printed(summary: dict) -> str:
    console = Console(record=True, width=200)
    print_summary(summary, console)
    return console.export_text()


def test_summary_points_at_the_configured_ui_routes():
    text = _printed(_summary())
    assert "Airflow:     https://airflow.example.test\n" in text
    assert "data docs:   https://airflow.example.test/data-docs " in text
    assert "MLflow:      https://mlflow.example.test " in text
    assert "mlcore batch status mixed-bad-01" in text
    assert "--task" not in text  # the default task's commands need none
    assert "index.html" not in text and "localhost" not in text


def test_summary_commands_for_a_non_default_task_name_the_task():
    text = _printed(_summary(task="shapes"))
    # Without --task these would read the default task's lake and find nothing.
    assert "mlcore batch status --task shapes mixed-bad-01" in text
    assert "mlcore predictions read --task shapes --date 2026-11-22" in text
