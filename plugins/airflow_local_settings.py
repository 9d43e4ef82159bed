"""Airflow cluster policy: route training to the queue the settings name (e.g. ``gpu``).

Airflow imports this module (plugins/ is on its path) and calls ``task_policy`` for every
task it parses, so the DAG file itself never reads configuration at parse time.
"""

TRAINING_TASKS = {("retrain_model", "train_and_register")}


def task_policy(task) -> None:
    if (task.dag_id, task.task_id) in TRAINING_TASKS:
        from mlcore.settings import get_settings

        task.queue = get_settings().train_queue
