"""Airflow UI plugin: Great Expectations Data Docs served from the lake, and a link to MLflow.

Data Docs are read through the lake (local folder or S3) at request time, so the links in a
failed task's log (``/data-docs/validations/...``) work wherever the lake lives, without
hosting a public bucket. Each deployed task has its own Data Docs: the default task's at
``/data-docs/...``, task ``t``'s (in ``tasks/t/`` of the lake) at ``/data-docs/t/<t>/...``;
a name no spec of the deployment carries is a 404. A global operator extra link, "Data Docs", turns the URL a task
pushed to XCom (key ``data_docs_url``, pushed by ``ingest`` before it fails a batch) into a
button on that task instance's page.

Airflow does not authenticate plugin apps (apache/airflow#72655), so every route here,
the asset route included, depends on Airflow's own security dependencies: the UI's
``_token`` cookie or an API ``Authorization: Bearer`` token, and read access to plugins.
There is no OpenAPI schema or docs page. Pages are served with placeholders sealed into
character references, assets pointed at the pinned local copies under ``_assets/``
(``plugins/mlcore_ui_assets``, installed by ``scripts/setup.sh``), and a strict
Content-Security-Policy plus ``nosniff`` on every response (``mlcore.data_docs``).
"""

from __future__ import annotations

import json
import mimetypes
import re
from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import requires_access_view
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from mlcore.data_docs import (
    ASSETS_ROUTE,
    SERVED_PACKAGES,
    content_security_policy,
    localise,
    page_depth,
    page_key,
    seal,
)

DATA_DOCS_XCOM_KEY = "data_docs_url"
ASSETS_DIR = Path(__file__).resolve().parent / "mlcore_ui_assets"
MAX_PATH_BYTES = 1024  # S3's key limit; longer requests cannot name a page
MAX_SEGMENT_BYTES = 255  # a file name's limit on every local file system we run on
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")
_ROOT = re.compile(r"(/[A-Za-z0-9._~\-]+)*")
TASK_SEGMENT = "t"  # /data-docs/t/<task>/...: a task's Data Docs (mlcore.settings.for_task)
_TASK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # mlcore.task.TaskSpec.name

# Anyone Airflow lets read its plugins may read Data Docs; anonymous requests get 401.
data_docs_access = requires_access_view(AccessView.PLUGINS)

data_docs_app = FastAPI(title="Great Expectations Data Docs", docs_url=None, redoc_url=None,
                        openapi_url=None, dependencies=[Depends(data_docs_access)])


@data_docs_app.middleware("http")
async def _security_headers(request: Request, call_next):
    """Every response, errors and redirects included, carries the CSP and ``nosniff``."""
    response = await call_next(request)
    assets = assets_source(request.url.scheme, request.url.netloc,
                           request.scope.get("root_path", ""))
    response.headers["Content-Security-Policy"] = content_security_policy(assets)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def assets_source(scheme: str, netloc: str, root_path: str) -> str:
    """The CSP source of the asset route, at the origin the browser used (its Host header);
    a malformed Host or root path yields ``'none'`` rather than extra directives."""
    root = root_path.rstrip("/")
    if scheme in ("http", "https") and _HOST.fullmatch(netloc) and _ROOT.fullmatch(root):
        return f"{scheme}://{netloc}{root}/{ASSETS_ROUTE}/"
    return "'none'"


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="no such Data Docs page")


def _check_path(path: str) -> str:
    """``path`` if it can name a file at all, else 404 (never a 500 from the OS or S3)."""
    if (not path or len(path.encode()) > MAX_PATH_BYTES
            or any(len(part.encode()) > MAX_SEGMENT_BYTES for part in path.split("/"))):
        raise _not_found()
    return path


@data_docs_app.get("/")
def data_docs_index() -> RedirectResponse:
    return RedirectResponse("index.html")


@data_docs_app.get(f"/{ASSETS_ROUTE}/{{path:path}}")
def data_docs_asset(path: str) -> Response:
    """A pinned browser asset: our script, or a file of one of the pinned npm packages."""
    parts = _check_path(path).split("/")
    if parts[0] == "mlcore":
        folder = ASSETS_DIR
    elif ("/".join(parts[:2]) if parts[0].startswith("@") else parts[0]) in SERVED_PACKAGES:
        folder = ASSETS_DIR / "node_modules"
    else:
        raise _not_found()
    package = (folder / "/".join(parts[:2] if parts[0].startswith("@") else parts[:1])).resolve()
    file = (folder / path).resolve()
    if "\\" in path or package not in file.parents or not file.is_file():
        raise _not_found()
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return Response(content=file.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=86400"})


@data_docs_app.get("/_links/mlflow")
def mlflow_link() -> RedirectResponse:
    """The menu's MLflow entry: the deployment's MLflow UI (``MLCORE_MLFLOW_UI_URL``), read
    per request, so the plugin builds no settings when Airflow imports it."""
    from mlcore.settings import get_settings

    return RedirectResponse(get_settings().mlflow_ui_url, status_code=307)


@data_docs_app.get(f"/{TASK_SEGMENT}/{{task}}/{{path:path}}")
def task_data_docs_file(task: str, path: str) -> Response:
    """A page of task ``task``'s Data Docs; its assets are two folders further up."""
    if not path:
        return RedirectResponse("index.html")
    return _serve(_task_settings(task), path, depth=page_depth(path) + 2)


@data_docs_app.get("/{path:path}")
def data_docs_file(path: str) -> Response:
    """A page of the default task's Data Docs."""
    from mlcore.settings import get_settings

    return _serve(get_settings(), path, depth=page_depth(path))


def _task_settings(task: str):
    """The settings of the deployed task ``task``, read per request; 404 for any other name."""
    from mlcore.settings import get_settings
    from mlcore.task import TaskSpecError, UnknownTask

    if not _TASK_NAME.fullmatch(task):
        raise _not_found()
    try:
        return get_settings().for_task(task)
    except (UnknownTask, TaskSpecError) as exc:
        raise _not_found() from exc


def _serve(settings, path: str, *, depth: int) -> Response:
    from mlcore.storage import UnsafeKey, open_lake

    try:
        data = open_lake(settings).read_bytes(page_key(_check_path(path)))
    except (UnsafeKey, OSError) as exc:  # missing, a folder, a name the OS refuses
        raise _not_found() from exc
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if media_type == "text/html":
        data = localise(seal(data.decode("utf-8", "replace")), depth).encode()
    return Response(content=data, media_type=media_type,
                    headers={"Cache-Control": "private, no-cache"})


def _xcom_value(ti_key, key: str):
    """The XCom ``key`` of one task instance, read from the metadata DB (API server side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key=key, run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id, map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None or row.value is None:
        return None
    value = row.value
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return value


class DataDocsLink(BaseOperatorLink):
    """The "Data Docs" button of every task: the validation page it pushed, else "" (none)."""

    name = "Data Docs"

    def get_link(self, operator, *, ti_key) -> str:
        value = _xcom_value(ti_key, DATA_DOCS_XCOM_KEY)
        return value if isinstance(value, str) else ""


class MlcoreUiPlugin(AirflowPlugin):
    name = "mlcore_ui"
    global_operator_extra_links = [DataDocsLink()]
    fastapi_apps = [{"app": data_docs_app, "url_prefix": "/data-docs", "name": "Data Docs"}]
    external_views = [
        {"name": "Data Docs", "href": "data-docs/index.html", "destination": "nav",
         "category": "browse", "url_route": "data-docs"},
        {"name": "MLflow", "href": "data-docs/_links/mlflow", "destination": "nav",
         "category": "browse"},
    ]
