import numpy as np
import pytest
import torch

from mlcore.model import (
    FashionCNN,
    WeightsTampered,
    load_weights,
    predict_proba,
    sha256_hex,
    weights_bytes,
)


def test_weights_roundtrip_through_safetensors_gives_same_predictions():
    torch.manual_seed(0)
    model = FashionCNN().eval()
    data = weights_bytes(model)
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    again = load_weights(data, sha256_hex(data))
    np.testing.assert_array_equal(predict_proba(model, images), predict_proba(again, images))


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
