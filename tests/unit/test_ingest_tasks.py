"""Several tasks on one lake: a batch uploaded for one task never reaches another's data.

Two deployed tasks (Fashion-MNIST, the default, and ``tiny-rgb``, 16x16 RGB) run the real
upload and ingestion code on one lake folder and one claims database.
"""

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from mlcore.claims import Claims
from mlcore.data import known_image_ids, list_shards, read_shard, shards_for_dates
from mlcore.images import encode_png
from mlcore.ingest import ingest_batch, ready_batches
from mlcore.label_index import labeled_count
from mlcore.settings import Settings
from mlcore.storage import open_lake
from mlcore.upload import upload_batch
from tests.conftest import DAY


def _rgb_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)  # values near the reference profile's mean intensity
    return encode_png(rng.integers(0, 150, (20, 20, 3), dtype=np.uint8))


def _upload(lake, tmp_path, batch_id: str, seeds: range, labels: str | None = None):
    folder = tmp_path / "upload" / batch_id
    folder.mkdir(parents=True)
    files = {}
    for s in seeds:
        (folder / f"{s}.png").write_bytes(_rgb_png(s))
        files[f"{s}.png"] = folder / f"{s}.png"
    if labels is not None:
        (folder / "labels.csv").write_text(labels)
        files["labels.csv"] = folder / "labels.csv"
    return upload_batch(lake, batch_id, files, workers=2)


@pytest.fixture
def deployment(tmp_path, two_tasks_dir):
    settings = Settings(home=tmp_path / "home", tasks_dir=two_tasks_dir)
    rgb = settings.for_task("tiny-rgb")
    return settings, rgb, open_lake(settings), open_lake(rgb)


def test_a_batch_for_one_task_never_reaches_the_other_tasks_tables(deployment, tmp_path):
    fmnist, rgb, lake_a, lake_b = deployment
    # The same images go to both tasks (a duplicate only within a task), labeled only for B.
    _upload(lake_a, tmp_path / "a", "shared", range(4))
    _upload(lake_b, tmp_path / "b", "shared", range(4), labels="0.png,green\n1.png,blue\n")
    _upload(lake_b, tmp_path / "b", "only-b", range(10, 13))
    assert sorted(ready_batches(lake_b)) == ["only-b", "shared"]
    assert ready_batches(lake_a) == ["shared"]  # B's landing is not A's

    b_shared = ingest_batch(rgb, lake_b, "shared", logical_date=DAY)
    b_only = ingest_batch(rgb, lake_b, "only-b", logical_date=DAY)
    a_shared = ingest_batch(fmnist, lake_a, "shared", logical_date=DAY)
    assert (b_shared.accepted, b_only.accepted, a_shared.accepted) == (4, 3, 4)
    assert a_shared.duplicates == 0  # B's claims are not A's
    assert b_shared.labeled == 2 and a_shared.labeled == 0

    # Curated data: each task's shards in its own prefix, in its own pixel shape.
    assert all(k.startswith("tasks/tiny-rgb/") for k in lake_a.list("tasks"))
    a_shards, b_shards = list_shards(lake_a), list_shards(lake_b)
    assert len(known_image_ids(lake_a)) == 4 and len(known_image_ids(lake_b)) == 7
    assert {read_shard(lake_a, k).schema.field("pixels").type for k in a_shards} == {pa.binary(784)}
    assert {read_shard(lake_b, k).schema.field("pixels").type for k in b_shards} == {
        pa.binary(16 * 16 * 3)}
    # Scoring A's night reads A's shards only: none of B's batches, all in A's shape.
    night = shards_for_dates(lake_a, [f"{d:%Y-%m-%d}" for d in (DAY - timedelta(hours=12),
                                                              DAY + timedelta(hours=12))])
    rows = pa.concat_tables([read_shard(lake_a, k) for k in night])
    assert set(rows.column("batch_id").to_pylist()) == {"shared"} and rows.num_rows == 4
    assert set(rows.column("image_id").to_pylist()) == known_image_ids(lake_a)

    # Claims and the label index: per task, in the one shared database.
    url = fmnist.resolved_claims_db_url
    assert Claims(url).owned_by("only-b") == set()
    assert len(Claims(url, scope="tiny-rgb").owned_by("only-b")) == 3
    assert len(Claims(url).owned_by("shared")) == len(Claims(url, scope="tiny-rgb").owned_by("shared")) == 4
    assert (labeled_count(fmnist, lake_a), labeled_count(rgb, lake_b)) == (0, 2)

    # The ledgers and Data Docs are per task too.
    assert lake_a.exists("_state/ingest/shared.json") and not lake_a.exists("_state/ingest/only-b.json")
    assert lake_b.list("validation/data_docs") and all(
        not k.startswith("tasks/") for k in lake_b.list("validation/data_docs"))


def test_existing_default_task_claims_keep_working(tmp_path, two_tasks_dir):
    """Claims made before tasks were scoped (table ``image_claims``) still own their images."""
    import sqlalchemy as sa

    settings = Settings(home=tmp_path / "home", tasks_dir=two_tasks_dir)
    settings.home.mkdir(parents=True)
    url = settings.resolved_claims_db_url
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what an earlier release wrote
        conn.execute(sa.text("CREATE TABLE image_claims (image_id VARCHAR(64) PRIMARY KEY, "
                             "batch_id VARCHAR(128) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO image_claims VALUES ('img1', 'old-batch')"))
    engine.dispose()
    assert Claims(url).claim("new-batch", ["img1", "img2"]) == {"img1": "old-batch"}
    assert Claims(url, scope="tiny-rgb").claim("new-batch", ["img1"]) == {}


def test_the_cli_follows_task_with_the_default_task_by_default(tmp_path, two_tasks_dir,
                                                                monkeypatch, capsys):
    from mlcore.cli import main

    monkeypatch.setenv("MLCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLCORE_TASKS_DIR", str(two_tasks_dir))
    src = tmp_path / "src"
    src.mkdir()
    for s in range(3):
        (src / f"{s}.png").write_bytes(_rgb_png(s))
    assert main(["batch", "upload", str(src), "--batch-id", "b1", "--task", "tiny-rgb"]) == 0
    assert (tmp_path / "home/lake/tasks/tiny-rgb/landing/b1/_READY").exists()
    assert not (tmp_path / "home/lake/landing/b1").exists()
    capsys.readouterr()
    assert main(["batch", "status", "b1", "--task", "tiny-rgb", "--json"]) == 0
    assert '"ready"' in capsys.readouterr().out
    assert main(["batch", "status", "b1"]) == 1  # not in the default task's landing
    assert main(["batch", "status", "b1", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
