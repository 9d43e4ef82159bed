"""The shapes generator: seeded, balanced, varied, fast; its landing batches ingest as uploads."""

import json
import time

import numpy as np
import pytest

from mlcore.labels import LABELS_FILE
from mlcore.shapes import SHAPES, UnknownShape, generate, write_landing_batches
from mlcore.task import TASKS_DIR, load_task_spec

SPEC = load_task_spec(TASKS_DIR / "shapes.toml")


def test_same_seed_same_images_other_seed_other_images():
    a, la = generate(SPEC.classes, 200, seed=7)
    b, lb = generate(SPEC.classes, 200, seed=7)
    c, _ = generate(SPEC.classes, 200, seed=8)
    assert (a == b).all() and (la == lb).all()
    assert not (a == c).all()
    assert a.shape == (200, *SPEC.shape) and a.dtype == np.uint8


@pytest.mark.parametrize("n", [5, 1001, 2000])
def test_classes_are_balanced(n):
    _, labels = generate(SPEC.classes, n, seed=1)
    counts = np.bincount(labels, minlength=SPEC.num_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_images_vary_and_pass_the_ingestion_intensity_rules():
    images, _ = generate(SPEC.classes, 1000, seed=3)
    flat = images.reshape(len(images), -1).astype(np.float64)
    means, stds = flat.mean(axis=1), flat.std(axis=1)
    # file_profiles suite: mean in [1, 254], std >= 2 (not blank).
    assert means.min() > 1 and means.max() < 254 and stds.min() > 2
    assert np.ptp(means) > 100  # backgrounds and colours vary widely
    assert len({img.tobytes() for img in images}) == len(images)


def test_thousands_of_images_per_second():
    generate(SPEC.classes, 100, seed=0)
    started = time.process_time()  # CPU time: other processes on a shared machine don't count
    generate(SPEC.classes, 4000, seed=0)
    assert 4000 / (time.process_time() - started) > 1000


def test_a_class_the_generator_cannot_draw_is_refused():
    with pytest.raises(UnknownShape, match="hexagon"):
        generate(("circle", "hexagon"), 10, seed=0)
    assert set(SPEC.classes) <= set(SHAPES)


def test_landing_batches_are_uploads_with_labels_and_a_marked_holdout(lake):
    batches = write_landing_batches(lake, SPEC, seed=5, train_batches=2, per_batch=20,
                                    holdout_images=15, unlabeled_images=5)
    assert [(b.batch_id, b.files, b.holdout) for b in batches] == [
        ("shapes-train-01", 20, False), ("shapes-train-02", 20, False),
        ("shapes-holdout-01", 15, True), ("shapes-unlabeled-01", 5, False)]
    hold = "landing/shapes-holdout-01"
    assert json.loads(lake.read_bytes(f"{hold}/batch.json")) == {"holdout": True}
    rows = lake.read_bytes(f"{hold}/{LABELS_FILE}").decode().splitlines()
    assert rows[0] == "filename,label" and len(rows) == 16
    assert all(r.split(",")[1] in SPEC.classes for r in rows[1:])
    assert not lake.exists(f"landing/shapes-unlabeled-01/{LABELS_FILE}")
    assert not lake.exists("landing/shapes-train-01/batch.json")
    assert all(lake.exists(f"landing/{b.batch_id}/_READY") for b in batches)
