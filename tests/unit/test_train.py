from datetime import UTC, datetime

import numpy as np

from mlcore.data import CuratedRow, load_fashion_mnist, write_shards
from mlcore.train import build_training_data


def test_holdout_images_arriving_through_landing_are_never_trained_on(lake, settings):
    settings = settings.model_copy(update={"train_subset": 500})
    test_x, test_y = load_fashion_mnist(settings.fmnist_dir, "test")
    train_x, train_y = load_fashion_mnist(settings.fmnist_dir, "train")
    rows = [CuratedRow("from-holdout", test_x[7].tobytes(), "landing/b/h.png", int(test_y[7])),
            CuratedRow("new", train_x[-1].tobytes(), "landing/b/n.png", int(train_y[-1]))]
    write_shards(lake, rows, "b", ingested_at=datetime(2026, 11, 22, tzinfo=UTC), shard_rows=settings.shard_rows)
    data = build_training_data(settings, lake)
    assert data.lineage["curated_dropped_holdout"] == 1
    assert data.lineage["curated_labeled_images"] == 1
    # 500 base + 1 curated, of which a validation split (for calibration) is carved off.
    assert len(data.images) + len(data.validation_images) == 501
    assert not any((img == test_x[7]).all()
                   for img in np.concatenate([data.images, data.validation_images]))
    assert len(data.lineage["holdout_hash"]) == 64


def test_labels_a_later_batch_supplies_train_but_holdout_images_stay_out(lake, settings):
    from mlcore.data import commit_shards, stage_shards
    from mlcore.layout import CURATED_LABELS

    settings = settings.model_copy(update={"train_subset": 500})
    test_x, test_y = load_fashion_mnist(settings.fmnist_dir, "test")
    train_x, train_y = load_fashion_mnist(settings.fmnist_dir, "train")
    at = datetime(2026, 11, 22, tzinfo=UTC)
    write_shards(lake, [CuratedRow("h", test_x[7].tobytes(), "landing/b/h.png", None),
                        CuratedRow("n", train_x[-1].tobytes(), "landing/b/n.png", None)], "b", ingested_at=at, shard_rows=settings.shard_rows)
    later = [CuratedRow("h", test_x[7].tobytes(), "landing/c/h.png", int(test_y[7])),
             CuratedRow("n", train_x[-1].tobytes(), "landing/c/n.png", int(train_y[-1]))]
    keys = stage_shards(lake, later, "c", ingested_at=at, shard_rows=settings.shard_rows, prefix=CURATED_LABELS)
    commit_shards(lake, keys, "c", ingested_at=at, prefix=CURATED_LABELS)
    data = build_training_data(settings, lake)
    assert data.lineage["curated_labeled_images"] == 1  # "n", now labeled
    assert data.lineage["curated_dropped_holdout"] == 1  # "h" is a holdout image
    assert keys[0] in data.lineage["curated_shards"]
    assert (data.images[-1] == train_x[-1]).all() and data.labels[-1] == train_y[-1]


# --- a task without base data, with labeled batches as its holdout (tasks/shapes.toml) ---


def _curate(lake, settings, batch_id, n, seed, holdout=False):
    from mlcore.ingest import ingest_batch
    from mlcore.shapes import generate, write_batch
    from mlcore.task import task_of

    task = task_of(settings)
    images, labels = generate(task.classes, n, seed)
    write_batch(lake, batch_id, images, labels, task.classes, holdout=holdout)
    ingest_batch(settings, lake, batch_id, logical_date=datetime(2026, 11, 22, tzinfo=UTC))
    return images, labels


def test_a_batch_holdout_task_without_a_holdout_batch_is_refused_clearly(lake, shapes_settings):
    import pytest

    from mlcore.train import NoHoldout

    _curate(lake, shapes_settings, "train", 30, seed=1)
    with pytest.raises(NoHoldout, match='shapes: .*batch.json {"holdout": true}'):
        build_training_data(shapes_settings, lake)


