import numpy as np
import pytest

from mlcore.data import load_fashion_mnist
from mlcore.monitor import Profile, compare, image_means, js_divergence, psi
from mlcore.settings import Settings


@pytest.fixture(scope="module")
def holdout():
    images, labels = load_fashion_mnist(Settings().fmnist_dir, "test")
    return images, np.eye(10, dtype=np.float32)[labels]  # a perfect model's probabilities


def test_identical_distributions_score_zero():
    counts = np.array([5, 10, 20, 0])
    assert psi(counts, counts) == pytest.approx(0.0)
    assert js_divergence(counts, counts) == pytest.approx(0.0)


def test_brightness_halved_batch_crosses_the_threshold_and_unshifted_does_not(holdout):
    images, probs = holdout
    threshold = Settings().drift_threshold
    baseline = Profile.of(probs[:5000], image_means(images[:5000]))
    same = compare(baseline, Profile.of(probs[5000:7000], image_means(images[5000:7000])), threshold)
    shifted = compare(baseline, Profile.of(probs[5000:7000], image_means(images[5000:7000] // 2)),
                      threshold)
    assert same.breached == [] and same.intensity_psi < 0.05
    assert shifted.breached == ["intensity_psi"] and shifted.intensity_psi > threshold


def test_collapsed_predictions_are_prediction_drift(holdout):
    images, probs = holdout
    baseline = Profile.of(probs[:5000], image_means(images[:5000]))
    collapsed = np.zeros_like(probs[5000:7000])
    collapsed[:, 3] = 0.55
    collapsed[:, 4] = 0.45  # always "Dress", never confident
    report = compare(baseline, Profile.of(collapsed, image_means(images[5000:7000])), 0.25)
    assert set(report.breached) == {"class_psi", "confidence_js"}


def test_empty_shard_contributes_nothing():
    assert image_means(np.zeros((0, 28, 28), np.uint8)).shape == (0,)
    report = compare(Profile.of(np.eye(10)[:3], np.ones(3)), Profile.of(np.zeros((0, 10)), []), 0.25)
    assert report.breached == [] and report.scored.rows == 0


def test_a_handful_of_rows_never_raises_an_alarm(holdout):
    images, probs = holdout
    baseline = Profile.of(probs[:5000], image_means(images[:5000]))
    few = compare(baseline, Profile.of(probs[5000:5050], image_means(images[5000:5050] // 2)), 0.25)
    assert few.intensity_psi > 0.25 and few.breached == []
