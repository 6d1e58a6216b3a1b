"""One gate run, free of Airflow: resolve the settings → evaluate → enforce → record → report.

The operator, the sensor (poking or deferred), the trigger and ``airflow-consent check`` all run a
gate through ``run_gate`` (or ``arun_gate`` on an event loop), so a decision is reached, enforced and
recorded the same way wherever it is asked. Settings resolve in one place, ``resolve``: the task's
argument, else ``[consent]``, else the default; ``[consent] rule_enforcement`` wins over both for
the rules it names; an argument the platform pinned (``pinned_task_arguments``) may not be set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_consent.enforcement import Enforcement, Mode, check_mode, parse_rule_modes
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.gate import DatasetSpec, Log, aevaluate_gate, evaluate_gate

if TYPE_CHECKING:
    from airflow_consent.config import ConsentSettings
    from airflow_consent.engines import PolicyEngine
    from airflow_consent.models import GateReport, GateRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateArguments:
    """What a task (or the CLI) sets; None: not set, so ``[consent]`` decides."""

    opa_conn_id: str | None = None
    policy_path: str | None = None
    entrypoint: str | None = None
    enforcement: Mode | None = None
    dataset_config_path: str | None = None


@dataclass(frozen=True)
class GateSettings:
    """Everything one gate run uses, resolved."""

    opa_conn_id: str | None
    policy_path: str | None
    entrypoint: str
    enforcement: Enforcement
    dataset_config_path: str | None
    ledger_url: str
    query_chunk_size: int

    def engine(self) -> PolicyEngine:
        """The OPA server of ``opa_conn_id``, else the local binary over ``policy_path`` (or the shipped policies)."""
        from airflow_consent.engines import engine_for

        return engine_for(self.opa_conn_id, self.policy_path)

    def specs(self, datasets: Sequence[tuple[str, str | None]]) -> list[DatasetSpec]:
        """(URI, name or None) pairs as the gate's datasets, with this run's evidence configurations."""
        return [DatasetSpec(uri=uri, name=name, dataset_config_path=self.dataset_config_path) for uri, name in datasets]


def resolve(arguments: GateArguments, config: ConsentSettings | None = None) -> GateSettings:
    """The settings of a gate with ``arguments``, under ``config`` (default: this process's ``[consent]``)."""
    if config is None:
        from airflow_consent.config import settings

        config = settings()
    check_pinned(arguments, config)
    default = arguments.enforcement or check_mode(config.enforcement, "[consent] enforcement")
    return GateSettings(
        opa_conn_id=arguments.opa_conn_id or config.opa_conn_id,
        policy_path=arguments.policy_path or config.policy_path,
        entrypoint=arguments.entrypoint or config.entrypoint,
        enforcement=Enforcement(default=default, per_rule=parse_rule_modes(config.rule_enforcement)),
        dataset_config_path=arguments.dataset_config_path or config.dataset_config_path,
        ledger_url=config.ledger_url,
        query_chunk_size=config.query_chunk_size,
    )


def check_pinned(arguments: GateArguments, config: ConsentSettings) -> None:
    """A gate may not set an argument the platform pinned (``[consent] pinned_task_arguments``)."""
    from airflow_consent.config import PINNABLE_TASK_ARGUMENTS

    if unknown := sorted(set(config.pinned_task_arguments) - set(PINNABLE_TASK_ARGUMENTS)):
        raise ConsentConfigurationError(
            f"[consent] pinned_task_arguments names {unknown}; only {list(PINNABLE_TASK_ARGUMENTS)} can be pinned"
        )
    if overridden := [name for name in config.pinned_task_arguments if getattr(arguments, name) is not None]:
        raise ConsentConfigurationError(
            f"{', '.join(overridden)} set on the task, but the platform pins them to their [consent] values "
            "(pinned_task_arguments): remove the argument(s) from the gate"
        )


def run_gate(
    request: GateRequest,
    datasets: Sequence[DatasetSpec],
    settings: GateSettings,
    *,
    partition_filter: list | None = None,
    record: bool = True,
    logger: Log = log,
) -> GateReport:
    """Evaluate ``datasets`` for ``request``, apply the enforcement modes and, with ``record``, append
    every partition's decision to the ledger before anything is published (a ``LedgerError`` raises)."""
    report = evaluate_gate(
        request,
        datasets,
        settings.engine(),
        entrypoint=settings.entrypoint,
        partition_filter=partition_filter,
        chunk_size=settings.query_chunk_size,
        logger=logger,
    )
    report = settings.enforcement.apply(report)
    if record:
        _record(report, request, settings, logger)
    return report


async def arun_gate(
    request: GateRequest,
    datasets: Sequence[DatasetSpec],
    settings: GateSettings,
    *,
    partition_filter: list | None = None,
    record: bool = True,
    logger: Log = log,
) -> GateReport:
    """``run_gate`` for an event loop (the triggerer): the ledger is written from a worker thread."""
    report = await aevaluate_gate(
        request,
        datasets,
        settings.engine(),
        entrypoint=settings.entrypoint,
        partition_filter=partition_filter,
        chunk_size=settings.query_chunk_size,
        logger=logger,
    )
    report = await asyncio.to_thread(settings.enforcement.apply, report)
    if record:
        await asyncio.to_thread(_record, report, request, settings, logger)
    return report


def _record(report: GateReport, request: GateRequest, settings: GateSettings, logger: Log) -> None:
    from airflow_consent.ledger import Ledger

    with Ledger(settings.ledger_url) as ledger:
        recorded = ledger.record(
            report, request, mode=settings.enforcement.default, input_digest=report.input_digest or ""
        )
    if recorded:
        logger.info(
            "Recorded %d decision(s) in the consent ledger %s: seq %d..%d, head %d:%s",
            len(recorded),
            ledger.display_url,
            recorded[0].seq,
            recorded[-1].seq,
            recorded[-1].seq,
            recorded[-1].record_hash,
        )


def progress_log(quiet: bool) -> logging.Logger:
    """The gate's progress log for a command line; ``quiet`` (under ``--json``) keeps only errors, so
    that stdout is the JSON alone."""
    logger = logging.getLogger("airflow_consent.run.quiet" if quiet else __name__)
    if quiet:
        logger.setLevel(logging.ERROR)
    return logger


def arguments_of(task: object) -> GateArguments:
    """The gate arguments a task sets (attributes of the same names; absent: None)."""
    return GateArguments(**{f.name: getattr(task, f.name, None) for f in dataclasses.fields(GateArguments)})