def test_a_task_without_base_data_trains_on_its_curated_images_only(lake, shapes_settings):
    import pytest

    from mlcore.data_profile import normalization_of
    from mlcore.train import NoTrainingData

    hold_x, hold_y = _curate(lake, shapes_settings, "hold", 40, seed=9, holdout=True)
    with pytest.raises(NoTrainingData, match="no labeled curated images"):
        build_training_data(shapes_settings, lake)
    _curate(lake, shapes_settings, "train-1", 50, seed=1)
    _curate(lake, shapes_settings, "train-2", 30, seed=2)
    data = build_training_data(shapes_settings, lake)
    assert data.lineage["base_train_images"] == 0
    assert data.lineage["curated_labeled_images"] == 80
    assert len(data.images) + len(data.validation_images) == 80
    assert data.images.shape[1:] == (32, 32, 3)
    # The holdout is every image of the holdout batch, never trained on, hashed in the lineage.
    assert len(data.holdout_images) == data.lineage["holdout_images"] == 40
    assert {i.tobytes() for i in data.holdout_images} == {i.tobytes() for i in hold_x}
    trained = {i.tobytes() for i in np.concatenate([data.images, data.validation_images])}
    assert not trained & {i.tobytes() for i in hold_x}
    assert len(data.lineage["holdout_shards"]) == 1 and len(data.lineage["holdout_hash"]) == 64
    # Normalization: this training set's own statistics, not the base data's.
    norm = normalization_of(data.images)
    assert data.normalization == (norm["pixel_mean"], norm["pixel_std"])
    assert data.lineage["normalization"] == norm


def test_a_holdout_image_uploaded_again_for_training_is_never_trained_on(lake, shapes_settings):
    from mlcore.shapes import write_batch
    from mlcore.task import task_of

    task = task_of(shapes_settings)
    hold_x, hold_y = _curate(lake, shapes_settings, "hold", 20, seed=9, holdout=True)
    write_batch(lake, "again", hold_x[:5], hold_y[:5], task.classes)  # same bytes: duplicates
    from mlcore.ingest import ingest_batch

    report = ingest_batch(shapes_settings, lake, "again", logical_date=datetime(2026, 11, 22, tzinfo=UTC))
    assert report.duplicates == 5 and report.accepted == 0  # the holdout batch has them
    _curate(lake, shapes_settings, "train", 20, seed=1)
    data = build_training_data(shapes_settings, lake)
    assert data.lineage["curated_labeled_images"] == 20
    trained = {i.tobytes() for i in np.concatenate([data.images, data.validation_images])}
    assert not trained & {i.tobytes() for i in hold_x}


def test_the_model_applies_the_normalization_it_was_trained_with_after_export(shapes_settings):
    """Built for 3 channels, 32x32 and 5 classes; the normalization rides in the weights and
    in the ONNX graph, whose int8 export the gate judges."""
    from mlcore.export import quantize_int8, to_onnx
    from mlcore.model import FashionCNN, load_weights, predict_proba, weights_bytes
    from mlcore.serving import ServedModel, sha256_hex
    from mlcore.shapes import generate
    from mlcore.task import task_of

    task = task_of(shapes_settings)
    images, _ = generate(task.classes, 64, seed=3)
    model = FashionCNN(task, normalization=(0.42, 0.17)).eval()
    again = load_weights(weights_bytes(model), sha256_hex(weights_bytes(model)))
    assert (float(again.pixel_mean), float(again.pixel_std)) == (0.42, 0.17)
    torch_probs = predict_proba(model, images)
    assert torch_probs.shape == (64, 5)
    fp32 = to_onnx(model)
    onnx_probs = ServedModel(fp32, sha256_hex(fp32)).predict_proba(images, 32)
    assert np.allclose(onnx_probs, torch_probs, atol=1e-5)
    int8 = quantize_int8(fp32, images)
    assert ServedModel(int8, sha256_hex(int8)).predict_proba(images, 32).shape == (64, 5)
    # Another normalization gives other answers: the graph is not using a constant.
    other = FashionCNN(task, normalization=(0.1, 0.5)).eval()
    other.load_state_dict({**model.state_dict(), "pixel_mean": other.pixel_mean,
                           "pixel_std": other.pixel_std})
    assert not np.allclose(predict_proba(other, images), torch_probs, atol=1e-3)


