"""The demo summary sends people to the UI routes from settings, not to lake file paths."""

from rich.console import Console

from mlcore.demo import print_summary


def test_summary_points_at_the_configured_ui_routes():
    summary = {
        "batches": [{"batch_id": "mixed-bad-01", "status": "ingested", "files": 3, "accepted": 2,
                     "labeled": 0, "quarantined": 1, "duplicates": 0,
                     "reasons": ["bomb.png: decompression_bomb"]}],
        "model": {"name": "fashion-classifier", "versions": 1, "champion": "1",
                  "champion_holdout_accuracy": 0.81},
        "predictions": {"partition": "dt=2026-11-22", "rows": 2, "files": ["part-0.parquet"]},
        "drift": {},
        "lake": "file:///srv/lake",
        "tracking_uri": "sqlite:////srv/mlflow.db",
        "links": {"airflow": "https://airflow.example.test",
                  "data_docs": "https://airflow.example.test/data-docs",
                  "mlflow": "https://mlflow.example.test"},
    }
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    assert "Airflow:     https://airflow.example.test\n" in text
    assert "data docs:   https://airflow.example.test/data-docs " in text
    assert "MLflow:      https://mlflow.example.test " in text
    assert "mlcore batch status mixed-bad-01" in text
    assert "index.html" not in text and "localhost" not in text


def test_summary_commands_for_a_non_default_task_name_the_task():
    summary = {
        "batches": [{"batch_id": "shapes-unlabeled", "status": "ingested", "files": 24,
                     "accepted": 24, "labeled": 0, "quarantined": 0, "duplicates": 0,
                     "reasons": []}],
        "model": {"name": "shapes-classifier", "versions": 1, "champion": "1",
                  "champion_holdout_accuracy": 0.93},
        "predictions": {"partition": "dt=2026-11-22", "rows": 24, "files": ["part-0.parquet"]},
        "drift": {}, "lake": "file:///srv/lake", "task": "shapes",
        "tracking_uri": "sqlite:////srv/mlflow.db",
        "links": {"airflow": "http://a", "data_docs": "http://a/data-docs/t/shapes",
                  "mlflow": "http://m"},
    }
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    # Without --task these would read the default task's lake and find nothing.
    assert "mlcore batch status --task shapes shapes-unlabeled" in text
    assert "mlcore predictions read --task shapes --date 2026-11-22" in text
