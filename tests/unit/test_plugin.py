"""The Airflow UI plugin serves Data Docs from the lake, and nothing outside it."""

import importlib.util

import pytest
from fastapi.testclient import TestClient

from mlcore.settings import REPO_ROOT, get_settings
from mlcore.storage import LocalLake


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCORE_HOME", str(tmp_path))
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location("mlcore_ui", REPO_ROOT / "plugins" / "mlcore_ui.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    LocalLake(tmp_path / "lake").write_bytes("validation/data_docs/index.html", b"<h1>docs</h1>")
    (tmp_path / "secret.txt").write_text("do not serve")
    yield TestClient(plugin.data_docs_app)
    get_settings.cache_clear()


def test_data_docs_page_is_served_from_the_lake(client):
    resp = client.get("/index.html")
    assert resp.status_code == 200 and resp.text == "<h1>docs</h1>"
    assert resp.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["../../secret.txt", "..%2F..%2Fsecret.txt", "missing.html"])
def test_paths_outside_the_docs_or_missing_are_404(client, path):
    assert client.get(f"/{path}").status_code == 404
