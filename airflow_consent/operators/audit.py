"""ConsentAuditOperator: re-audit, on a schedule, what training used against today's revocations and policies.

Thin: the audit is ``airflow_consent.audit.run_audit``, which ``airflow-consent audit`` runs too.
Cheap to import: the audit, the ledger and pyarrow are imported only when the task runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.errors import ConsentConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import Context

XCOM_AUDIT_KEY = "audit_report"


class ConsentAuditOperator(BaseOperator):
    """Re-audit every partition a training task was cleared on (per the ledger's usage records) against
    today's revocation lists and policies, record the audit in the ledger, and fail when used data is
    now revoked or denied, or could not be re-checked (changed or gone since).

    The audit report (every partition, status, revoked subjects, the runs, tasks and models that used
    it) is in XCom under ``audit_report`` and in the task log; the return value summarises it. A
    ledger or policy engine that cannot be read raises and the task is retried; an affected audit
    fails without retries (a retry finds the same).

    :param purpose: only uses cleared for this purpose (templated); default every purpose.
    :param since: only uses recorded at or after this ISO 8601 date or time (templated), e.g.
        ``"{{ macros.ds_add(ds, -90) }}"``; default every use ever recorded.
    :param fail_on_affected: fail the task when the audit is not clean (default); False only logs and
        pushes the report, for a DAG that branches on it.
    """

    template_fields: Sequence[str] = ("purpose", "since")
    ui_color = "#e8c8f0"

    def __init__(
        self, *, purpose: str | None = None, since: str | None = None, fail_on_affected: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.purpose = purpose
        self.since = since
        self.fail_on_affected = fail_on_affected
        if since and "{{" not in since:
            self._since()  # a bad time fails when the DAG is parsed

    def _since(self):
        from airflow_consent.audit import parse_since

        try:
            return parse_since(self.since)
        except ConsentConfigurationError as exc:
            raise ConsentConfigurationError(f"{self.task_id}: {exc}") from exc

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_consent.audit import render_audit, run_audit

        dag_run = context.get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None)
        try:
            report = run_audit(
                purpose=self.purpose or None,
                since=self._since(),
                requested_by=f"user:{user}" if user else f"dag:{self.dag_id}",
                logger=self.log,
            )  # type: ignore[arg-type]  # a structlog logger, same methods
        except ConsentConfigurationError as exc:
            raise AirflowFailException(f"consent audit misconfigured: {exc}") from exc
        text = render_audit(report)
        self.log.info("%s", text)
        context["ti"].xcom_push(key=XCOM_AUDIT_KEY, value=report.model_dump(mode="json"))
        if report.outcome != "clean" and self.fail_on_affected:
            raise AirflowFailException(text)
        return {
            "audit_id": report.audit_id,
            "outcome": report.outcome,
            "affected_partitions": [f.partition_id for f in report.affected],
            "unverifiable_partitions": [f.partition_id for f in report.unverifiable],
            "runs": sorted({f"{u.dag_id}/{u.run_id}" for u in report.flagged_uses()}),
            "models": sorted({m for u in report.flagged_uses() for m in (*u.models, *u.outlets)}),
        }
