"""ConsentPolicySensor: wait until the input partitions pass the policies.

It separates *not yet* — no partitions yet, a manifest or attestation missing, consent still being
re-collected: keep waiting — from *never* — a violation of a rule whose METADATA says
``recoverable: false``, such as a license that forbids the purpose: fail at once (or skip, with
``soft_fail``). Poke and reschedule modes poke from a worker; the deferrable mode waits in the
triggerer (``ConsentPolicyTrigger``) and holds no worker slot. Either way every evaluation is one
gate run (``airflow_consent.run``), recorded in the ledger where it was made.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from airflow_consent.errors import ConsentConfigurationError, NoPartitionsFound
from airflow_consent.operators.consent import ConsentGateBaseOperator, ConsentGateDenied

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_consent.models import GateReport
    from airflow_consent.triggers.consent import ConsentPolicyTrigger


class _DeferrableSensor(BaseSensorOperator):
    """A sensor that takes ``deferrable`` (default ``[operators] default_deferrable``) beside the sensor
    arguments, so that ``ConsentPolicySensor`` needs no constructor of its own."""

    def __init__(
        self, *, deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable


class ConsentPolicySensor(ConsentGateBaseOperator, _DeferrableSensor):
    """Succeed once OPA allows the partitions of ``datasets`` for ``purpose``; fail at once on a
    non-recoverable violation.

    Takes the gate's arguments (see ``ConsentGateBaseOperator``) and the sensor's (``poke_interval``,
    ``timeout``, ``mode``, ``soft_fail``, ``exponential_backoff``, ``max_wait``), plus
    ``deferrable`` (default ``[operators] default_deferrable``). Returns the approved partitions.
    """

    def poke(self, context: Context) -> bool | PokeReturnValue:
        try:
            report = self._evaluate(context)
        except NoPartitionsFound as exc:
            self.log.info("Not yet: %s", exc)
            return False
        except ConsentConfigurationError as exc:
            raise AirflowFailException(f"consent sensor misconfigured: {exc}") from exc
        return self._judge(context, report)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            first = self.poke(context)
        except AirflowFailException as exc:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping due to soft_fail: {exc}") from exc
            raise
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        self.defer(
            trigger=self._trigger(context),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume from the trigger's event (soft_fail and timeouts are handled by the base sensor)."""
        from airflow_consent.models import GateReport

        payload = event or {}
        status = payload.get("status")
        if status == "error":
            raise AirflowException(f"consent sensor: {payload['message']}")  # engine failure: retried
        if status == "misconfigured":
            raise AirflowFailException(f"consent sensor misconfigured: {payload['message']}")
        if status not in {"passed", "never"}:
            raise AirflowException(f"consent sensor: unexpected trigger event {event!r}")
        report = GateReport.model_validate(payload["report"])  # recorded in the ledger by the trigger
        result = self._judge(context, report)
        if not result:
            raise AirflowException("consent sensor: the trigger fired but the partitions do not pass yet")
        return result.xcom_value if isinstance(result, PokeReturnValue) else None

    def _judge(self, context: Context, report: GateReport) -> bool | PokeReturnValue:
        from airflow_consent.enforcement import wait_verdict
        from airflow_consent.report import denial_message

        verdict = wait_verdict(report, self.on_violation)
        if verdict.state == "wait":
            self.log.info("Not yet: waiting for %s", ", ".join(p.id for p in verdict.waiting))
            return False
        approved = self._publish(context, report, verdict.outcome)
        if verdict.state == "never":
            reason = ", ".join(p.id for p in verdict.hopeless) or "no partition left"
            raise ConsentGateDenied(f"Waiting cannot help ({reason}): {denial_message(report)}", report)
        return PokeReturnValue(is_done=True, xcom_value=approved)

    def _trigger(self, context: Context) -> ConsentPolicyTrigger:
        """The trigger carries the gate's own arguments: the triggerer resolves them under its ``[consent]``."""
        from airflow_consent.run import arguments_of
        from airflow_consent.triggers.consent import ConsentPolicyTrigger

        self._settings()  # a pinned argument fails here, before deferring
        return ConsentPolicyTrigger(
            request=self._gate_request(context).model_dump(mode="json"),
            datasets=[{"uri": uri, "name": name} for uri, name in self._datasets()],
            arguments=dataclasses.asdict(arguments_of(self)),
            on_violation=self.on_violation,
            poke_interval=self.poke_interval,
            partition_filter=self.partition_filter or None,
            exponential_backoff=self.exponential_backoff,
            max_wait=self.max_wait.total_seconds() if isinstance(self.max_wait, timedelta) else self.max_wait,
        )
