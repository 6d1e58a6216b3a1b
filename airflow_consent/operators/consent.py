"""ConsentGateOperator: blocks the tasks downstream unless the input partitions pass the policies.

``ConsentGateBaseOperator`` holds what the operator and ``ConsentPolicySensor`` share: the arguments
(declared once, checked at parse time), one evaluation, and publishing the result. Cheap to import:
pyarrow, the OPA client and great_expectations are imported only when a task runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.discovery import parse_partition_filter
from airflow_consent.enforcement import MODES, ON_VIOLATION, Mode, OnViolation
from airflow_consent.errors import ConsentConfigurationError, ConsentDenied, NoPartitionsFound
from airflow_consent.policies import purpose_taxonomy

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from pydantic import JsonValue

    from airflow_consent.enforcement import Outcome
    from airflow_consent.models import GateReport, GateRequest
    from airflow_consent.run import GateSettings

XCOM_REPORT_KEY = "gate_report"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class ConsentGateDenied(ConsentDenied, AirflowFailException):
    """The policies blocked the gate: fails the task without retries; carries the gate report."""


class ConsentGateBaseOperator(BaseOperator):
    """Arguments, evaluation and publishing shared by ``ConsentGateOperator`` and ``ConsentPolicySensor``.

    :param datasets: dataset URIs (local paths or fsspec URIs) or Airflow ``Asset``s, hive-partitioned.
    :param purpose: the training purpose, an id of the purpose taxonomy (templated).
    :param partition_filter: pyarrow DNF filter over partition keys, e.g.
        ``[("source", "in", ["studio_optin"])]`` (templated; values compared as strings; read by
        ``airflow_consent.discovery.parse_partition_filter`` at parse time, or once rendered when templated).
    :param entrypoint: the policy path returning the decision for all partitions.
    :param opa_conn_id: an ``opa`` connection to a server; default ``[consent] opa_conn_id``, and
        when that is empty the shipped policies are evaluated by a local opa binary.
    :param policy_path: policies for the local engine (default ``[consent] policy_path`` or shipped).
    :param model: the model being trained, recorded in the request.
    :param enforcement: ``deny`` / ``warn`` / ``dryrun`` for rules the platform's
        ``[consent] rule_enforcement`` does not set; default ``[consent] enforcement``.
    :param on_violation: ``fail`` the gate when a partition is blocked, or ``exclude`` blocked
        partitions and pass the others (failing when none is left).
    :param approved_asset: an Asset that receives an event when the gate passes, whose ``extra``
        carries the decision id, purpose, policy revision and the approved partitions.
    :param dataset_config_path: directory of the datasets' evidence configurations
        (``<dataset>.json``, see ``airflow_consent.evidence.config``); default
        ``[consent] dataset_config_path``; a dataset without one is judged on its manifests alone.
    """

    template_fields: Sequence[str] = ("datasets", "purpose", "partition_filter", "model")
    ui_color = "#f6d8a8"
    _lineage_report: GateReport | None = None  # this task's latest report, for its OpenLineage events

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
        enforcement: Mode | None = None,
        on_violation: OnViolation = "fail",
        approved_asset: Asset | None = None,
        dataset_config_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        if approved_asset is not None:
            kwargs["outlets"] = [*(kwargs.get("outlets") or []), approved_asset]
        super().__init__(**kwargs)
        self.dataset_config_path = os.fspath(dataset_config_path) if dataset_config_path else None
        self.datasets: list[str | Asset] = [datasets] if isinstance(datasets, (str, Asset)) else list(datasets)
        self.purpose = purpose
        self.partition_filter = partition_filter
        self.entrypoint = entrypoint
        self.opa_conn_id = opa_conn_id
        self.policy_path = policy_path
        self.model = model
        self.enforcement = enforcement
        self.on_violation = on_violation
        self.approved_asset = approved_asset
        self._validate_gate()

    def _validate_gate(self) -> None:
        """Catch what can be caught when the DAG is parsed."""
        task = self.task_id
        if not self.datasets:
            raise ConsentConfigurationError(f"{task}: datasets is empty")
        for dataset in self.datasets:
            if not isinstance(dataset, (str, Asset)) or not str(getattr(dataset, "uri", dataset)).strip():
                raise ConsentConfigurationError(f"{task}: a dataset must be a URI or an Asset, not {dataset!r}")
        if self.entrypoint is not None and not _ENTRYPOINT.match(self.entrypoint):
            raise ConsentConfigurationError(
                f"{task}: entrypoint {self.entrypoint!r} must be a policy path like 'consent/main/decision'"
            )
        if not _templated(self.partition_filter):
            self._check_filter()
        if not isinstance(self.purpose, str):
            raise ConsentConfigurationError(f"{task}: purpose must be a string, not {self.purpose!r}")
        if self.enforcement is not None and self.enforcement not in MODES:
            raise ConsentConfigurationError(f"{task}: enforcement {self.enforcement!r} is not one of {MODES}")
        if self.on_violation not in ON_VIOLATION:
            raise ConsentConfigurationError(f"{task}: on_violation {self.on_violation!r} is not one of {ON_VIOLATION}")
        if self.approved_asset is not None and not isinstance(self.approved_asset, Asset):
            raise ConsentConfigurationError(f"{task}: approved_asset must be an Asset, not {self.approved_asset!r}")
        settings = self._settings()  # pinned arguments, [consent] modes
        if not _templated(self.purpose) and settings.opa_conn_id is None:  # a server's taxonomy: checked at run time
            _validate_purpose(task, self.purpose, settings.policy_path)

    def _check_filter(self) -> None:
        """``partition_filter`` must parse: when the DAG is parsed, or once rendered when it is templated."""
        try:
            parse_partition_filter(self.partition_filter)
        except ConsentConfigurationError as exc:
            raise ConsentConfigurationError(f"{self.task_id}: {exc}") from exc

    def _settings(self) -> GateSettings:
        """This gate's settings, resolved as every gate run resolves them (``airflow_consent.run.resolve``)."""
        from airflow_consent.run import arguments_of, resolve

        try:
            return resolve(arguments_of(self))
        except ConsentConfigurationError as exc:
            raise ConsentConfigurationError(f"{self.task_id}: {exc}") from exc

    # --- at run time -------------------------------------------------------------------------

    def _gate_request(self, context: Context) -> GateRequest:
        from airflow_consent.models import GateRequest, Requester

        dag_run = context.get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None)
        return GateRequest(
            purpose=self.purpose,
            model=self.model,
            dag_id=self.dag_id,
            run_id=context.get("run_id"),
            task_id=self.task_id,
            requested_by=Requester(kind="user", id=user) if user else Requester(kind="dag", id=self.dag_id),
            evaluated_at=datetime.now(UTC),
        )

    def _evaluate(self, context: Context) -> GateReport:
        """One gate run (``airflow_consent.run.run_gate``): evaluate, enforce, record; log the report."""
        from airflow_consent.report import render_text
        from airflow_consent.run import run_gate

        self._check_filter()
        settings = self._settings()
        report = run_gate(
            self._gate_request(context),
            settings.specs(self._datasets()),
            settings,
            partition_filter=self.partition_filter or None,
            logger=self.log,
        )
        self._lineage_report = report
        self.log.info("%s", render_text(report))
        if not report.blocked and report.denied:
            self.log.warning(
                "Partitions with violations not enforced (warn/dryrun): %s", ", ".join(p.id for p in report.denied)
            )
        return report

    def _publish(self, context: Context, report: GateReport, outcome: Outcome) -> list[JsonValue]:
        """Push the report to XCom and, when the gate passes, the approved-asset event; return the approved."""
        self._lineage_report = report  # a deferred sensor's report comes from the trigger
        context["ti"].xcom_push(key=XCOM_REPORT_KEY, value=report.model_dump(mode="json"))
        approved: list[JsonValue] = [{"id": p.id, "uri": p.uri, "fingerprint": p.fingerprint} for p in outcome.approved]
        for partition in outcome.excluded:
            self.log.warning(
                "Excluded %s: %s", partition.id, "; ".join(f"{v.rule_id} {v.message}" for v in partition.violations)
            )
        if outcome.passed and self.approved_asset is not None:
            context["outlet_events"][self.approved_asset].extra = {
                "decision_id": report.decision_id,
                "purpose": report.purpose,
                "policy_revision": report.policy_revision,
                "opa_version": report.opa_version,
                "approved_partitions": approved,
                "excluded_partitions": [p.id for p in outcome.excluded],
            }
        return approved

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """For the OpenLineage provider: this task's decision as facets (``airflow_consent.lineage``);
        the partitions that passed are the ``subset`` of each input."""
        return self._openlineage(completed=True)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage | None:
        """For the OpenLineage provider: the facets of a failed gate; its decision, if it reached one."""
        return self._openlineage(completed=False)

    def _openlineage(self, *, completed: bool) -> OperatorLineage | None:
        """Never raises, so lineage cannot change the verdict; None without the OpenLineage provider."""
        try:
            from airflow_consent.enforcement import outcome
            from airflow_consent.lineage import gate_lineage

            report = self._lineage_report
            return gate_lineage(
                report,
                outcome(report, self.on_violation) if report else None,
                self._datasets(),
                enforcement=self._settings().enforcement.default,
                on_violation=self.on_violation,
                model=self.model,
                completed=completed,
            )
        except ImportError:
            return None
        except Exception:
            self.log.warning("The consent gate's OpenLineage facets could not be built", exc_info=True)
            return None

    def _datasets(self) -> list[tuple[str, str | None]]:
        """(URI, name) of each dataset; a plain URI's name is its last path component."""
        return [(d.uri, d.name) if isinstance(d, Asset) else (str(d), None) for d in self.datasets]


