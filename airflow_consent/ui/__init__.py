"""The consent decisions pages: a FastAPI app the plugin mounts under ``/consent`` in the API server.

The plugin registers ``ConsentApp``, which builds the FastAPI app (``airflow_consent.ui.app``) on its
first request: every Airflow process loads the plugins, and only the API server should pay for
FastAPI and Airflow's API security code (1.5 s of imports). The operators never import this package.
"""

from __future__ import annotations

from typing import Any

URL_PREFIX = "/consent"
RUN_TAB_ROUTE = "consent_decisions"
NAV_ROUTE = "consent_decisions_all"


class ConsentApp:
    """An ASGI app that builds the consent decisions FastAPI app on its first call and delegates to it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_consent.ui.app import create_consent_app

            self._app = create_consent_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "airflow_consent.ui.ConsentApp"
