"""The data profile: what a model version learned from, and the reference drift is judged by.

Training writes one per version (``data_profile.json`` in its MLflow run): the image
format, per-image intensity mean and std quantiles, per-class counts, the pixel
normalization the model applies, and a drift baseline (the served model's class,
confidence and intensity histograms on the holdout). Ingestion's batch drift rule and the
scoring drift monitor read the champion's profile; before any champion exists, the
documented base-data profile (``expectations/base_data_profile.json``, the Fashion-MNIST
train split) stands in; a task without base data has no reference until its first
champion, so ingestion skips its batch drift rule and records why. No dataset statistic
lives in the code.

Pure numpy and JSON: ingestion and scoring read it without torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mlcore.settings import REPO_ROOT

if TYPE_CHECKING:
    from mlcore.settings import Settings
    from mlcore.storage import Lake
    from mlcore.task import TaskSpec

log = logging.getLogger(__name__)

PROFILE = "data_profile.json"  # the artifact name in a training run
BASE_PROFILE = REPO_ROOT / "expectations" / "base_data_profile.json"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class DataProfile:
    images: int
    image: dict  # {"height": H, "width": W, "mode": "L" | "RGB"}
    class_counts: list[int]
    intensity_mean: float  # mean pixel intensity (0-255) over all images
    intensity_mean_quantiles: dict[str, float]  # of the per-image mean intensity
    intensity_std_quantiles: dict[str, float]  # of the per-image intensity std
    normalization: dict  # {"pixel_mean", "pixel_std"} on the 0-1 scale, as the model applies it
    drift_baseline: dict | None = field(default=None)  # monitor.Profile fields on the holdout
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> DataProfile:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def profile_images(images: np.ndarray, labels: np.ndarray, normalization: dict[str, float], *,
                   source: str = "", num_classes: int | None = None) -> DataProfile:
    """The profile of ``(N, H, W)`` grayscale or ``(N, H, W, 3)`` RGB uint8 images and their
    labels (class counts over ``num_classes``; default: the deployment's default task's)."""
    if num_classes is None:
        from mlcore.task import default_task

        num_classes = default_task().num_classes

    flat = images.reshape(len(images), -1).astype(np.float64)
    means, stds = flat.mean(axis=1), flat.std(axis=1)

    def quantiles(values: np.ndarray) -> dict[str, float]:
        if not len(values):
            return {}
        return {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)}

    return DataProfile(
        images=int(len(images)),
        image={"height": int(images.shape[1]), "width": int(images.shape[2]), "mode": "L" if images.ndim == 3 else "RGB"},
        class_counts=np.bincount(labels.astype(np.int64),
                                 minlength=num_classes).tolist(),
        intensity_mean=float(means.mean()) if len(means) else 0.0,
        intensity_mean_quantiles=quantiles(means),
        intensity_std_quantiles=quantiles(stds),
        normalization={k: float(v) for k, v in normalization.items()},
        source=source,
    )


def normalization_of(images: np.ndarray) -> dict[str, float]:
    """The pixel normalization a model trained on ``images`` applies: their mean and std on
    the 0-1 scale (over all pixels and channels), to 3 decimals so the value is stable."""
    counts = np.bincount(np.ascontiguousarray(images).reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = max(int(counts.sum()), 1)
    mean = float(counts @ values / n)
    std = float(np.sqrt(max(counts @ (values - mean) ** 2 / n, 0.0)))
    return {"pixel_mean": round(mean, 3), "pixel_std": round(std, 3)}


def base_profile() -> DataProfile:
    """The documented profile of the base data (Fashion-MNIST train split)."""
    from mlcore.settings import get_settings

    # Beside the suites: the image keeps expectations/ there, not beside the installed package.
    path = get_settings().gx_suites_dir.parent / BASE_PROFILE.name
    return DataProfile.from_dict(json.loads((path if path.exists() else BASE_PROFILE).read_text()))


def no_champion_reference(task: TaskSpec) -> DataProfile | None:
    """What drift is judged against before any champion exists: the base data's profile,
    or ``None`` for a task without base data (there is nothing yet to compare with; its
    first champion's training data profile becomes the reference)."""
    return base_profile() if task.base_data != "none" else None


def version_profile(settings: Settings, lake: Lake, run_id: str) -> DataProfile | None:
    """The profile a version's training run wrote, or ``None`` for a run that predates it."""
    from mlflow.exceptions import MlflowException

    from mlcore.registry import configure_mlflow

    mlc = configure_mlflow(settings, lake)
    try:
        with open(mlc.download_artifacts(run_id, PROFILE)) as fh:
            return DataProfile.from_dict(json.load(fh))
    except (MlflowException, OSError):
        return None


def reference_profile(settings: Settings, lake: Lake) -> DataProfile | None:
    """The champion's profile; without one, :func:`no_champion_reference` (the base-data
    profile, or ``None`` for a task without base data)."""
    from mlcore.registry import configure_mlflow, current_champion
    from mlcore.task import task_of

    champ = current_champion(configure_mlflow(settings, lake), settings.model_name)
    profile = version_profile(settings, lake, champ.run_id) if champ else None
    if profile is None:
        log.info("no champion profile: drift reference is the base-data profile, if any")
        return no_champion_reference(task_of(settings))
    return profile


def write_base_profile(fmnist_dir) -> DataProfile:
    """Recompute ``expectations/base_data_profile.json`` from the Fashion-MNIST train split."""
    from mlcore.data import load_fashion_mnist

    images, labels = load_fashion_mnist(fmnist_dir, "train")
    profile = profile_images(images, labels, normalization_of(images),
                             source="Fashion-MNIST train split (base data)")
    BASE_PROFILE.write_text(json.dumps(profile.as_dict(), indent=2, sort_keys=True) + "\n")
    return profile


if __name__ == "__main__":
    from mlcore.settings import get_settings

    print(json.dumps(write_base_profile(get_settings().fmnist_dir).as_dict(), indent=2))
