"""The FastAPI app the plugin mounts under ``/consent``: the "Consent decisions" tab of a DAG run
(server-rendered HTML, shown in an iframe by the Airflow UI) and the same data as JSON.

A mounted app inherits none of the core API's authentication: every route here checks the caller
itself with ``requires_access_dag("GET", DagAccessEntity.RUN)`` (401 without credentials, 403 when
Airflow's auth manager refuses the DAG). The UI session's ``_token`` cookie authenticates the iframe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_consent.ui.decisions import run_decisions

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
_can_read_run = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]


def create_consent_app() -> FastAPI:
    """The consent decisions app: every route behind Airflow's DAG-run read permission."""
    app = FastAPI(title="airflow-consent decisions", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/dags/{dag_id}/runs/{run_id}/decisions", response_class=HTMLResponse, dependencies=_can_read_run)
    def run_decisions_page(dag_id: str, run_id: str) -> HTMLResponse:
        page = _templates.get_template("run_decisions.html").render(**run_decisions(dag_id, run_id))
        return HTMLResponse(page)

    @app.get("/api/dags/{dag_id}/runs/{run_id}/decisions", dependencies=_can_read_run)
    def run_decisions_json(dag_id: str, run_id: str) -> dict[str, Any]:
        return run_decisions(dag_id, run_id)

    return app
