"""Airflow cluster policy: route training to the queue the settings name (e.g. ``gpu``).

Airflow imports this module (plugins/ is on its path) and calls ``task_policy`` for every
task it parses, so the DAG file itself never reads configuration at parse time.
"""

TRAINING_DAG, TRAINING_TASK = "retrain_model", "train_and_register"


def task_policy(task) -> None:
    # Every task's retrain DAG: ``retrain_model`` (the default task) or ``retrain_model__<t>``.
    dag_id = task.dag_id or ""
    if task.task_id == TRAINING_TASK and (
            dag_id == TRAINING_DAG or dag_id.startswith(f"{TRAINING_DAG}__")):
        from mlcore.settings import get_settings

        task.queue = get_settings().train_queue
