"""The gate's flow, free of Airflow: discover → manifests and evidence → policy input → OPA → report.

Operators, sensors and the CLI call ``evaluate_gate``; it raises ``ConsentConfigurationError`` for
bad settings and ``EngineError`` when no trustworthy decision could be had, and otherwise returns a
``GateReport`` (allowed or not: enforcing it is the caller's job).

Partitions go to OPA in chunks of ``chunk_size`` (default 5,000): the gate holds one chunk's inputs
at a time, and OPA one chunk's document. A partition is decided whole within its chunk, so the
decisions do not depend on the chunking, and neither does the report's ``input_digest``: it is the
digest of the whole input ``{request, partitions}``, as if sent at once. Every chunk must be decided
by the same OPA version and policy revision, or the evaluation fails closed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
)
from airflow_consent.policies import DEFAULT_ENTRYPOINT

if TYPE_CHECKING:
    from airflow_consent.discovery import DiscoveredPartition

log = logging.getLogger(__name__)


class Log(Protocol):
    """What the flow logs through: a ``logging.Logger``, or an Airflow task's (structlog) ``self.log``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...

    def error(self, msg: str, /, *args: Any) -> Any: ...


PROGRESS_EVERY = 1000
DEFAULT_CHUNK_SIZE = 5000


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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    logger: Log = log,
) -> GateReport:
    """Decide whether every partition of ``datasets`` may serve ``request``: one query per chunk of
    ``chunk_size`` partitions, each partition decided whole within its chunk."""
    evaluation = _Evaluation(request, engine.name, entrypoint, logger)
    for chunk in partition_chunks(datasets, partition_filter=partition_filter, chunk_size=chunk_size, logger=logger):
        document = evaluation.document(chunk)
        evaluation.decide(chunk, engine.evaluate(document, entrypoint))
    return evaluation.report()


async def aevaluate_gate(
    request: GateRequest,
    datasets: Sequence[DatasetSpec],
    engine: PolicyEngine,
    *,
    entrypoint: str = DEFAULT_ENTRYPOINT,
    partition_filter: list | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    logger: Log = log,
) -> GateReport:
    """``evaluate_gate`` for an event loop: reading files, building and digesting each chunk's input and
    checking each answer run in a worker thread; only the query itself runs on the loop."""
    evaluation = _Evaluation(request, engine.name, entrypoint, logger)
    chunks = partition_chunks(datasets, partition_filter=partition_filter, chunk_size=chunk_size, logger=logger)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        document = await asyncio.to_thread(evaluation.document, chunk)
        answer = await engine.aevaluate(document, entrypoint)
        await asyncio.to_thread(evaluation.decide, chunk, answer)
    return await asyncio.to_thread(evaluation.report)


class _Evaluation:
    """One gate evaluation as its chunks are decided: the per-partition verdicts, the digest of the
    whole input as sent, and the engine's version and policy revision, which every chunk must share."""

    def __init__(self, request: GateRequest, engine: str, entrypoint: str, logger: Log):
        from airflow_consent.ledger.records import InputDigest

        self.request, self.engine, self.entrypoint, self.log = request, engine, entrypoint, logger
        self.started = time.perf_counter()
        self._request_document = request.model_dump(mode="json")
        self._digest = InputDigest()
        self._decided: list[DecidedPartition] = []
        self._decided_by: tuple[str | None, str | None] | None = None
        self._chunks = 0

    def document(self, chunk: list[PartitionInput]) -> dict:
        """The input document of one query, as sent: its partitions go into the digest."""
        partitions = [p.model_dump(mode="json") for p in chunk]
        self._digest.add(partitions)
        self._chunks += 1
        self.log.info(
            "Asking %s about %d partition(s) for purpose %r (query %d)",
            self.engine,
            len(chunk),
            self.request.purpose,
            self._chunks,
        )
        return {"request": self._request_document, "partitions": partitions}

    def decide(self, chunk: list[PartitionInput], answer: EngineAnswer) -> None:
        decided_by = (answer.opa_version, answer.policy_revision)
        if self._decided_by is not None and decided_by != self._decided_by:
            raise MalformedDecision(
                f"the policies changed during the evaluation: query 1 was decided by OPA {self._decided_by[0]} "
                f"revision {self._decided_by[1]}, query {self._chunks} by OPA {decided_by[0]} revision "
                f"{decided_by[1]}; run the gate again",
                engine=self.engine,
            )
        self._decided_by = decided_by
        self._decided += _check_decision(answer.result, chunk, self.engine)

    def report(self) -> GateReport:
        """The gate report; its ``input_digest`` is that of the whole input as sent, whatever the chunks."""
        opa_version, policy_revision = self._decided_by or (None, None)
        return GateReport(
            decision_id=str(uuid.uuid4()),
            allow=all(p.allow for p in self._decided),
            purpose=self.request.purpose,
            entrypoint=self.entrypoint,
            engine=self.engine,
            opa_version=opa_version,
            policy_revision=policy_revision,
            evaluated_at=self.request.evaluated_at,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 1),
            partitions=self._decided,
            input_digest=self._digest.finish(self._request_document),
        )


