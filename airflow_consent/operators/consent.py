"""ConsentGateOperator: blocks the tasks downstream unless every input partition passes the policies.

Cheap to import: pyarrow, the OPA client and great_expectations are imported only in ``execute``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.policies import purpose_taxonomy

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_consent.engines import PolicyEngine
    from airflow_consent.gate import DatasetSpec

XCOM_REPORT_KEY = "gate_report"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_FILTER_OPS = {"=", "==", "!=", "<", ">", "<=", ">=", "in", "not in"}


class ConsentGateOperator(BaseOperator):
    """Fail unless OPA allows every partition of ``datasets`` for ``purpose``.

    :param datasets: dataset URIs (local paths or fsspec URIs) or Airflow ``Asset``s, hive-partitioned.
    :param purpose: the training purpose, an id of the purpose taxonomy (templated).
    :param partition_filter: pyarrow DNF filter over partition keys, e.g.
        ``[("source", "in", ["studio_optin"])]`` (templated; values compared as strings).
    :param entrypoint: the policy path returning the decision for all partitions.
    :param opa_conn_id: an ``opa`` connection to a server; default ``[consent] opa_conn_id``, and
        when that is empty the shipped policies are evaluated by a local opa binary.
    :param policy_path: policies for the local engine (default ``[consent] policy_path`` or shipped).
    :param model: the model being trained, recorded in the request.

    A denial fails the task without retries (``AirflowFailException``) and lists each denied partition,
    rule and remediation; an engine failure raises and is retried. The gate report is pushed to XCom
    under the key ``gate_report``.
    """

    template_fields: Sequence[str] = ("datasets", "purpose", "partition_filter", "model")
    ui_color = "#f6d8a8"

    def __init__(
        self,
        *,
        datasets: Sequence[str | Asset] | str | Asset,
        purpose: str,
        partition_filter: list | None = None,
        entrypoint: str | None = None,
        opa_conn_id: str | None = None,
        policy_path: str | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.datasets = [datasets] if isinstance(datasets, (str, Asset)) else list(datasets)
        self.purpose = purpose
        self.partition_filter = partition_filter
        self.entrypoint = entrypoint
        self.opa_conn_id = opa_conn_id
        self.policy_path = policy_path
        self.model = model
        self._validate()

    def _validate(self) -> None:
        """Catch what can be caught when the DAG is parsed."""
        if not self.datasets:
            raise ConsentConfigurationError(f"{self.task_id}: datasets is empty")
        for dataset in self.datasets:
            if not isinstance(dataset, (str, Asset)) or not str(getattr(dataset, "uri", dataset)).strip():
                raise ConsentConfigurationError(f"{self.task_id}: a dataset must be a URI or an Asset, not {dataset!r}")
        if self.entrypoint is not None and not _ENTRYPOINT.match(self.entrypoint):
            raise ConsentConfigurationError(
                f"{self.task_id}: entrypoint {self.entrypoint!r} must be a policy path like 'consent/main/decision'"
            )
        if self.partition_filter is not None:
            _validate_filter(self.task_id, self.partition_filter)
        if "{{" not in self.purpose and self.opa_conn_id is None and self.policy_path is None:
            _validate_purpose(self.task_id, self.purpose)

    def execute(self, context: Context) -> None:
        from airflow_consent.config import settings
        from airflow_consent.gate import evaluate_gate
        from airflow_consent.models import GateRequest, Requester
        from airflow_consent.report import denial_message, render_text

        config = settings()
        dag_run = context.get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None)
        request = GateRequest(
            purpose=self.purpose,
            model=self.model,
            dag_id=self.dag_id,
            run_id=context.get("run_id"),
            task_id=self.task_id,
            requested_by=Requester(kind="user", id=user) if user else Requester(kind="dag", id=self.dag_id),
            evaluated_at=datetime.now(timezone.utc),
        )
        try:
            report = evaluate_gate(
                request,
                self._dataset_specs(),
                self._engine(config),
                entrypoint=self.entrypoint or config.entrypoint,
                partition_filter=self.partition_filter or None,
                logger=self.log,
            )
        except ConsentConfigurationError as exc:
            raise AirflowFailException(f"consent gate misconfigured: {exc}") from exc
        self.log.info("%s", render_text(report))
        context["ti"].xcom_push(key=XCOM_REPORT_KEY, value=report.model_dump(mode="json"))
        if not report.allow:
            raise AirflowFailException(denial_message(report))

    def _dataset_specs(self) -> list[DatasetSpec]:
        from airflow_consent.gate import DatasetSpec

        return [
            DatasetSpec(uri=d.uri, name=d.name) if isinstance(d, Asset) else DatasetSpec(uri=str(d))
            for d in self.datasets
        ]

    def _engine(self, config) -> PolicyEngine:
        conn_id = self.opa_conn_id or config.opa_conn_id
        if conn_id:
            from airflow_consent.hooks.opa import OpaHook

            return OpaHook(opa_conn_id=conn_id)
        from airflow_consent.engines.local import LocalOpaEngine

        return LocalOpaEngine(policy_path=self.policy_path or config.policy_path)


def _validate_purpose(task_id: str, purpose: str) -> None:
    known = purpose_taxonomy()
    if purpose not in known:
        raise ConsentConfigurationError(
            f"{task_id}: unknown purpose {purpose!r}; the purpose taxonomy has: {', '.join(sorted(known))}"
        )


def _validate_filter(task_id: str, partition_filter: list) -> None:
    clauses = partition_filter if partition_filter and isinstance(partition_filter[0], list) else [partition_filter]
    for clause in clauses:
        for term in clause:
            if not (isinstance(term, (tuple, list)) and len(term) == 3 and str(term[1]).lower() in _FILTER_OPS):
                raise ConsentConfigurationError(
                    f"{task_id}: partition_filter term {term!r} must be (key, op, value) with op one of "
                    f"{sorted(_FILTER_OPS)}"
                )
