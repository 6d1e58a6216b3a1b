"""ConsentPolicyTrigger: the deferrable sensor's wait, run in the triggerer without a worker slot.

It runs the gate in a loop (``airflow_consent.run.arun_gate``: file reads, building and checking
each query's document in a worker thread, the OPA query through the async client or an async
``opa eval``, each evaluation recorded in the ledger) until the partitions pass, or a hopeless
violation or an error ends the wait. Its kwargs carry ids and the gate's own arguments only: the
triggerer resolves them under its own ``[consent]``, and reads the connection's secrets itself
(``aget_connection``); nothing secret is serialised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ConsentPolicyTrigger(BaseTrigger):
    """Re-evaluate every ``poke_interval`` seconds; fire once with the final report or the error.

    Events: ``{"status": "passed" | "never", "report": {...}}``, ``{"status": "error", "message"}``
    (engine or ledger failure: the task fails and is retried) or ``{"status": "misconfigured", "message"}``.
    """

    def __init__(
        self,
        *,
        request: dict,
        datasets: list[dict],
        arguments: dict,
        on_violation: str,
        poke_interval: float,
        partition_filter: list | None = None,
        exponential_backoff: bool = False,
        max_wait: float | None = None,
    ):
        super().__init__()
        self.request = request
        self.datasets = datasets
        self.arguments = arguments
        self.on_violation = on_violation
        self.poke_interval = poke_interval
        self.partition_filter = partition_filter
        self.exponential_backoff = exponential_backoff
        self.max_wait = max_wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request": self.request,
                "datasets": self.datasets,
                "arguments": self.arguments,
                "on_violation": self.on_violation,
                "poke_interval": self.poke_interval,
                "partition_filter": self.partition_filter,
                "exponential_backoff": self.exponential_backoff,
                "max_wait": self.max_wait,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_consent.enforcement import wait_verdict
        from airflow_consent.errors import ConsentConfigurationError, EngineError, LedgerError, NoPartitionsFound
        from airflow_consent.models import GateRequest
        from airflow_consent.run import GateArguments, arun_gate, resolve

        attempt = 0
        while True:
            request = GateRequest.model_validate({**self.request, "evaluated_at": datetime.now(UTC)})
            try:
                settings = resolve(GateArguments(**self.arguments))  # the triggerer's own [consent]
                specs = settings.specs([(d["uri"], d.get("name")) for d in self.datasets])
                report = await arun_gate(
                    request, specs, settings, partition_filter=self.partition_filter, logger=self.log
                )
            except NoPartitionsFound as exc:
                self.log.info("Not yet: %s", exc)
            except ConsentConfigurationError as exc:
                yield TriggerEvent({"status": "misconfigured", "message": str(exc)})
                return
            except (EngineError, LedgerError) as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            else:
                verdict = wait_verdict(report, self.on_violation)  # type: ignore[arg-type]
                if verdict.state != "wait":
                    document = await asyncio.to_thread(report.model_dump, mode="json")
                    yield TriggerEvent({"status": verdict.state, "report": document})
                    return
                self.log.info("Not yet: waiting for %s", ", ".join(p.id for p in verdict.waiting))
            attempt += 1
            await asyncio.sleep(self._interval(attempt))

    def _interval(self, attempt: int) -> float:
        if not self.exponential_backoff:
            return self.poke_interval
        interval = self.poke_interval * 2 ** (attempt - 1)
        return min(interval, self.max_wait) if self.max_wait else interval
