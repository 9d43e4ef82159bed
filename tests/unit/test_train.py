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
