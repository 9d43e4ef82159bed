"""One runtime per task and process: the settings, the task spec, the lake and MLflow, set up once.

A task body in a DAG is one call into ``mlcore`` with ``runtime(task_name)`` as its first
argument, the way a provider hook hands out cached clients: nothing is rebuilt per call,
and the MLflow side effects (tracking URI, artifact credentials, the experiment) happen
once, in :meth:`Runtime.mlflow`, not behind a getter.

The runtime's ``settings`` name its task (``settings.task``), so code that takes
``settings`` finds the spec with :func:`mlcore.task.task_of`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlcore.settings import Settings
    from mlcore.storage import Lake
    from mlcore.task import TaskSpec


@dataclass(frozen=True, eq=False)
class Runtime:
    settings: Settings
    task: TaskSpec
    given_lake: Lake | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def lake(self) -> Lake:
        """The lake given to :func:`runtime_for`, else the one the settings name."""
        if self.given_lake is not None:
            return self.given_lake
        from mlcore.storage import open_lake

        return open_lake(self.settings)

    def mlflow(self, experiment: str | None = None) -> MlflowClient:
        """The MLflow client, with the tracking URI, the artifact store's credentials and
        ``experiment`` (default: the training one) configured once and active."""
        from mlcore.registry import configure_mlflow

        name = experiment or self.settings.mlflow_experiment
        if name not in self._cache:
            self._cache[name] = configure_mlflow(self.settings, self.lake, name)
        elif self._cache.get("active") != name:
            import mlflow

            mlflow.set_experiment(name)
        self._cache["active"] = name
        return self._cache[name]


def runtime_for(settings: Settings, *, lake: Lake | None = None) -> Runtime:
    """A runtime over explicit settings (tests, benchmarks, the CLI with overrides); with
    ``lake``, that lake object instead of the one the settings name (a counting or
    instrumented lake in tests and benchmarks)."""
    from mlcore.task import task_of

    return Runtime(settings=settings, task=task_of(settings), given_lake=lake)


def runtime(task_name: str | None = None) -> Runtime:
    """This process's runtime for the deployed task ``task_name`` (default: the deployment's
    default task), built once; its settings are scoped to the task (``Settings.for_task``).
    An unknown name raises :class:`mlcore.task.UnknownTask`."""
    from mlcore.settings import get_settings
    from mlcore.task import task_of

    return _runtime(task_name or task_of(get_settings()).name)


@lru_cache(maxsize=16)
def _runtime(task_name: str) -> Runtime:
    from mlcore.settings import get_settings

    return runtime_for(get_settings().for_task(task_name))
