from mlcore.registry import gate
from mlcore.settings import Settings

S = Settings(promote_floor=0.8, promote_margin=0.005, max_class_drop=0.03)


def metrics(acc: float, per_class: list[float] | None = None) -> dict[str, float]:
    per_class = per_class or [acc] * 10
    return {"holdout_accuracy": acc, **{f"class_{i}_accuracy": a for i, a in enumerate(per_class)}}


def test_first_model_becomes_champion_when_it_clears_the_floor():
    assert gate(metrics(0.85), None, S).promote


def test_floor_holds_without_a_champion():
    decision = gate(metrics(0.79), None, S)
    assert not decision.promote and "floor" in decision.reasons[0]


def test_worse_model_is_not_promoted():
    assert not gate(metrics(0.86), metrics(0.90), S).promote


def test_better_model_is_promoted():
    assert gate(metrics(0.91), metrics(0.90), S).promote


def test_improvement_below_margin_is_not_enough():
    assert not gate(metrics(0.902), metrics(0.90), S).promote


def test_per_class_regression_blocks_promotion():
    candidate = metrics(0.95, [0.99] * 9 + [0.80])
    decision = gate(candidate, metrics(0.90), S)
    assert not decision.promote
    assert any("class 9" in r for r in decision.reasons)
