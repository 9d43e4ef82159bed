"""Every misuse of ``mlcore`` is one line on stderr that says what was expected, and a
non-zero exit; nothing is done. Runs the real command line in-process over a temp home."""

from __future__ import annotations

import pytest

from mlcore.cli import main
from mlcore.settings import Settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCORE_HOME", str(tmp_path / "home"))
    for name in ("MLCORE_LAKE_URI", "MLCORE_MLFLOW_TRACKING_URI", "MLCORE_S3_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG" + b"0" * 100)
    (tmp_path / "empty").mkdir()
    return tmp_path


MISUSES = [
    # trace: which id forms it takes
    (["trace", "garbage"], "expected an image id (the sha256 of its bytes, 64 hex characters), "
                           "a landing key (landing/<batch_id>/<file>), a local image file, or a "
                           "partition date YYYY-MM-DD with --row N; got 'garbage'"),
    (["trace", ""], "expected an image id"),
    (["trace", "/no/such/image.png"], "got '/no/such/image.png'"),
    (["trace", "2026-11-22"], "a partition date needs --row N"),
    (["trace", "dt=2026-11-22", "--row", "-1"], "--row counts from 0"),
    (["trace", "2026-13-45", "--row", "0"], "'2026-13-45' is not a calendar date"),
    (["trace", "deadbeef", "--row", "3"], "the reference must be a date YYYY-MM-DD"),
    (["trace", "landing/../etc/passwd"], "is not a landing key: expected landing/<batch_id>/<file>"),
    (["trace", "2026-11-22", "--row", "x"], "argument --row: invalid int value: 'x'"),
    # audit: the date format
    (["audit", "list", "--since", "garbage"], "argument --since: expected an ISO-8601 date or "
                                              "time in UTC, e.g. 2026-11-22"),
    (["audit", "list", "--until", "yesterday"], "argument --until: expected an ISO-8601"),
    (["audit", "list", "--since", "2026-11-02", "--until", "2026-11-01"], "must be before --until"),
    (["audit", "list", "--action", "delete"], "argument --action: invalid choice: 'delete' "
                                              "(choose from 'promote', 'force_promote'"),
    # model: versions and reasons
    (["model", "promote", "latest"], "expected a model version number such as 3"),
    (["model", "promote", "1", "--force"], "a forced promotion skips the gate, so it needs --reason"),
    (["model", "promote", "1", "--force", "--reason", "   "], "argument --reason: expected a "
                                                             "reason that says why"),
    (["model", "rollback"], "the following arguments are required: --reason"),
    (["model", "rollback", "--reason", ""], "got a blank one"),
    (["model", "reproduce", "-3"], "expected a model version number"),
    (["quarantine", "reprocess", "../b1", "--reason", "ok"], "expected a batch id of letters"),
    # batch upload and status
    (["batch", "upload", "{home}/nope", "--batch-id", "b1"], "expected a folder of images to upload"),
    (["batch", "upload", "{home}/empty", "--batch-id", "b1"], "holds no files to upload"),
    (["batch", "upload", "{home}/images", "--batch-id", "b 1"], "argument --batch-id: expected a "
                                                               "batch id of letters"),
    (["batch", "upload", "{home}/images", "--batch-id", "b1", "--labels", "{home}/no.csv"],
     "--labels: expected a CSV file (filename,label)"),
    (["batch", "upload", "{home}/images"], "the following arguments are required: --batch-id"),
    (["batch", "status", "b/1"], "expected a batch id"),
    (["demo", "--date", "22/11/2026"], "argument --date: expected a date as YYYY-MM-DD"),
    (["model", "frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("argv", "expected"), MISUSES, ids=[" ".join(a) for a, _ in MISUSES])
def test_misuse_is_one_line_saying_what_was_expected(home, capsys, argv, expected):
    argv = [a.replace("{home}", str(home)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert out == ""
    assert not (home / "home" / "lake" / "landing").exists()  # nothing was done


def test_a_second_upload_under_a_taken_batch_id_is_refused(home, capsys):
    assert main(["batch", "upload", str(home / "images"), "--batch-id", "b1"]) == 0
    capsys.readouterr()
    assert main(["batch", "upload", str(home / "images"), "--batch-id", "b1"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: batch b1 already exists (its upload is complete): upload new or "
                   "changed files under a new --batch-id\n")


@pytest.fixture
def champion(home):
    """A registry whose version 1 is champion (a bare run: no model needs training)."""
    from mlcore.registry import configure_mlflow
    from mlcore.storage import open_lake

    settings = Settings()
    mlc = configure_mlflow(settings, open_lake(settings))
    run = mlc.create_run(mlc.get_experiment_by_name(settings.mlflow_experiment).experiment_id)
    mlc.log_metric(run.info.run_id, "holdout_accuracy", 0.9)
    mlc.create_registered_model(settings.model_name)
    mlc.create_model_version(settings.model_name, f"runs:/{run.info.run_id}/model",
                             run.info.run_id)
    mlc.set_registered_model_alias(settings.model_name, "champion", "1")
    return mlc


@pytest.mark.parametrize(("argv", "expected"), [
    (["model", "promote", "1", "--force", "--reason", "INC-1"],
     "error: version 1 is already champion: nothing to promote\n"),
    (["model", "promote", "1"], "error: version 1 is already champion: nothing to promote\n"),
    (["model", "promote", "7", "--force", "--reason", "INC-1"],
     "error: fashion-classifier has no version 7 (`mlcore model list` shows the versions)\n"),
])
def test_promotion_misuse_against_a_real_registry(champion, capsys, argv, expected):
    from mlcore import audit
    from mlcore.storage import open_lake

    capsys.readouterr()
    assert main(argv) != 0
    assert capsys.readouterr().err == expected
    assert audit.entries(open_lake(Settings())) == []  # nothing audited


def test_model_list_shows_every_version_with_its_aliases(champion, capsys):
    """The command the misuse messages point at (`mlcore model list`) works."""
    import json

    capsys.readouterr()
    assert main(["model", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["version"] == "1" and row["aliases"] == ["champion"]
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["1", "nan", "-"] and "champion" in out
