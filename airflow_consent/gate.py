"""The gate's flow, free of Airflow: discover → manifests → one policy input → one OPA query → report.

Operators, sensors and the CLI call ``evaluate_gate``; it raises ``ConsentConfigurationError`` for
bad settings and ``EngineError`` when no trustworthy decision could be had, and otherwise returns a
``GateReport`` (allowed or not: enforcing it is the caller's job).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from airflow_consent.engines import EngineAnswer, PolicyEngine
from airflow_consent.errors import ConsentConfigurationError, MalformedDecision
from airflow_consent.models import (
    DecidedPartition,
    EvidenceProblem,
    GateReport,
    GateRequest,
    PartitionInput,
    PolicyDecision,
    PolicyInput,
)
from airflow_consent.policies import DEFAULT_ENTRYPOINT

if TYPE_CHECKING:
    from airflow_consent.discovery import DiscoveredPartition

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class DatasetSpec:
    """One input dataset: where it is and what to call it (default: the last path component).

    ``dataset_config_path``: the directory holding ``<name>.json``, the dataset's evidence
    configuration (see ``airflow_consent.evidence.config``); None or no such file: no evidence.
    """

    uri: str
    name: str | None = None
    dataset_config_path: str | None = None


def evaluate_gate(
    request: GateRequest,
    datasets: Sequence[DatasetSpec],
    engine: PolicyEngine,
    *,
    entrypoint: str = DEFAULT_ENTRYPOINT,
    partition_filter: list | None = None,
    logger: logging.Logger = log,
) -> GateReport:
    """Decide, in one batched query, whether every partition of ``datasets`` may serve ``request``."""
    started = time.perf_counter()
    policy_input = build_policy_input(request, datasets, partition_filter=partition_filter, logger=logger)
    logger.info("Asking %s about %d partition(s) for purpose %r", engine.name, len(policy_input.partitions),
                request.purpose)
    document = policy_input.model_dump(mode="json")
    answer = engine.evaluate(document, entrypoint)
    return _report(policy_input, document, answer, engine.name, entrypoint, started)


async def aevaluate_gate(
    request: GateRequest,
    datasets: Sequence[DatasetSpec],
    engine: PolicyEngine,
    *,
    entrypoint: str = DEFAULT_ENTRYPOINT,
    partition_filter: list | None = None,
    logger: logging.Logger = log,
) -> GateReport:
    """``evaluate_gate`` for an event loop: file reads in a worker thread, the query without blocking."""
    started = time.perf_counter()
    policy_input = await asyncio.to_thread(
        build_policy_input, request, datasets, partition_filter=partition_filter, logger=logger
    )
    document = policy_input.model_dump(mode="json")
    answer = await engine.aevaluate(document, entrypoint)
    return _report(policy_input, document, answer, engine.name, entrypoint, started)


def build_policy_input(
    request: GateRequest, datasets: Sequence[DatasetSpec], *, partition_filter: list | None = None,
    logger: logging.Logger = log,
) -> PolicyInput:
    """The one input document of a gate evaluation."""
    partitions = collect_partitions(datasets, partition_filter=partition_filter, logger=logger)
    return PolicyInput(request=request, partitions=partitions)


def _report(policy_input: PolicyInput, document: dict, answer: EngineAnswer, engine: str, entrypoint: str,
            started: float) -> GateReport:
    """The gate report; ``document`` is the input exactly as sent, whose digest the ledger keeps."""
    from airflow_consent.ledger import input_digest

    decided = _check_decision(answer.result, policy_input.partitions, engine)
    return GateReport(
        decision_id=str(uuid.uuid4()),
        allow=all(p.allow for p in decided),
        purpose=policy_input.request.purpose,
        entrypoint=entrypoint,
        engine=engine,
        opa_version=answer.opa_version,
        policy_revision=answer.policy_revision,
        evaluated_at=policy_input.request.evaluated_at,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        partitions=decided,
        input_digest=input_digest(document),
    )


def collect_partitions(
    datasets: Sequence[DatasetSpec], *, partition_filter: list | None = None, logger: logging.Logger = log
) -> list[PartitionInput]:
    """Discover every partition of every dataset with its fingerprint, manifest and evidence."""
    from airflow_consent.discovery import discover_partitions, fingerprint
    from airflow_consent.evidence.collector import EvidenceCollector
    from airflow_consent.manifests import read_manifest

    if not datasets:
        raise ConsentConfigurationError("the gate has no datasets to check")
    collected: list[PartitionInput] = []
    evidence = EvidenceCollector(logger=logger)
    for spec in datasets:
        found = discover_partitions(spec.uri, dataset=spec.name, partition_filter=partition_filter)
        measured = evidence.measure(found, spec.dataset_config_path)
        for done, (partition, (facts, evidence_problems)) in enumerate(zip(found, measured, strict=True), start=1):
            manifest, source, problems = read_manifest(partition)
            collected.append(
                PartitionInput(
                    id=partition.id,
                    dataset=partition.dataset,
                    keys=partition.keys,
                    uri=partition.uri,
                    fingerprint=fingerprint(partition),
                    files=len(partition.files),
                    manifest=manifest,
                    manifest_source=source,
                    manifest_problems=problems,
                    evidence=facts,
                    evidence_problems=[*_irregular_file_problems(partition), *evidence_problems],
                )
            )
            if done % PROGRESS_EVERY == 0 or done == len(found):
                logger.info("%s: read %d/%d partition(s)", spec.uri, done, len(found))
    if duplicates := sorted(i for i, n in Counter(p.id for p in collected).items() if n > 1):
        raise ConsentConfigurationError(f"partitions listed twice (a dataset given twice?): {duplicates[:5]}")
    return collected


def _irregular_file_problems(partition: DiscoveredPartition) -> list[EvidenceProblem]:
    """A FIFO, socket or device in a partition is never read (it would hang a reader): the partition is denied."""
    return [
        EvidenceProblem(
            file=partition.uri_of(name), field=None,
            message=f"a {kind} is not a regular file: only regular files may sit in a partition; remove it",
        )
        for name, kind in partition.irregular_files
    ]


def _check_decision(result: object, partitions: list[PartitionInput], engine: str) -> list[DecidedPartition]:
    """Validate the entrypoint's answer against the input; anything unexpected fails closed."""
    try:
        decision = PolicyDecision.model_validate(result)
    except ValidationError as exc:
        answered = result.get("partitions") if isinstance(result, dict) else None
        ids = [p.get("id") if isinstance(p, dict) else None for p in answered] if isinstance(answered, list) else []
        problems = []
        for error in exc.errors():
            loc = error["loc"]  # ("partitions", 3, "allow"): named by the partition's id, the index is no help
            partition = f"partition {ids[loc[1]]!r}: " if loc[:1] == ("partitions",) and len(loc) > 1 else ""
            field = ".".join(map(str, loc)) or "the decision"
            problems.append(f"{partition}{field}: {error['msg']}, got {error['input']!r:.200}")
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise MalformedDecision(f"the decision does not match the contract: {'; '.join(problems[:5])}{more}",
                                engine=engine) from exc
    by_id = {p.id: p for p in decision.partitions}
    missing = [p.id for p in partitions if p.id not in by_id]
    extra = sorted(set(by_id) - {p.id for p in partitions})
    if missing or extra or len(decision.partitions) != len(partitions):
        raise MalformedDecision(
            f"the decision must cover each input partition once; missing {missing[:5]}, unexpected {extra[:5]}",
            engine=engine,
        )
    decided = []
    for partition in partitions:
        verdict = by_id[partition.id]
        if verdict.allow and verdict.violations:
            raise MalformedDecision(f"{partition.id} is allowed yet has violations", engine=engine)
        if verdict.allow and (partition.manifest is None or partition.manifest_problems):
            raise MalformedDecision(
                f"{partition.id} is allowed although its manifest is missing or invalid: the policies must deny it",
                engine=engine,
            )
        if verdict.allow and partition.evidence_problems:
            raise MalformedDecision(
                f"{partition.id} is allowed although its evidence could not be measured: the policies must deny it",
                engine=engine,
            )
        decided.append(
            DecidedPartition(
                id=partition.id,
                uri=partition.uri,
                fingerprint=partition.fingerprint,
                allow=verdict.allow,
                violations=verdict.violations,
            )
        )
    if decision.allow != all(p.allow for p in decided):
        raise MalformedDecision("the overall allow disagrees with the per-partition verdicts", engine=engine)
    return decided
