"""The Airflow plugin: a "Consent decisions" tab on every DAG run page, served by the plugin's
FastAPI app under ``/consent``, and a "Consent report" link on every gate task pointing at that tab.

Registered twice on purpose: through the ``airflow.plugins`` entry point (loaded in every
deployment) and in provider info ``plugins`` (loaded only with ``[core] lazy_discover_providers =
False``). Every route of the app checks Airflow's auth manager itself (``airflow_consent.ui.app``):
a mounted app inherits none of the core API's authentication. No listener: nothing here can swallow
a gate's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.ui import NAV_ROUTE, RUN_TAB_ROUTE, URL_PREFIX, ConsentApp

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def _gate_classes() -> list[type]:
    classes: list[type] = [ConsentGateOperator]
    try:  # written separately; the link is attached when it exists
        from airflow_consent.sensors.consent import ConsentPolicySensor
    except ImportError:
        return classes
    return [*classes, ConsentPolicySensor]


class ConsentReportLink(BaseOperatorLink):
    """The "Consent decisions" tab of the gate task's DAG run: every partition's decision in the ledger."""

    name = "Consent report"
    operators = _gate_classes()

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        path = "/".join(
            quote(part, safe="") for part in ("dags", ti_key.dag_id, "runs", ti_key.run_id, "plugin", RUN_TAB_ROUTE)
        )
        return f"{base}/{path}"


class ConsentPlugin(AirflowPlugin):
    """airflow-consent's plugin: the consent decisions app and tab, and the consent report link for
    gate operators and sensors."""

    name = "airflow_consent"
    operator_extra_links = [ConsentReportLink()]  # noqa: RUF012 - AirflowPlugin declares it a list
    fastapi_apps = [  # noqa: RUF012
        {"app": ConsentApp(), "url_prefix": URL_PREFIX, "name": "Consent decisions"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Consent decisions",
            # relative: resolved against the UI's base URL, like the UI's own links
            "href": URL_PREFIX.lstrip("/") + "/dags/{DAG_ID}/runs/{RUN_ID}/decisions",
            "destination": "dag_run",
            "url_route": RUN_TAB_ROUTE,
        },
        {
            "name": "Consent decisions",
            "href": URL_PREFIX.lstrip("/") + "/decisions",
            "destination": "nav",
            "category": "browse",
            "url_route": NAV_ROUTE,
        },
    ]
