"""The FastAPI app the plugin mounts under ``/consent``: the "Consent decisions" tab of a DAG run
(server-rendered HTML, shown in an iframe by the Airflow UI), the deployment-wide "Consent decisions"
page of the navigation bar, and the same data as JSON.

A mounted app inherits none of the core API's authentication: every route here checks the caller
itself: a run's routes with ``requires_access_dag("GET", DagAccessEntity.RUN)`` (401 without
credentials, 403 when Airflow's auth manager refuses the DAG); the deployment-wide routes need a user
(401 without) and show only the DAGs the auth manager lets that user read. The UI session's ``_token``
cookie authenticates the iframe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_consent.ui.decisions import recent_decisions, run_decisions

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
_can_read_run = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]


def create_consent_app() -> FastAPI:
    """The consent decisions app: every route behind Airflow's DAG-run read permission."""
    app = FastAPI(title="airflow-consent decisions", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/dags/{dag_id}/runs/{run_id}/decisions", response_class=HTMLResponse, dependencies=_can_read_run)
    def run_decisions_page(dag_id: str, run_id: str) -> HTMLResponse:
        heading = f"DAG {dag_id}, run {run_id}"
        return _page(heading=heading, **run_decisions(dag_id, run_id))

    @app.get("/api/dags/{dag_id}/runs/{run_id}/decisions", dependencies=_can_read_run)
    def run_decisions_json(dag_id: str, run_id: str) -> dict[str, Any]:
        return run_decisions(dag_id, run_id)

    @app.get("/decisions", response_class=HTMLResponse)
    def recent_decisions_page(user: GetUserDep, limit: int = Query(200, ge=1, le=5000)) -> HTMLResponse:
        heading = f"The latest {limit} records of the ledger, of the DAGs you may read"
        return _page(heading=heading, **recent_decisions(_readable_dag_ids(user), limit=limit))

    @app.get("/api/decisions")
    def recent_decisions_json(user: GetUserDep, limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        return recent_decisions(_readable_dag_ids(user), limit=limit)

    return app


def _page(**context: Any) -> HTMLResponse:
    """The decisions table (``templates/decisions.html``): a run's when ``context`` has a ``run_id``."""
    return HTMLResponse(_templates.get_template("decisions.html").render(**context))


def _readable_dag_ids(user: Any) -> set[str]:
    """The DAGs whose runs the auth manager lets ``user`` read: the deployment-wide page shows no other."""
    return get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