def test_training_is_deterministic_given_the_seed(lake, settings):
    """Same seed, data and thread count: bit-identical weights; another seed: other weights."""
    from mlcore.model import weights_bytes
    from mlcore.train import train

    settings = settings.model_copy(update={"train_subset": 400, "holdout_subset": 100,
                                           "train_epochs": 1})
    data = build_training_data(settings, lake)
    first = train(settings, data)
    again = train(settings, data)
    assert weights_bytes(first.model) == weights_bytes(again.model)
    assert first.evaluation.accuracy == again.evaluation.accuracy
    # The per-epoch curve is the validation split's; the holdout is evaluated only at the end.
    assert [set(row) for row in first.history] == [
        {"epoch", "train_loss", "train_accuracy", "validation_accuracy", "seconds"}]
    other = train(settings.model_copy(update={"seed": settings.seed + 1}), data)
    assert weights_bytes(other.model) != weights_bytes(first.model)


def _augment(images, seed, **kwargs):
    import torch

    from mlcore.model import as_channels_first
    from mlcore.train import augment

    args = {"max_shift": 2, "brightness": 0.1, "mirror": True} | kwargs
    return augment(as_channels_first(images), torch.Generator().manual_seed(seed), **args)


def test_augmentation_is_seeded_and_only_shifts_mirrors_and_scales_brightness():
    import torch

    images = np.random.default_rng(0).integers(1, 200, (64, 9, 7), np.uint8)
    batch = _augment(images, 3)
    assert torch.equal(batch, _augment(images, 3)) and batch.shape == (64, 1, 9, 7)
    assert not torch.equal(batch, _augment(images, 4))
    plain = _augment(images, 3, brightness=0.0)
    padded = torch.nn.functional.pad(torch.from_numpy(images).float() / 255, (2, 2, 2, 2))
    offsets = set()
    for out, src in zip(plain[:, 0], padded, strict=True):
        matches = [(dy, dx, m) for dy in range(5) for dx in range(5) for m in (False, True)
                   if torch.equal(out, (src.flip(1) if m else src)[dy:dy + 9, dx:dx + 7])]
        assert matches, "an augmented image is not a shifted (mirrored) copy of its source"
        offsets.add(matches[0])
    assert len(offsets) > 10  # the draws vary from image to image
    assert {m for _, _, m in offsets} == {False, True}
    # Brightness only scales: same black border, every pixel within 10% of its unscaled value.
    assert torch.equal(batch == 0, plain == 0)
    ratio = batch[plain > 0] / plain[plain > 0]
    assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6 and ratio.std() > 0.01


def test_augmentation_mirrors_only_when_the_task_allows_and_keeps_colour_channels():
    import torch

    images = np.random.default_rng(1).integers(1, 200, (32, 8, 6, 3), np.uint8)
    out = _augment(images, 5, max_shift=0, brightness=0.0, mirror=False)
    # No shift, no brightness, no mirror: exactly the images, channels first.
    assert torch.equal(out, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    mirrored = _augment(images, 5, max_shift=0, brightness=0.0, mirror=True)
    flipped = [torch.equal(m, o.flip(2)) for m, o in zip(mirrored, out, strict=True)]
    assert all(f or torch.equal(m, o) for f, m, o in zip(flipped, mirrored, out, strict=True))
    assert 4 < sum(flipped) < 28  # about half
