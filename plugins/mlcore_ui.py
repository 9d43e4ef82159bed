"""Airflow UI plugin: Great Expectations Data Docs served from the lake, and a link to MLflow.

Data Docs are read through the lake (local folder or S3) at request time, so the links in a
failed task's log (``/data-docs/validations/...``) work wherever the lake lives, without
hosting a public bucket.
"""

from __future__ import annotations

import mimetypes

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

DOCS_PREFIX = "validation/data_docs"

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


class MlcoreUiPlugin(AirflowPlugin):
    name = "mlcore_ui"
    fastapi_apps = [{"app": data_docs_app, "url_prefix": "/data-docs", "name": "Data Docs"}]
    external_views = [
        {"name": "Data Docs", "href": "data-docs/index.html", "destination": "nav",
         "category": "browse", "url_route": "data-docs"},
        {"name": "MLflow", "href": "http://localhost:5000", "destination": "nav",
         "category": "browse"},
    ]
