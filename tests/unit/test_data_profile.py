"""The data profile: the documented base profile, and ingestion judging drift against the
reference it is given (the champion's training data) instead of a constant."""

import json

import numpy as np
import pytest

from mlcore.data import load_fashion_mnist
from mlcore.data_profile import (
    BASE_PROFILE,
    DataProfile,
    base_profile,
    normalization_of,
    profile_images,
)
from mlcore.images import encode_png
from mlcore.ingest import ingest_batch
from mlcore.validation import ValidationFailed
from tests.conftest import DAY


def test_the_documented_base_profile_is_the_fashion_mnist_train_split(settings):
    images, labels = load_fashion_mnist(settings.fmnist_dir, "train")
    # The normalization is a statistic of the data too: recomputed, not copied from a constant.
    fresh = profile_images(images, labels, normalization_of(images),
                           source=base_profile().source)
    stored = json.loads(BASE_PROFILE.read_text())
    assert json.loads(json.dumps(fresh.as_dict())) == stored
    assert stored["image"] == {"height": 28, "width": 28, "mode": "L"}
    assert stored["class_counts"] == [6000] * 10
    assert round(stored["intensity_mean"], 2) == 72.94


def test_profile_roundtrips_and_keeps_the_drift_baseline():
    rng = np.random.default_rng(0)
    profile = profile_images(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
                             rng.integers(0, 10, 50), {"pixel_mean": 0.5, "pixel_std": 0.25})
    profile.drift_baseline = {"rows": 3, "class_counts": [3] + [0] * 9,
                              "confidence_counts": [0] * 9 + [3], "intensity_counts": [3] + [0] * 15}
    again = DataProfile.from_dict(json.loads(json.dumps(profile.as_dict())))
    assert again == profile and sum(again.class_counts) == 50
    assert set(again.intensity_mean_quantiles) == {"p01", "p05", "p25", "p50", "p75", "p95", "p99"}


def _drop(lake, batch_id: str, seed: int, n: int = 25) -> None:  # drift is judged from 20 up
    rng = np.random.default_rng(seed)
    for i in range(n):  # mean intensity about 75: like the base data
        lake.write_bytes(f"landing/{batch_id}/{i}.png",
                         encode_png(rng.integers(0, 150, (28, 28), dtype=np.uint8)))
    lake.write_bytes(f"landing/{batch_id}/_READY", b"")


def test_ingestion_judges_input_drift_against_the_reference_it_is_given(lake, settings):
    _drop(lake, "like-base", seed=1)
    assert ingest_batch(settings, lake, "like-base", logical_date=DAY).status != "rejected"
    brighter = DataProfile.from_dict({**base_profile().as_dict(), "intensity_mean": 160.0})
    _drop(lake, "drifted", seed=2)  # new images, same look
    with pytest.raises(ValidationFailed, match="input_drift"):
        ingest_batch(settings, lake, "drifted", logical_date=DAY, reference=brighter)
