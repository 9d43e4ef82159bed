"""The served model: ONNX export and int8 quantization of the trained model, the checksum,
and scoring in a process where torch cannot be imported."""

from datetime import UTC, datetime

import numpy as np
import onnx
import pytest
import torch

from mlcore.export import quantize_int8, to_onnx
from mlcore.model import predict_proba
from mlcore.package import build_package
from mlcore.serving import ArtifactTampered, ServedModel, sha256_hex
from mlcore.settings import Settings
from mlcore.storage import LocalLake
from mlcore.train import build_training_data, train
from tests.torch_free import run_without_torch
from tests.unit.test_model import model_with_batchnorm_statistics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained model and its package (about 5 s). Two torch threads, pinned:
    training is deterministic only for a given thread count, and an earlier test in the same
    worker may have changed torch's (at one thread this model's temperature, fitted on 75
    validation images, does not improve the holdout ECE)."""
    home = tmp_path_factory.mktemp("serving")
    settings = Settings(home=home, train_subset=1500, holdout_subset=1000, train_epochs=1,
                        quantize_calibration_images=256, torch_threads=2)
    data = build_training_data(settings, LocalLake(home / "lake"))
    result = train(settings, data)
    return settings, data, result, build_package(settings, result, data)


def test_fp32_graph_computes_the_torch_model_with_its_temperature():
    model, images = model_with_batchnorm_statistics()
    graph = to_onnx(model, temperature=0.5)
    served = ServedModel(graph, sha256_hex(graph)).predict_proba(images, batch_size=128)
    expected = torch.softmax(torch.log(torch.from_numpy(predict_proba(model, images))) / 0.5, 1)
    np.testing.assert_allclose(served, expected.numpy(), atol=1e-5)
    assert not model.training  # the exporter leaves the caller's model in eval mode
    assert ServedModel(graph, sha256_hex(graph)).metadata["temperature"] == "0.5"


def test_int8_package_agrees_with_fp32_and_is_calibrated(trained):
    _, data, result, package = trained
    assert package.agreement >= 0.99
    assert abs(package.int8.accuracy - package.fp32.accuracy) <= 0.01
    assert package.fp32.accuracy == result.evaluation.accuracy  # fp32 = the trained model
    # The convolutions and the head's hidden layer read int8 weights; the class scores fp32.
    proto = onnx.load_from_string(package.int8_onnx)
    int8 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    fp32 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    dequantized = {n.output[0]: n.input[0] for n in proto.graph.node
                   if n.op_type == "DequantizeLinear"}
    weights = [n.input[1] for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weights) == 5  # three blocks, the hidden layer, the class scores
    assert all(dequantized.get(w) in int8 for w in weights[:-1])
    assert weights[-1] in fp32
    assert package.reliability_after.ece < package.reliability_before.ece
    assert package.calibration_images == 256
    probs = ServedModel(package.int8_onnx, package.int8_sha256).predict_proba(data.holdout_images)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), package.int8_predicted)


def test_a_graph_that_differs_from_its_checksum_is_refused(trained):
    package = trained[3]
    tampered = bytearray(package.int8_onnx)
    tampered[-1] ^= 0xFF
    with pytest.raises(ArtifactTampered, match="refusing to load"):
        ServedModel(bytes(tampered), package.int8_sha256)


def test_quantization_is_deterministic(trained):
    settings, data, result, package = trained
    from mlcore.package import calibration_sample

    again = quantize_int8(to_onnx(result.model, result.temperature),
                          calibration_sample(settings, data.images))
    assert sha256_hex(again) == package.int8_sha256


SCORE_WITHOUT_TORCH = """
    import sys
    from datetime import datetime, timedelta, UTC
    from pathlib import Path
    from mlcore.registry import PinnedModel
    from mlcore.runtime import runtime_for
    from mlcore.score import ScoringRun, ScoringWindow, input_shards, score_shard
    from mlcore.serving import ServedModel
    from mlcore.settings import Settings
    from mlcore.storage import read_parquet
    root, graph, sha = sys.argv[1], Path(sys.argv[2]).read_bytes(), sys.argv[3]
    start = datetime(2026, 11, 22, 3, tzinfo=UTC); end = start + timedelta(days=1)
    rt = runtime_for(Settings(home=root, lake_uri=root))
    pinned = PinnedModel("fashion-classifier", "1", "run", "0" * 64, sha)
    run = ScoringRun.of(ScoringWindow(start, end, start.date()), pinned, run_id="no-torch")
    [shard] = input_shards(rt, run)
    part = score_shard(rt, run, shard=shard, model=ServedModel(graph, sha)).part
    print(part.rows, read_parquet(rt.lake, part.key, ["predicted_class"]).num_rows)
"""


def test_a_shard_is_scored_in_a_process_that_cannot_import_torch(trained, tmp_path):
    from mlcore.data import CuratedRow, write_shards

    package = trained[3]
    (tmp_path / "model.onnx").write_bytes(package.int8_onnx)
    images = trained[1].holdout_images[:50]
    rows = [CuratedRow(f"id-{i:03d}", img.tobytes(), f"landing/b/{i}.png", None)
            for i, img in enumerate(images)]
    write_shards(LocalLake(tmp_path), rows, "b", ingested_at=datetime(2026, 11, 22, 4, tzinfo=UTC), shard_rows=1000)
    proc = run_without_torch(SCORE_WITHOUT_TORCH, tmp_path, tmp_path / "model.onnx",
                             package.int8_sha256, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["50", "50"]


def test_the_drift_baseline_stored_at_registration_equals_the_one_computed_on_demand(trained):
    """The monitor reads the version's stored baseline instead of re-scoring the whole
    holdout every night; computed on demand (a version without one) it is the same."""
    from dataclasses import replace

    from mlcore.data import load_fashion_mnist
    from mlcore.monitor import Profile, drift_baseline
    from mlcore.registry import PinnedModel
    from mlcore.runtime import runtime_for

    settings, data, result, _ = trained
    holdout, labels = load_fashion_mnist(settings.fmnist_dir, "test")  # the whole holdout
    package = build_package(settings, result, replace(data, holdout_images=holdout,
                                                      holdout_labels=labels))
    stored = Profile(**package.data_profile.drift_baseline)
    served = ServedModel(package.int8_onnx, package.int8_sha256)
    no_profile = PinnedModel(settings.model_name, "1", "run-without-profile", "0" * 64)
    on_demand = drift_baseline(runtime_for(settings), no_profile, model=served)
    assert stored == on_demand and stored.rows == 10_000