def collect_partitions(
    datasets: Sequence[DatasetSpec], *, partition_filter: list | None = None, logger: Log = log
) -> list[PartitionInput]:
    """Every partition of every dataset with its fingerprint, manifest and evidence, in one list."""
    chunks = partition_chunks(datasets, partition_filter=partition_filter, chunk_size=sys.maxsize, logger=logger)
    return [partition for chunk in chunks for partition in chunk]


def partition_chunks(
    datasets: Sequence[DatasetSpec],
    *,
    partition_filter: list | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    logger: Log = log,
) -> Iterator[list[PartitionInput]]:
    """Discover the partitions of every dataset and yield them ``chunk_size`` at a time, each with its
    fingerprint, manifest and evidence: only one chunk's inputs are held at once."""
    from airflow_consent.discovery import discover_partitions, fingerprints
    from airflow_consent.evidence.collector import EvidenceCollector
    from airflow_consent.manifests import read_manifest

    if not datasets:
        raise ConsentConfigurationError("the gate has no datasets to check")
    if chunk_size < 1:
        raise ConsentConfigurationError(f"the query chunk size must be at least 1 partition, not {chunk_size}")
    found = [discover_partitions(spec.uri, dataset=spec.name, partition_filter=partition_filter) for spec in datasets]
    ids = Counter(p.id for partitions in found for p in partitions)
    if duplicates := sorted(i for i, n in ids.items() if n > 1):
        raise ConsentConfigurationError(f"partitions listed twice (a dataset given twice?): {duplicates[:5]}")
    evidence = EvidenceCollector(logger=logger)
    chunk: list[PartitionInput] = []
    for spec, partitions in zip(datasets, found, strict=True):
        for start in range(0, len(partitions), chunk_size):
            run = partitions[start : start + chunk_size]
            measured = zip(run, fingerprints(run), evidence.measure(run, spec.dataset_config_path), strict=True)
            for partition, digest, (facts, evidence_problems) in measured:
                manifest, source, problems = read_manifest(partition)
                chunk.append(
                    PartitionInput(
                        id=partition.id,
                        dataset=partition.dataset,
                        keys=partition.keys,
                        uri=partition.uri,
                        fingerprint=digest,
                        files=len(partition.files),
                        manifest=manifest,
                        manifest_source=source,
                        manifest_problems=problems,
                        evidence=facts,
                        evidence_problems=[*_irregular_file_problems(partition), *evidence_problems],
                    )
                )
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
            done = min(start + chunk_size, len(partitions))
            if done % PROGRESS_EVERY < len(run) or done == len(partitions):
                logger.info("%s: read %d/%d partition(s)", spec.uri, done, len(partitions))
    if chunk:
        yield chunk


def _irregular_file_problems(partition: DiscoveredPartition) -> list[EvidenceProblem]:
    """A FIFO, socket or device in a partition is never read (it would hang a reader): the partition is denied."""
    return [
        EvidenceProblem(
            file=partition.uri_of(name),
            field=None,
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
            index = loc[1] if loc[:1] == ("partitions",) and len(loc) > 1 else None
            where = f"partition {ids[index]!r}: " if isinstance(index, int) and index < len(ids) else ""
            field = ".".join(map(str, loc)) or "the decision"
            problems.append(f"{where}{field}: {error['msg']}, got {error['input']!r:.200}")
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise MalformedDecision(
            f"the decision does not match the contract: {'; '.join(problems[:5])}{more}", engine=engine
        ) from exc
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
