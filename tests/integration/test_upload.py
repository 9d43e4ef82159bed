"""``mlcore batch upload`` and ``batch status`` on a folder lake and on S3 (moto_server over
HTTP): an upload killed halfway leaves no ``_READY``; the rerun sends only what is missing
or changed and yields exactly the files, byte for byte; ingestion then accounts for each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlcore.data import CLASSES, load_fashion_mnist
from mlcore.images import encode_png
from mlcore.ingest import ingest_batch
from mlcore.seed import bad_files
from mlcore.settings import REPO_ROOT, Settings
from mlcore.storage import open_lake
from mlcore.upload import UploadRefused, batch_files, batch_status, upload_batch
from mlcore.validation import ValidationFailed
from tests.conftest import DAY

FILES = 300


@pytest.fixture(params=["local", "s3"])
def settings(request, tmp_path) -> Settings:
    if request.param == "local":
        return Settings(home=tmp_path / "home")
    s3 = request.getfixturevalue("s3_server")
    return Settings(home=tmp_path / "home", lake_uri=f"s3://{s3.bucket}/upload-{uuid.uuid4().hex[:8]}",
                    s3_endpoint_url=s3.endpoint, s3_access_key_id=s3.access_key_id,
                    s3_secret_access_key=s3.secret_access_key, s3_region=s3.region)


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLCORE_", "AWS_"))}
    for name, value in settings.model_dump(exclude_defaults=True).items():
        secret = getattr(value, "get_secret_value", None)
        env[f"MLCORE_{name.upper()}"] = str(secret() if secret else value)
    return {**env, "PYTHONPATH": str(REPO_ROOT)}


def mlcore(settings: Settings, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlcore", *args], env=cli_env(settings),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture
def batch_dir(tmp_path, settings) -> tuple[Path, Path]:
    """FILES real Fashion-MNIST PNGs in sub-folders, and a labels CSV kept outside the folder."""
    images, labels = load_fashion_mnist(settings.fmnist_dir, "train")
    src = tmp_path / "src"
    rows = ["filename,label"]
    for i in range(FILES):
        name = f"{'ab'[i % 2]}/img-{i:04d}.png"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(encode_png(images[i]))
        rows.append(f"{name},{CLASSES[labels[i]]}")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("\n".join(rows) + "\n")
    return src, labels_csv


def test_killed_upload_leaves_no_ready_and_the_rerun_completes_it_exactly(settings, batch_dir):
    src, labels_csv = batch_dir
    lake, prefix = open_lake(settings), "landing/night-01/"
    args = ["batch", "upload", str(src), "--batch-id", "night-01", "--labels", str(labels_csv)]

    # One verified file per line; SIGKILL after the 20th, with most of the batch unsent.
    proc = mlcore(settings, *args, "--workers", "2", "--verbose")
    first = [proc.stdout.readline() for _ in range(20)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert all(line.startswith("sent ") for line in first), first
    stored = lake.list(prefix)
    assert prefix + "_READY" not in stored
    assert 20 <= len(stored) < FILES + 1, len(stored)

    # Change one file that was already sent: the rerun must send it again.
    changed = first[0].split()[1]
    other = load_fashion_mnist(settings.fmnist_dir, "test")[0][0]
    (src / changed).write_bytes(encode_png(other))

    rerun = mlcore(settings, *args, "--json")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    result = json.loads(out)
    assert result["files"] == FILES + 1
    assert result["kept"] == len(stored) - 1 and result["sent"] == FILES + 1 - result["kept"]

    files = batch_files(src, labels_csv)
    assert lake.list(prefix) == sorted([prefix + n for n in files] + [prefix + "_READY"])
    for name, path in files.items():
        assert lake.read_bytes(prefix + name) == path.read_bytes(), name
    assert lake.read_bytes(prefix + "_READY") == b""

    # A third run is refused: the batch is complete, its id is taken.
    again = mlcore(settings, *args)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 2 and err.count("\n") == 1 and "new --batch-id" in err

    report = ingest_batch(settings, lake, "night-01", logical_date=DAY)
    assert report.files == FILES
    assert report.accepted + report.quarantined + report.duplicates == FILES
    assert report.accepted == report.labeled > FILES * 0.9

    status = batch_status(settings, lake, "night-01")
    assert status.state == "ingested" and status.counts["files"] == FILES
    assert status.counts["accepted"] == report.accepted


def test_status_of_a_rejected_batch_lists_each_file_its_reason_and_the_data_docs(
        settings, tmp_path):
    images, _ = load_fashion_mnist(settings.fmnist_dir, "train")
    src = tmp_path / "bad"
    src.mkdir()
    bad = {n: (d, why) for n, (d, why) in bad_files(images[:4]).items() if why != "accepted"}
    for name, (data, _) in bad.items():
        (src / name).write_bytes(data)
    (src / "good.png").write_bytes(encode_png(images[10]))
    lake = open_lake(settings)

    status = batch_status(settings, lake, "bad-01")
    assert status.state == "not_found"
    upload_batch(lake, "bad-01", batch_files(src))
    assert batch_status(settings, lake, "bad-01").state == "ready"
    with pytest.raises(ValidationFailed):
        ingest_batch(settings, lake, "bad-01", logical_date=DAY)

    status = batch_status(settings, lake, "bad-01")
    assert status.state == "rejected" and status.failed_expectations
    reasons = {q["key"].rsplit("/", 1)[-1]: q["reason"] for q in status.quarantined}
    assert reasons == {**{n: why for n, (_, why) in bad.items()}, "good.png": "batch_rejected"}
    assert len(status.data_docs) == 2
    assert all(u.startswith(settings.data_docs_url + "/") and u.endswith(".html")
               for u in status.data_docs)
    # Each link names a page that exists in the lake.
    for url in status.data_docs:
        assert lake.exists("validation/data_docs/" + url.removeprefix(settings.data_docs_url + "/"))


def test_stray_objects_under_the_batch_id_are_refused_before_anything_is_sent(settings, tmp_path):
    lake = open_lake(settings)
    src = tmp_path / "one"
    src.mkdir()
    (src / "a.png").write_bytes(b"a" * 100)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "b.png").write_bytes(b"b" * 100)
    # An interrupted upload of another folder under the same id.
    lake.put_upload("landing/mixed-01/b.png", b"b" * 100)
    with pytest.raises(UploadRefused, match="not in this upload"):
        upload_batch(lake, "mixed-01", batch_files(src))
    assert lake.list("landing/mixed-01/") == ["landing/mixed-01/b.png"]
