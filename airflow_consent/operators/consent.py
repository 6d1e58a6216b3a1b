"""ConsentGateOperator: blocks the tasks downstream unless the input partitions pass the policies.

``ConsentGateBaseOperator`` holds what the operator and ``ConsentPolicySensor`` share: the arguments
(declared once, checked at parse time), one evaluation, and publishing the result. Cheap to import:
pyarrow, the OPA client and great_expectations are imported only when a task runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.discovery import parse_partition_filter
from airflow_consent.enforcement import MODES, ON_VIOLATION, Mode, OnViolation
from airflow_consent.errors import ConsentConfigurationError, ConsentDenied, NoPartitionsFound
from airflow_consent.policies import purpose_taxonomy

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import JsonValue

    from airflow_consent.config import ConsentSettings
    from airflow_consent.enforcement import Enforcement, Outcome
    from airflow_consent.engines import PolicyEngine
    from airflow_consent.gate import DatasetSpec
    from airflow_consent.models import GateReport, GateRequest

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
        if not _templated(self.purpose) and self.opa_conn_id is None and self.policy_path is None:
            _validate_purpose(task, self.purpose)
        if self.enforcement is not None and self.enforcement not in MODES:
            raise ConsentConfigurationError(f"{task}: enforcement {self.enforcement!r} is not one of {MODES}")
        if self.on_violation not in ON_VIOLATION:
            raise ConsentConfigurationError(f"{task}: on_violation {self.on_violation!r} is not one of {ON_VIOLATION}")
        if self.approved_asset is not None and not isinstance(self.approved_asset, Asset):
            raise ConsentConfigurationError(f"{task}: approved_asset must be an Asset, not {self.approved_asset!r}")
        from airflow_consent.config import settings

        self._check_pinned(settings())

    def _check_filter(self) -> None:
        """``partition_filter`` must parse: when the DAG is parsed, or once rendered when it is templated."""
        try:
            parse_partition_filter(self.partition_filter)
        except ConsentConfigurationError as exc:
            raise ConsentConfigurationError(f"{self.task_id}: {exc}") from exc

    def _check_pinned(self, config: ConsentSettings) -> None:
        """A gate may not set an argument the platform pinned (``[consent] pinned_task_arguments``)."""
        from airflow_consent.config import PINNABLE_TASK_ARGUMENTS

        task = self.task_id
        if unknown := sorted(set(config.pinned_task_arguments) - set(PINNABLE_TASK_ARGUMENTS)):
            raise ConsentConfigurationError(
                f"[consent] pinned_task_arguments names {unknown}; only {list(PINNABLE_TASK_ARGUMENTS)} can be pinned"
            )
        if overridden := [name for name in config.pinned_task_arguments if getattr(self, name, None) is not None]:
            raise ConsentConfigurationError(
                f"{task}: {', '.join(overridden)} set on the task, but the platform pins them to their [consent] "
                "values (pinned_task_arguments): remove the argument(s) from the gate"
            )

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
            evaluated_at=datetime.now(timezone.utc),
        )

    def _evaluate(self, context: Context) -> GateReport:
        """One evaluation: discover, ask OPA once, apply enforcement modes, log the report."""
        from airflow_consent.config import settings
        from airflow_consent.gate import evaluate_gate
        from airflow_consent.report import render_text

        config = settings()
        self._check_pinned(config)
        self._check_filter()
        request = self._gate_request(context)
        report = evaluate_gate(
            request,
            self._dataset_specs(),
            self._engine(config),
            entrypoint=self.entrypoint or config.entrypoint,
            partition_filter=self.partition_filter or None,
            chunk_size=config.query_chunk_size,
            # gate.py annotates logging.Logger; Airflow's task log is a structlog logger with the same methods
            logger=self.log,  # type: ignore[arg-type]
        )
        enforcement = self._enforcement(config)
        report = enforcement.apply(report)
        self._record(report, request, enforcement.default, config.ledger_url)
        self.log.info("%s", render_text(report))
        if not report.blocked and report.denied:
            self.log.warning("Partitions with violations not enforced (warn/dryrun): %s",
                             ", ".join(p.id for p in report.denied))
        return report

    def _record(self, report: GateReport, request: GateRequest, mode: str, ledger_url: str) -> None:
        """Append the decision to the ledger. Fails closed: a ``LedgerError`` raises, and the task is retried."""
        from airflow_consent.ledger import Ledger

        with Ledger(ledger_url) as ledger:
            recorded = ledger.record(report, request, mode=mode, input_digest=report.input_digest or "")
        if recorded:
            self.log.info("Recorded %d decision(s) in the consent ledger %s: seq %d..%d, head %d:%s",
                          len(recorded), ledger.display_url, recorded[0].seq, recorded[-1].seq, recorded[-1].seq,
                          recorded[-1].record_hash)

    def _publish(self, context: Context, report: GateReport, outcome: Outcome) -> list[JsonValue]:
        """Push the report to XCom and, when the gate passes, the approved-asset event; return the approved."""
        context["ti"].xcom_push(key=XCOM_REPORT_KEY, value=report.model_dump(mode="json"))
        approved: list[JsonValue] = [{"id": p.id, "uri": p.uri, "fingerprint": p.fingerprint} for p in outcome.approved]
        for partition in outcome.excluded:
            self.log.warning("Excluded %s: %s", partition.id,
                             "; ".join(f"{v.rule_id} {v.message}" for v in partition.violations))
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

    def _dataset_specs(self) -> list[DatasetSpec]:
        from airflow_consent.config import settings
        from airflow_consent.gate import DatasetSpec

        config_path = self.dataset_config_path or settings().dataset_config_path
        return [
            DatasetSpec(uri=d.uri, name=d.name, dataset_config_path=config_path)
            if isinstance(d, Asset)
            else DatasetSpec(uri=str(d), dataset_config_path=config_path)
            for d in self.datasets
        ]

    def _engine(self, config: ConsentSettings) -> PolicyEngine:
        from airflow_consent.engines import engine_for

        return engine_for(self.opa_conn_id or config.opa_conn_id, self.policy_path or config.policy_path)

    def _enforcement(self, config: ConsentSettings) -> Enforcement:
        from airflow_consent.enforcement import Enforcement, check_mode, parse_rule_modes

        default = self.enforcement or check_mode(config.enforcement, "[consent] enforcement")
        return Enforcement(default=default, per_rule=parse_rule_modes(config.rule_enforcement))


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


def _validate_purpose(task_id: str, purpose: str) -> None:
    known = purpose_taxonomy()
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
