"""Parse each DAG file the way the dag-processor does and report, as JSON on stdout:
import errors, parse CPU time, tags, retries, and which heavy packages got imported.
Run in a fresh interpreter (by test_dag_integrity.py) so sys.modules tells the truth.
"""

import json
import sys
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "mlflow", "great_expectations", "pandas", "pyarrow", "PIL")

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # older layout
    from airflow.models.dagbag import DagBag



def asset_names(condition) -> list[str]:
    """The Assets a schedule's condition waits on (an ``AssetAll``/``AssetAny`` tree)."""
    if condition is None:
        return []
    if hasattr(condition, "objects"):
        return [name for obj in condition.objects for name in asset_names(obj)]
    return [condition.name]


report = {}
DagBag(dag_folder="/nonexistent")  # warm Airflow's own imports
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    # CPU time of this process, not wall time: what parsing costs the dag-processor, and not
    # inflated when the machine is busy with other work (the tests run two workers).
    start = time.process_time()
    bag = DagBag(dag_folder=str(path))
    cpu_seconds = time.process_time() - start
    report[path.name] = {
        "cpu_seconds": cpu_seconds,
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": {
            dag_id: {"tags": sorted(dag.tags), "retries": [t.retries for t in dag.tasks],
                     "timeouts": [str(t.execution_timeout) for t in dag.tasks],
                     "queues": {t.task_id: t.queue for t in dag.tasks},
                     "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks
                                 if t.outlets},
                     "schedule_assets": sorted(asset_names(
                         getattr(dag.timetable, "asset_condition", None)))}
            for dag_id, dag in bag.dags.items()
        },
    }
report["_heavy_modules"] = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps(report))
