"""The Airflow UI plugin serves Data Docs from the lake, to logged-in users only, and nothing
outside it: every response carries a strict CSP and ``nosniff``; bad paths are 404."""

import importlib.util

import pytest
from fastapi.testclient import TestClient

from mlcore.data_docs import neutralise
from mlcore.settings import REPO_ROOT, get_settings
from mlcore.storage import LocalLake

PAGE = ('<html><head><script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/'
        'bootstrap.min.css"/><img src="https://example.com/track.png">'
        '<script src="mlcore-assets:mlcore/datadocs.js"></script></head><body>'
        f'<td>{neutralise("<img src=x onerror=alert(1)>")}</td>'
        '<a href="https://greatexpectations.io">GX</a></body></html>')
HOSTILE_BATCH = 'b<img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def plugin():
    spec = importlib.util.spec_from_file_location("mlcore_ui", REPO_ROOT / "plugins" / "mlcore_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lake_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCORE_HOME", str(tmp_path))
    get_settings.cache_clear()
    lake = LocalLake(tmp_path / "lake")
    lake.write_bytes("validation/data_docs/index.html", b"<h1>docs</h1>")
    lake.write_bytes("validation/data_docs/static/images/logo-long.png", b"\x89PNG")
    lake.write_bytes(f"validation/data_docs/validations/s/{neutralise(HOSTILE_BATCH)}/t/p.html",
                     PAGE.encode())
    (tmp_path / "secret.txt").write_text("do not serve")
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def client(plugin, lake_home):
    """A client whose requests pass the plugin's access check (as a logged-in user's do)."""
    plugin.data_docs_app.dependency_overrides[plugin.data_docs_access] = lambda: None
    yield TestClient(plugin.data_docs_app)
    plugin.data_docs_app.dependency_overrides.clear()


@pytest.fixture
def anonymous(plugin, lake_home):
    return TestClient(plugin.data_docs_app)


def test_the_mlflow_menu_link_goes_where_settings_say(client, plugin, monkeypatch):
    monkeypatch.setenv("MLCORE_MLFLOW_UI_URL", "https://mlflow.example.internal/ui")
    get_settings.cache_clear()
    resp = client.get("/_links/mlflow", follow_redirects=False)
    assert resp.status_code == 307
    assert resp.headers["location"] == "https://mlflow.example.internal/ui"
    [view] = [v for v in plugin.MlcoreUiPlugin.external_views if v["name"] == "MLflow"]
    assert view["href"] == "data-docs/_links/mlflow"  # relative: behind the Airflow login


def test_data_docs_page_is_served_from_the_lake(client):
    resp = client.get("/index.html")
    assert resp.status_code == 200 and resp.text == "<h1>docs</h1>"
    assert resp.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", [
    "/", "/index.html", "/validations", "/missing.html", "/_assets/mlcore/datadocs.js",
    "/_assets/jquery/dist/jquery.min.js", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect",
    "/_links/mlflow",
])
def test_every_route_refuses_anonymous_requests(anonymous, path):
    resp = anonymous.get(path, follow_redirects=False)
    assert resp.status_code in (401, 403), (path, resp.status_code, resp.text[:200])
    assert "docs" not in resp.text.lower() or "not authenticated" in resp.text.lower()
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_there_is_no_openapi_schema_or_docs_page(client):
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", [
    "../../secret.txt", "..%2F..%2Fsecret.txt", "%2e%2e/%2e%2e/secret.txt", "..%5C..%5Csecret.txt",
    "a\\..\\..\\secret.txt", "%2Fetc%2Fpasswd", "/etc/passwd", "missing.html", "validations",
    "validations/", "static", "static/images", "x" * 300 + ".html", "a/" * 600 + "b.html",
    "%00.html", "index.html/x",
])
def test_paths_outside_the_docs_missing_folders_or_overlong_are_404(client, path):
    assert client.get(f"/{path}").status_code == 404