class ConsentGateOperator(ConsentGateBaseOperator):
    """Fail unless OPA allows the partitions of ``datasets`` for ``purpose``.

    A blocked gate fails without retries (``ConsentGateDenied``) listing each blocked partition,
    rule and remediation; an engine failure raises and is retried. The gate report is in XCom
    under ``gate_report``; the approved partitions (id, uri, fingerprint) are the return value.
    The arguments are described on ``ConsentGateBaseOperator``.
    """

    def execute(self, context: Context) -> list[JsonValue]:
        from airflow_consent.enforcement import outcome
        from airflow_consent.report import denial_message

        try:
            report = self._evaluate(context)
        except (ConsentConfigurationError, NoPartitionsFound) as exc:
            raise AirflowFailException(f"consent gate misconfigured: {exc}") from exc
        result = outcome(report, self.on_violation)
        approved = self._publish(context, report, result)
        if not result.passed:
            raise ConsentGateDenied(denial_message(report), report)
        return approved


def _validate_purpose(task_id: str, purpose: str, policy_path: str | None) -> None:
    """``purpose`` must be in the taxonomy of the policies the gate will use."""
    try:
        known = purpose_taxonomy(Path(policy_path) if policy_path else None)
    except (OSError, ValueError, KeyError) as exc:
        raise ConsentConfigurationError(
            f"{task_id}: cannot read the purpose taxonomy of the policies at {policy_path}: {exc}"
        ) from exc
    if purpose not in known:
        raise ConsentConfigurationError(
            f"{task_id}: unknown purpose {purpose!r}; the purpose taxonomy has: {', '.join(sorted(known))}"
        )


def _templated(value: object) -> bool:
    """Whether a Jinja template (``{{ ... }}``) is anywhere in ``value``: such arguments are checked once rendered."""
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_templated(item) for item in value)
    return False
