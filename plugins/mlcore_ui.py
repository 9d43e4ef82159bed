"""Airflow UI plugin: Great Expectations Data Docs served from the lake, and a link to MLflow.

Data Docs are read through the lake (local folder or S3) at request time, so the links in a
failed task's log (``/data-docs/validations/...``) work wherever the lake lives, without
hosting a public bucket. A global operator extra link, "Data Docs", turns the URL a task
pushed to XCom (key ``data_docs_url``, pushed by ``ingest`` before it fails a batch) into a
button on that task instance's page.
"""

from __future__ import annotations

import json
import mimetypes

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

DOCS_PREFIX = "validation/data_docs"
DATA_DOCS_XCOM_KEY = "data_docs_url"

data_docs_app = FastAPI(title="Great Expectations Data Docs")


@data_docs_app.get("/")
def data_docs_index() -> RedirectResponse:
    return RedirectResponse("index.html")


@data_docs_app.get("/{path:path}")
def data_docs_file(path: str) -> Response:
    from mlcore.settings import get_settings
    from mlcore.storage import UnsafeKey, open_lake

    try:
        data = open_lake(get_settings()).read_bytes(f"{DOCS_PREFIX}/{path}")
    except (UnsafeKey, FileNotFoundError) as exc:
        raise HTTPException(status_code=404, detail="no such Data Docs page") from exc
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(content=data, media_type=media_type)


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
        {"name": "MLflow", "href": "http://localhost:5000", "destination": "nav",
         "category": "browse"},
    ]
