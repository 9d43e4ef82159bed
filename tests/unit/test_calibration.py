"""Temperature scaling and the expected calibration error."""

import numpy as np

from mlcore.calibration import expected_calibration_error, fit_temperature, reliability, softmax


def overconfident(n: int = 4000, seed: int = 0):
    """Logits whose true temperature is 2: the model is twice as sure as it should be."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2, (n, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(true_logits)])
    return true_logits * 2.0, labels


def test_fitted_temperature_recovers_the_overconfidence_and_lowers_ece():
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert 1.8 < t < 2.2
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert before > 0.1 and after < 0.03


def test_temperature_changes_no_prediction():
    logits, _ = overconfident(500)
    np.testing.assert_array_equal(softmax(logits).argmax(1), softmax(logits, 0.37).argmax(1))


def test_reliability_bins_add_up_and_perfect_calibration_has_zero_ece():
    probs = np.tile([[0.8] + [0.2 / 9] * 9], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)  # right 8 times in 10 at confidence 0.8
    rel = reliability(probs, labels)
    assert sum(rel.counts) == 10 and rel.ece < 1e-9
    assert len(rel.edges) == len(rel.counts) + 1