def test_pages_get_a_strict_csp_and_nosniff(client):
    resp = client.get("/index.html")
    csp = dict(d.strip().split(" ", 1) for d in resp.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "http://testserver/_assets/"  # nothing inline, nothing else
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_a_forged_host_header_cannot_add_csp_directives(plugin):
    assert plugin.assets_source("https", "airflow.example.com", "/data-docs") \
        == "https://airflow.example.com/data-docs/_assets/"
    assert plugin.assets_source("http", "[::1]:8080", "/data-docs/") == "http://[::1]:8080/data-docs/_assets/"
    for netloc, root in [("evil; script-src *", "/data-docs"), ("h", "/x; script-src *"),
                         ("h 'unsafe-inline'", "")]:
        assert plugin.assets_source("http", netloc, root) == "'none'"


def test_a_page_shows_data_as_text_and_loads_only_local_assets(client):
    resp = client.get(f"/validations/s/{HOSTILE_BATCH}/t/p.html")  # the link a user follows
    assert resp.status_code == 200
    html = resp.text
    assert "<img src=x" not in html and "&#60;img src=x onerror=alert(1)&#62;" in html
    assert 'src="../../../../_assets/jquery/dist/jquery.min.js"' in html
    assert 'href="../../../../_assets/bootstrap/dist/css/bootstrap.min.css"' in html
    assert 'src="../../../../_assets/mlcore/datadocs.js"' in html
    assert "example.com" not in html  # an unknown external asset is dropped, not loaded
    assert 'href="https://greatexpectations.io"' in html  # a plain link stays a link


def test_pinned_assets_and_our_script_are_served(client):
    js = client.get("/_assets/mlcore/datadocs.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "mlcore-bootstrap-table" in js.text
    jquery = client.get("/_assets/jquery/dist/jquery.min.js")
    assert jquery.status_code == 200, "run scripts/setup.sh: the npm assets are not installed"
    assert "jQuery v3.7.1" in jquery.text[:200]
    assert client.get("/_assets/jquery/LICENSE.txt").status_code == 200


@pytest.mark.parametrize("path", [
    "/_assets/lodash/index.js", "/_assets/jquery/../../package.json",
    "/_assets/jquery/..%2F..%2Fpackage.json", "/_assets/mlcore/../package-lock.json",
    "/_assets/mlcore", "/_assets/jquery/dist", "/_assets/@fortawesome/other/x.css",
])
def test_assets_outside_the_pinned_packages_are_404(client, path):
    assert client.get(path).status_code == 404


@pytest.fixture
def task_docs(lake_home, two_tasks_dir, monkeypatch):
    """``tiny-rgb``'s Data Docs in its own lake prefix, beside the default task's."""
    monkeypatch.setenv("MLCORE_TASKS_DIR", str(two_tasks_dir))
    get_settings.cache_clear()
    lake = LocalLake(lake_home / "lake")
    lake.write_bytes("tasks/tiny-rgb/validation/data_docs/index.html", b"<h1>rgb docs</h1>")
    lake.write_bytes("tasks/tiny-rgb/validation/data_docs/validations/s/b1/p.html", PAGE.encode())
    return lake


def test_each_task_has_its_own_data_docs_under_a_task_segment(client, task_docs):
    assert client.get("/t/tiny-rgb/index.html").text == "<h1>rgb docs</h1>"
    assert client.get("/index.html").text == "<h1>docs</h1>"  # the default task's, as before
    assert client.get("/t/fashion-mnist/index.html").text == "<h1>docs</h1>"
    page = client.get("/t/tiny-rgb/validations/s/b1/p.html")
    # Assets resolve from the task's pages too: /data-docs/t/tiny-rgb/validations/s/b1/ -> /data-docs/
    assert 'src="../../../../../_assets/jquery/dist/jquery.min.js"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/t/tiny-rgb/", follow_redirects=False).headers["location"] == "index.html"


@pytest.mark.parametrize("task", ["unknown", "Tiny-RGB", "...", "tiny-rgb%2F..", "a" * 41])
def test_a_task_the_deployment_does_not_serve_is_404(client, task_docs, task):
    resp = client.get(f"/t/{task}/index.html")
    assert resp.status_code == 404 and "rgb docs" not in resp.text


def test_task_data_docs_refuse_anonymous_requests(anonymous, task_docs):
    assert anonymous.get("/t/tiny-rgb/index.html").status_code in (401, 403)
