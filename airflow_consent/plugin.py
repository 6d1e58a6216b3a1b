"""The Airflow plugin: a "Consent report" link on every gate task, pointing at its gate report.

Registered twice on purpose: through the ``airflow.plugins`` entry point (loaded in every
deployment) and in provider info ``plugins`` (loaded only with ``[core] lazy_discover_providers =
False``). No web app and no listener: nothing here is served without Airflow's own authentication,
and nothing can swallow a gate's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from airflow_consent.operators.consent import ConsentGateOperator

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
    """The gate task instance's XCom tab in the Airflow UI, where its ``gate_report`` is."""

    name = "Consent report"
    operators = _gate_classes()

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        path = "/".join(
            quote(part, safe="")
            for part in ("dags", ti_key.dag_id, "runs", ti_key.run_id, "tasks", ti_key.task_id, "xcom")
        )
        return f"{base}/{path}"


class ConsentPlugin(AirflowPlugin):
    """airflow-consent's plugin: the consent report link for gate operators and sensors."""

    name = "airflow_consent"
    operator_extra_links = [ConsentReportLink()]  # noqa: RUF012 - AirflowPlugin declares it a list
