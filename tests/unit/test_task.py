"""Task specs: the committed ones load, and a bad spec fails at load naming its field."""

import pytest

from mlcore.settings import Settings
from mlcore.task import (
    TASKS_DIR,
    TaskSpecError,
    UnknownTask,
    default_task,
    deployed_tasks,
    load_task_spec,
    task_of,
    task_path,
)

GOOD = """
name = "products"
classes = ["mug", "lamp", "chair"]
height = 64
width = 48
channels = 3
base_data = "none"
holdout = "batches"
"""


def _write(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_fashion_mnist_spec_is_the_reference_shape():
    spec = load_task_spec(TASKS_DIR / "fashion-mnist.toml")
    assert spec.num_classes == 10 and spec.classes[7] == "Sneaker"
    assert spec.shape == (28, 28) and spec.pixel_bytes == 784 and spec.mode == "L"
    assert (spec.base_data, spec.holdout, spec.model_width) == ("fashion-mnist",
                                                               "fashion-mnist-test", 64)
    assert spec.model_widths == (32, 128, 256)  # a narrow first block, on the full-size image
    assert spec.model_hidden == 512  # a hidden layer in the head
    assert spec.augment_mirror  # a mirrored garment is the same garment


def test_rgb_spec_derives_its_shape(tmp_path):
    spec = load_task_spec(_write(tmp_path, GOOD))
    assert spec.shape == (64, 48, 3) and spec.pixel_bytes == 64 * 48 * 3 and spec.mode == "RGB"
    assert spec.model_width == 32 and spec.model_widths == (32, 64, 128)  # the defaults
    assert spec.model_hidden == 0  # a linear head unless the spec asks for a hidden layer
    assert not spec.augment_mirror  # mirroring is opted into: it changes some classes (text)


@pytest.mark.parametrize(("edit", "field"), [
    (("", 'colour = "red"\n'), "colour"),                       # unknown field
    (('["mug", "lamp", "chair"]', '["mug"]'), "classes"),       # 1 class
    (('["mug", "lamp", "chair"]', '["mug", "Mug"]'), "classes"),  # duplicate names
    (("height = 64", "height = 0"), "height"),                  # 0 px
    (("width = 48", "width = -3"), "width"),
    (("width = 48", "width = 7"), "width"),                    # below the CNN's minimum
    (("channels = 3", "channels = 5"), "channels"),              # 5 channels
    (('base_data = "none"', 'base_data = "imagenet"'), "base_data"),
    (('holdout = "batches"', ""), "holdout"),                   # missing
    (('name = "products"', 'name = "Has Spaces"'), "name"),
])
def test_bad_spec_fails_at_load_naming_the_field(tmp_path, edit, field):
    old, new = edit
    text = GOOD + new if not old else GOOD.replace(old, new)
    with pytest.raises(TaskSpecError) as err:
        load_task_spec(_write(tmp_path, text))
    assert f"{field}:" in str(err.value) and "spec.toml" in str(err.value)


def test_not_toml_and_missing_file_are_spec_errors(tmp_path):
    with pytest.raises(TaskSpecError, match="not valid TOML"):
        load_task_spec(_write(tmp_path, "classes = [unclosed"))
    with pytest.raises(TaskSpecError, match="cannot read"):
        load_task_spec(tmp_path / "absent.toml")


def test_every_committed_spec_loads_and_is_named_after_its_file():
    specs = sorted(TASKS_DIR.glob("*.toml"))
    assert specs
    for path in specs:
        assert load_task_spec(path).name == path.stem


def test_default_task_follows_the_setting(monkeypatch, tmp_path):
    assert Settings().task == "fashion-mnist"
    assert default_task().name == "fashion-mnist"
    assert task_path("fashion-mnist") == TASKS_DIR / "fashion-mnist.toml"
    assert task_path(str(tmp_path / "x.toml")) == tmp_path / "x.toml"


def test_data_shape_follows_the_spec(tmp_path):
    """The curated schema, shard pixels, labels and CLASSES alias all come from the spec."""
    import numpy as np
    import pyarrow as pa

    from mlcore import data
    from mlcore.labels import parse_label

    spec = load_task_spec(_write(tmp_path, GOOD))
    assert data.curated_schema(spec).field("pixels").type == pa.binary(64 * 48 * 3)
    assert data.curated_schema().field("pixels").type == pa.binary(28 * 28)  # the default
    images = np.random.default_rng(0).integers(0, 256, (3, *spec.shape), dtype=np.uint8)
    table = pa.table({"pixels": pa.array([i.tobytes() for i in images], pa.binary(spec.pixel_bytes))})
    assert (data.shard_pixels(table, spec) == images).all()
    assert data.CLASSES == default_task().classes and data.CLASSES[0] == "T-shirt/top"
    # Labels of the default task: names in any case, indexes below the class count.
    assert (parse_label("sneaker"), parse_label("9"), parse_label("10"), parse_label("01")) == (
        7, 9, -1, -1)


def test_tasks_dir_setting_moves_where_names_are_looked_up(tmp_path):
    (tmp_path / "products.toml").write_text(GOOD)
    assert load_task_spec(task_path("products", tmp_path)).shape == (64, 48, 3)


# --- several tasks in one deployment ------------------------------------------------------


def test_deployed_tasks_are_every_spec_with_the_default_first(two_tasks_dir):
    (two_tasks_dir / "aaa.toml").write_text(GOOD.replace('"products"', '"aaa"'))
    names = [t.name for t in deployed_tasks(Settings(tasks_dir=two_tasks_dir))]
    assert names == ["fashion-mnist", "aaa", "tiny-rgb"]
    names = [t.name for t in deployed_tasks(Settings(tasks_dir=two_tasks_dir, task="tiny-rgb"))]
    assert names == ["tiny-rgb", "aaa", "fashion-mnist"]


def test_a_spec_named_unlike_its_file_or_twice_is_an_error_naming_the_file(two_tasks_dir):
    (two_tasks_dir / "rgb.toml").write_text(GOOD.replace('"products"', '"tiny-rgb"'))
    with pytest.raises(TaskSpecError, match=r"rgb\.toml.*differs from the file name"):
        deployed_tasks(Settings(tasks_dir=two_tasks_dir))
    (two_tasks_dir / "rgb.toml").unlink()
    outside = two_tasks_dir.parent / "elsewhere.toml"
    outside.write_text(GOOD.replace('"products"', '"tiny-rgb"'))
    with pytest.raises(TaskSpecError, match=r"tiny-rgb\.toml"):  # the default given as a path
        deployed_tasks(Settings(tasks_dir=two_tasks_dir, task=str(outside)))


def test_the_default_tasks_settings_are_unchanged(two_tasks_dir, tmp_path):
    settings = Settings(home=tmp_path, tasks_dir=two_tasks_dir, model_name="my-model")
    assert settings.for_task("fashion-mnist") is settings and settings.task_scope == ""
    assert settings.resolved_lake_uri == str((tmp_path / "lake").resolve())


@pytest.mark.parametrize(("lake_uri", "scoped"), [
    ("", None),  # <home>/lake
    ("s3://bucket", "s3://bucket/tasks/tiny-rgb"),
    ("s3://bucket/prod/", "s3://bucket/prod/tasks/tiny-rgb"),
    ("file:///srv/lake", "file:///srv/lake/tasks/tiny-rgb"),
])
def test_another_task_gets_its_own_prefix_model_and_experiment(two_tasks_dir, tmp_path,
                                                               lake_uri, scoped):
    settings = Settings(home=tmp_path, tasks_dir=two_tasks_dir, lake_uri=lake_uri,
                        data_docs_url="https://af.example/data-docs/")
    rgb = settings.for_task("tiny-rgb")
    assert rgb.resolved_lake_uri == (scoped or f"{(tmp_path / 'lake').resolve()}/tasks/tiny-rgb")
    assert (rgb.task, rgb.task_scope) == ("tiny-rgb", "tiny-rgb")
    assert rgb.model_name == rgb.mlflow_experiment == "tiny-rgb-classifier"
    assert rgb.data_docs_url == "https://af.example/data-docs/t/tiny-rgb"
    assert task_of(rgb).shape == (16, 16, 3)
    # Shared: the databases, the limits; scoping a scoped object starts from the deployment.
    assert rgb.resolved_claims_db_url == settings.resolved_claims_db_url
    assert rgb.resolved_tracking_uri == settings.resolved_tracking_uri
    assert rgb.for_task("tiny-rgb").resolved_lake_uri == rgb.resolved_lake_uri
    assert rgb.for_task("fashion-mnist") is settings and rgb.deployment is settings
    from mlcore.airflow_local import airflow_env  # Airflow serves the deployment, every task

    env = airflow_env(rgb)
    assert not any("tiny-rgb" in env.get(k, "") for k in (
        "MLCORE_TASK", "MLCORE_LAKE_URI", "MLCORE_MODEL_NAME", "MLCORE_DATA_DOCS_URL"))


def test_an_unknown_task_is_refused_with_the_served_names(two_tasks_dir):
    with pytest.raises(UnknownTask, match=r"'nope'.*\['fashion-mnist', 'tiny-rgb'\]"):
        Settings(tasks_dir=two_tasks_dir).for_task("nope")
