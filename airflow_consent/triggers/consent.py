"""ConsentPolicyTrigger: the deferrable sensor's wait, run in the triggerer without a worker slot.

It evaluates the gate in a loop — file reads in a worker thread, the OPA query through the async
client (or an async ``opa eval``) — until the partitions pass, or a hopeless violation or an error
ends the wait. Its kwargs carry ids and settings only: the connection's secrets are read in the
triggerer (``aget_connection``), never serialised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ConsentPolicyTrigger(BaseTrigger):
    """Re-evaluate every ``poke_interval`` seconds; fire once with the final report or the error.

    Events: ``{"status": "passed" | "never", "report": {...}}``, ``{"status": "error", "message"}``
    (engine failure: the task fails and is retried) or ``{"status": "misconfigured", "message"}``.
    """

    def __init__(
        self,
        *,
        request: dict,
        datasets: list[dict],
        entrypoint: str,
        enforcement: dict,
        on_violation: str,
        poke_interval: float,
        partition_filter: list | None = None,
        opa_conn_id: str | None = None,
        policy_path: str | None = None,
        exponential_backoff: bool = False,
        max_wait: float | None = None,
    ):
        super().__init__()
        self.request = request
        self.datasets = datasets
        self.entrypoint = entrypoint
        self.enforcement = enforcement
        self.on_violation = on_violation
        self.poke_interval = poke_interval
        self.partition_filter = partition_filter
        self.opa_conn_id = opa_conn_id
        self.policy_path = policy_path
        self.exponential_backoff = exponential_backoff
        self.max_wait = max_wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request": self.request,
                "datasets": self.datasets,
                "entrypoint": self.entrypoint,
                "enforcement": self.enforcement,
                "on_violation": self.on_violation,
                "poke_interval": self.poke_interval,
                "partition_filter": self.partition_filter,
                "opa_conn_id": self.opa_conn_id,
                "policy_path": self.policy_path,
                "exponential_backoff": self.exponential_backoff,
                "max_wait": self.max_wait,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_consent.config import settings
        from airflow_consent.enforcement import Enforcement, wait_verdict
        from airflow_consent.engines import engine_for
        from airflow_consent.errors import ConsentConfigurationError, EngineError, NoPartitionsFound
        from airflow_consent.gate import DatasetSpec, aevaluate_gate
        from airflow_consent.models import GateRequest

        enforcement = Enforcement(default=self.enforcement["default"], per_rule=self.enforcement["per_rule"])
        specs = [DatasetSpec(**spec) for spec in self.datasets]
        engine = engine_for(self.opa_conn_id, self.policy_path)
        attempt = 0
        while True:
            request = GateRequest.model_validate({**self.request, "evaluated_at": datetime.now(timezone.utc)})
            try:
                report = await aevaluate_gate(request, specs, engine, entrypoint=self.entrypoint,
                                              partition_filter=self.partition_filter,
                                              chunk_size=settings().query_chunk_size,  # the triggerer's own
                                              logger=self.log)
            except NoPartitionsFound as exc:
                self.log.info("Not yet: %s", exc)
            except ConsentConfigurationError as exc:
                yield TriggerEvent({"status": "misconfigured", "message": str(exc)})
                return
            except EngineError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            else:
                report = enforcement.apply(report)
                verdict = wait_verdict(report, self.on_violation)  # type: ignore[arg-type]
                if verdict.state != "wait":
                    yield TriggerEvent({"status": verdict.state, "report": report.model_dump(mode="json")})
                    return
                self.log.info("Not yet: waiting for %s", ", ".join(p.id for p in verdict.waiting))
            attempt += 1
            await asyncio.sleep(self._interval(attempt))

    def _interval(self, attempt: int) -> float:
        if not self.exponential_backoff:
            return self.poke_interval
        interval = self.poke_interval * 2 ** (attempt - 1)
        return min(interval, self.max_wait) if self.max_wait else interval
