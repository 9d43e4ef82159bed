"""The task spec: what a deployment classifies (classes, image shape, data sources, model size).

One small TOML file per task in ``tasks/`` (``docs/tasks.md``), validated by
:class:`TaskSpec` when loaded: an unknown field, fewer than two classes, a zero size or a
channel count other than 1 or 3 fails at load with a message that names the field, never
later in a DAG. Every data-shape literal (class list, pixel byte length, image size) comes
from here; dataset *statistics* (pixel normalization, intensity ranges) come from the data
profile (``mlcore.data_profile``).

``MLCORE_TASK`` picks the deployment's default task: a file name in ``tasks/`` (without
``.toml``) or a path to a spec file.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlcore.settings import REPO_ROOT

TASKS_DIR = REPO_ROOT / "tasks"  # the checkout's; deployments set MLCORE_TASKS_DIR
DEFAULT_TASK = "fashion-mnist"


def block_widths(width: int, first_width: int | None = None) -> tuple[int, int, int]:
    """Channels of the CNN's three blocks for a ``model_width`` (and ``model_first_width``,
    default the same): the second and third have 2x and 4x ``width``."""
    return (first_width or width, 2 * width, 4 * width)


class TaskSpecError(ValueError):
    """A task spec file that is missing, not TOML, or does not validate."""


class UnknownTask(LookupError):
    """A task name that no spec of this deployment carries."""


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
                      description="Task id: lower-case letters, digits, '-' (used in DAG ids, "
                                  "prefixes and model names).")
    classes: tuple[str, ...] = Field(min_length=2, description="Class names, in label order.")
    # At least 8: the CNN halves the image three times before its linear head.
    height: int = Field(ge=8, le=1024, description="Image height the model sees, pixels.")
    width: int = Field(ge=8, le=1024, description="Image width the model sees, pixels.")
    channels: Literal[1, 3] = Field(description="1 = grayscale (mode L), 3 = RGB.")
    base_data: Literal["fashion-mnist", "none"] = Field(
        description="Base training data: the Fashion-MNIST train split, or none (labeled "
                    "batches only).")
    holdout: Literal["fashion-mnist-test", "batches"] = Field(
        description="Frozen holdout: the Fashion-MNIST test split, or labeled batches the "
                    "uploader marks as holdout.")
    model_width: int = Field(32, gt=0, le=512, description="The CNN's width: its second and "
                             "third blocks have 2x and 4x this many channels.")
    model_first_width: int | None = Field(
        None, gt=0, le=512, description="Channels of the CNN's first block (default: "
        "model_width). Narrower is cheaper: the first block works on the full-size image.")
    model_hidden: int = Field(
        0, ge=0, le=4096, description="Units of a hidden layer in the CNN's head, between "
        "its last block and the class scores (0: a linear head).")
    augment_mirror: bool = Field(
        False, description="Training may mirror images left-right: true only when a mirrored "
                           "image is still of its class (a shoe, a circle; not a digit or text).")
    sample_data: Literal["fashion-mnist", "shapes", "none"] = Field(
        "none", description="Where demo and test landing batches come from: Fashion-MNIST "
                            "files (mlcore.seed), the shapes generator (mlcore.shapes), or none.")

    @field_validator("classes")
    @classmethod
    def _unique_names(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c.strip() for c in classes):
            raise ValueError("class names must not be empty")
        # Labels may be given by name, case-insensitively (mlcore.labels): names must differ so.
        seen: set[str] = set()
        dupes = sorted({c for c in classes if c.lower() in seen or seen.add(c.lower())})
        if dupes:
            raise ValueError(f"class names must be unique (case-insensitively): {dupes}")
        return classes

    @property
    def model_widths(self) -> tuple[int, int, int]:
        """Channels of the CNN's three blocks."""
        return block_widths(self.model_width, self.model_first_width)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's array shape: ``(H, W)`` for grayscale, ``(H, W, 3)`` for RGB."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, 3)

    @property
    def pixel_bytes(self) -> int:
        """Bytes of one image's uint8 pixels (the curated ``pixels`` column's width)."""
        return self.height * self.width * self.channels

    @property
    def mode(self) -> str:
        """The Pillow mode every image is converted to."""
        return "L" if self.channels == 1 else "RGB"


def load_task_spec(path: Path | str) -> TaskSpec:
    """Read and validate one spec file; :class:`TaskSpecError` names the file and field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TaskSpecError(f"task spec {path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TaskSpecError(f"task spec {path}: not valid TOML: {exc}") from exc
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TaskSpecError(f"task spec {path}: {problems}") from None


def task_path(name_or_path: str, tasks_dir: Path = TASKS_DIR) -> Path:
    """``MLCORE_TASK``'s value as a file: a name in ``tasks_dir`` or a path to a ``.toml``."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path)
    return tasks_dir / f"{name_or_path}.toml"


@lru_cache(maxsize=64)
def _cached(path: str) -> TaskSpec:
    return load_task_spec(path)


def task_of(settings) -> TaskSpec:
    """The spec ``settings.task`` names (loaded once per file)."""
    return _cached(str(task_path(settings.task, settings.tasks_dir)))


def deployed_tasks(settings) -> list[TaskSpec]:
    """Every task this deployment serves: the default task (``settings.task``) first, then
    each other ``*.toml`` in ``settings.tasks_dir`` by name. Adding a task is adding a file.

    A spec named differently from its file, or two specs of one name, is a
    :class:`TaskSpecError` naming the files: DAG ids, prefixes and models follow the name.
    """
    default_path = task_path(settings.task, settings.tasks_dir)
    paths = [default_path] + sorted(p for p in Path(settings.tasks_dir).glob("*.toml")
                                    if p.resolve() != default_path.resolve())
    specs: dict[str, tuple[Path, TaskSpec]] = {}
    for path in paths:
        spec = _cached(str(path))
        if path.stem != spec.name and path.parent.resolve() == Path(settings.tasks_dir).resolve():
            raise TaskSpecError(f"task spec {path}: name {spec.name!r} differs from the file "
                                f"name; call the file {spec.name}.toml")
        if spec.name in specs:
            raise TaskSpecError(f"task spec {path}: name {spec.name!r} is also the name of "
                                f"{specs[spec.name][0]}")
        specs[spec.name] = (path, spec)
    return [spec for _, spec in specs.values()]


def default_task() -> TaskSpec:
    """The deployment's task (``MLCORE_TASK``, default ``fashion-mnist``), loaded once."""
    from mlcore.settings import get_settings

    return task_of(get_settings())
