import numpy as np
import pytest
import torch

from mlcore.model import (
    FashionCNN,
    WeightsTampered,
    for_inference,
    hidden_of,
    load_weights,
    predict_proba,
    sha256_hex,
    weights_bytes,
    widths_of,
)


def test_weights_roundtrip_through_safetensors_gives_same_predictions():
    torch.manual_seed(0)
    model = FashionCNN().eval()
    data = weights_bytes(model)
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    again = load_weights(data, sha256_hex(data))
    np.testing.assert_array_equal(predict_proba(model, images), predict_proba(again, images))


def test_weights_load_at_the_width_they_were_trained_with_after_the_task_width_changed():
    """Registered weights keep loading when a task spec's model_width changes later."""
    from mlcore.task import default_task

    torch.manual_seed(0)
    task = default_task()
    old = FashionCNN(task.model_copy(update={"model_width": 8, "model_first_width": None})).eval()
    data = weights_bytes(old)
    wider = task.model_copy(update={"model_width": 16, "model_first_width": 12})
    again = load_weights(data, sha256_hex(data), wider)
    assert widths_of(again.state_dict()) == (8, 16, 32)
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(predict_proba(old, images), predict_proba(again, images))
    # New models: the task's widths, the first block narrower when the spec says so.
    assert widths_of(FashionCNN(wider).state_dict()) == (12, 32, 64)
    assert widths_of(FashionCNN(task.model_copy(update={"model_first_width": None}))
                     .state_dict()) == (task.model_width, 2 * task.model_width,
                                        4 * task.model_width)
    # And weights with a narrow first block load back at it.
    narrow = weights_bytes(FashionCNN(wider).eval())
    assert widths_of(load_weights(narrow, sha256_hex(narrow), task).state_dict()) == (12, 32, 64)


def test_weights_load_with_the_head_they_were_trained_with():
    """A linear head (versions before ``model_hidden``) and a hidden layer of another size
    both load back as they were, whatever the task spec's head is now."""
    from mlcore.task import default_task

    torch.manual_seed(0)
    task = default_task()
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    for hidden in (0, 24):
        old = FashionCNN(task.model_copy(update={"model_hidden": hidden})).eval()
        data = weights_bytes(old)
        again = load_weights(data, sha256_hex(data), task.model_copy(update={"model_hidden": 64}))
        assert hidden_of(again.state_dict()) == hidden
        np.testing.assert_array_equal(predict_proba(old, images), predict_proba(again, images))
    assert hidden_of(FashionCNN(task).state_dict()) == task.model_hidden


def test_tampered_weights_refuse_to_load():
    data = bytearray(weights_bytes(FashionCNN()))
    expected = sha256_hex(bytes(data))
    data[-1] ^= 0xFF
    with pytest.raises(WeightsTampered):
        load_weights(bytes(data), expected)


def test_probabilities_are_a_distribution():
    probs = predict_proba(FashionCNN(), np.zeros((3, 28, 28), np.uint8))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def model_with_batchnorm_statistics() -> tuple[FashionCNN, np.ndarray]:
    """A seeded model whose BatchNorm layers hold non-trivial statistics (so folding them
    matters) and 300 random images: for checks that a rewritten graph computes the same."""
    torch.manual_seed(0)
    model = FashionCNN().eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model, np.random.default_rng(1).integers(0, 256, (300, 28, 28), dtype=np.uint8)


def test_the_scoring_model_predicts_what_the_trained_model_predicts():
    """for_inference folds BatchNorm and switches to oneDNN: outputs must not move."""
    model, images = model_with_batchnorm_statistics()
    eager = predict_proba(model, images, batch_size=128)
    scoring_model = for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scoring_model.modules())
    served = predict_proba(scoring_model, images, batch_size=128)  # last batch: 44
    np.testing.assert_allclose(served, eager, atol=1e-5)
    np.testing.assert_array_equal(served.argmax(axis=1), eager.argmax(axis=1))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # left as it was


def test_the_model_is_built_for_the_task_shape_and_exports_it():
    from mlcore.export import to_onnx
    from mlcore.serving import ServedModel, sha256_hex
    from mlcore.task import TaskSpec

    task = TaskSpec(name="rgb-test", classes=("a", "b", "c"), height=32, width=24, channels=3,
                    base_data="none", holdout="batches", model_width=8)
    model = FashionCNN(task).eval()
    images = np.random.default_rng(2).integers(0, 256, (4, *task.shape), dtype=np.uint8)
    probs = predict_proba(model, images)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    graph = to_onnx(model)
    served = ServedModel(graph, sha256_hex(graph))
    assert np.allclose(served.predict_proba(images), probs, atol=1e-4)
    assert served.predict_proba(images[:0]).shape == (0, 3)
