"""The promotion gate on int8 figures, the agreement rule and McNemar's exact test."""

import numpy as np
import pytest

from mlcore.promotion import Evidence, binomial_two_sided, gate, mcnemar_exact
from mlcore.settings import Settings

S = Settings(promote_floor=0.8, promote_margin=0.001, max_class_drop=0.03,
             promote_significance=0.05, min_agreement=0.995)
N = 10_000


def evidence(correct: np.ndarray, per_class: list[float] | None = None,
             agreement: float = 0.999, holdout: str = "h") -> Evidence:
    acc = float(correct.mean())
    per_class = per_class or [acc] * 10
    metrics = {"holdout_accuracy": acc, "int8_fp32_agreement": agreement,
               **{f"class_{i}_accuracy": a for i, a in enumerate(per_class)}}
    return Evidence(metrics, correct, holdout)


def flipped(correct: np.ndarray, gained: int, lost: int, seed: int) -> np.ndarray:
    """``correct`` with ``gained`` wrong images made right and ``lost`` right ones wrong."""
    rng = np.random.default_rng(seed)
    out = correct.copy()
    out[rng.choice(np.flatnonzero(~correct), gained, replace=False)] = True
    out[rng.choice(np.flatnonzero(correct), lost, replace=False)] = False
    return out


@pytest.fixture
def champion_correct() -> np.ndarray:
    return np.random.default_rng(0).random(N) < 0.90


def test_first_model_becomes_champion_when_it_clears_the_floor(champion_correct):
    assert gate(evidence(champion_correct), None, S).promote


def test_floor_holds_without_a_champion():
    decision = gate(evidence(np.arange(N) < 0.79 * N), None, S)
    assert not decision.promote and "floor" in decision.reasons[0]
    assert decision.reasons[0].startswith("int8 accuracy")


def test_low_int8_fp32_agreement_is_refused_with_a_reason(champion_correct):
    decision = gate(evidence(champion_correct, agreement=0.990), None, S)
    assert not decision.promote
    assert any("agreement 0.9900 < 0.9950" in r and "quantization" in r for r in decision.reasons)


def test_seed_noise_retrain_is_not_promoted_though_it_clears_the_margin(champion_correct):
    """A retrain that differs only by seed noise: about 3% of images flip each way, a few
    more towards right. +0.0015 beats the 0.001 margin; the paired test says it is noise."""
    noisy = flipped(champion_correct, gained=165, lost=150, seed=1)
    decision = gate(evidence(noisy), evidence(champion_correct), S)
    assert noisy.mean() >= champion_correct.mean() + S.promote_margin
    assert not decision.promote
    [mcnemar] = [r for r in decision.reasons if r.startswith("McNemar")]
    assert "not significantly better" in mcnemar and "165 images only the candidate" in mcnemar


def test_clearly_better_model_is_promoted_with_its_p_value_as_a_reason(champion_correct):
    better = flipped(champion_correct, gained=260, lost=150, seed=2)  # +1.1 points
    decision = gate(evidence(better), evidence(champion_correct), S)
    assert decision.promote, decision.reasons
    [mcnemar] = [r for r in decision.reasons if r.startswith("McNemar")]
    assert "< 0.05" in mcnemar


def test_worse_model_is_not_promoted(champion_correct):
    worse = flipped(champion_correct, gained=100, lost=300, seed=3)
    assert not gate(evidence(worse), evidence(champion_correct), S).promote


def test_per_class_regression_blocks_promotion(champion_correct):
    better = flipped(champion_correct, gained=500, lost=100, seed=4)
    candidate = evidence(better, [0.99] * 9 + [0.80])
    decision = gate(candidate, evidence(champion_correct), S)
    assert not decision.promote and any("class 9" in r for r in decision.reasons)


def test_paired_test_needs_the_same_holdout(champion_correct):
    better = flipped(champion_correct, gained=500, lost=100, seed=5)
    decision = gate(evidence(better, holdout="other"), evidence(champion_correct), S)
    assert not decision.promote and any("other holdout images" in r for r in decision.reasons)
    legacy = Evidence(evidence(champion_correct).metrics)  # registered before the package
    decision = gate(evidence(better), legacy, S)
    assert not decision.promote and any("--force" in r for r in decision.reasons)


def test_mcnemar_exact_counts_discordant_pairs_and_matches_the_binomial():
    cand = np.array([1, 1, 1, 0, 0, 1], bool)
    champ = np.array([1, 0, 0, 1, 0, 1], bool)
    test = mcnemar_exact(cand, champ)
    assert (test.better, test.worse) == (2, 1)
    assert test.p_value == pytest.approx(1.0)  # 2 * P(X <= 1 | n=3) = 2 * 4/8, capped at 1
    assert binomial_two_sided(0, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided(5, 10) == 1.0 and binomial_two_sided(0, 0) == 1.0
    # scipy's exact binomial test agrees on a large case
    from scipy.stats import binomtest

    assert binomial_two_sided(150, 415) == pytest.approx(binomtest(150, 415, 0.5).pvalue)
