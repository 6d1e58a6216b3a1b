"""Run-time clearance: a training task starts only on partitions the ledger allowed in this very run.

The cluster policy (``airflow_consent.cluster_policy``) wraps each training task's ``pre_execute``
with ``enforce_clearance``; it runs in the task's own process, after the worker parsed the DAG file
again, and again whenever a deferred task resumes.

The input partitions are derived from the gates upstream of the training task, as the DAG file is
now: each gate's ``datasets`` and ``partition_filter`` (rendered against the run's context) are
discovered again and every partition is fingerprinted again from its bytes, unless the signed
fingerprint cache proves a file unchanged (``airflow_consent.fingerprint_cache``; ``airflow_consent.
discovery``), exactly as the gate did. The training task's own inlets are not used: the gate's
arguments are what the policies judged, and an inlet need not be a hive-partitioned dataset.

The task is refused, with a message that says which, when

- no gate is upstream of it (the gate was removed after the DAG was parsed, or never there);
- a partition has no decision of this DAG run by the gate that checks it (records are tied to the
  gate task that wrote them: another task's allow does not count) that let it pass (an allow, or a
  deny only by rules in warn/dryrun): the gate was marked "success" by hand, did not run, or denied it;
- that decision was made for another purpose, by another engine or at another entrypoint than the
  gate asks now under this deployment's settings (a record written by something else than the gate);
- a partition's fingerprint now differs from the one its allow decision was made on (the data
  changed after the check): both fingerprints are named;
- the ledger records of this run fail their hash chain or their signatures: a record not signed
  with the deployment's ledger key was not appended by a consent gate (``LedgerTampered``, see
  ``airflow_consent.ledger.keys`` for what the signature proves and what it cannot).

Every refusal fails the task without retries (``ClearanceDenied``, an ``AirflowFailException``); a
ledger that cannot be read raises ``LedgerError`` and the task is retried.

A cleared task's use is recorded before it starts (``enforce_clearance``): a usage record in the
ledger names the task instance, each partition it was cleared on (id, fingerprint, gate, decision
ids), its gates' arguments and its outlets (the models it produces), signed like a decision, so
``airflow-consent audit`` can say later which runs and models used data that is now revoked. A use
that cannot be recorded fails the task like a ledger that cannot be read (``LedgerError``).

With a gate in ``on_violation="exclude"`` mode, the partitions it denied in this run are not inputs
of the training task and are skipped; every other partition on disk must have been allowed by it,
and at least one must be. A partition the gate never decided (added after the gate ran) is refused,
not skipped: exclusion is a decision, and the gate made none on it. A partition two gates check is
an input only when each of them let it pass. The partitions returned are exactly the ones cleared,
as discovered now (``RequiredPartition.partition``): ``airflow_consent.reader.approved_dataset``
reads those files and no others.

A training task with no gate upstream, in a DAG scheduled on a gate's approved asset
(``[consent] approved_asset_patterns``), is cleared by the latest triggering event of each such
asset instead: every partition the event approves must have a passing record under the event's
decision id in the ledger, with the fingerprint the event names, which must still be the one on disk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.errors import ClearanceRefused, ConsentConfigurationError, LedgerTampered, NoPartitionsFound

if TYPE_CHECKING:
    from airflow_consent.discovery import DiscoveredPartition
    from airflow_consent.ledger.store import LatestDecision

log = logging.getLogger(__name__)

MAX_LISTED = 10

ProblemKind = Literal["no_gate", "not_allowed", "not_bound", "changed", "unreadable", "tampered"]


@dataclass(frozen=True)
class ClearanceProblem:
    """One reason the training task may not start."""

    kind: ProblemKind
    message: str
    partition_id: str | None = None
    gate: str | None = None
    allowed_fingerprint: str | None = None
    current_fingerprint: str | None = None


@dataclass(frozen=True)
class RequiredPartition:
    """A partition the training task reads, as it is on disk now."""

    id: str
    fingerprint: str
    gate: str
    excludable: bool
    partition: DiscoveredPartition = field(repr=False, compare=False)
    """The partition as discovered and fingerprinted now: its URI, data files and filesystem."""
    decision_ids: tuple[str, ...] = ()
    """The ledger decisions that let it through (one per gate that checks it)."""


class ClearanceDenied(AirflowFailException):
    """Fails the training task without retries: a retry cannot produce the missing allow decision."""

    def __init__(self, refused: ClearanceRefused):
        super().__init__(str(refused))
        self.problems = refused.problems


def enforce_clearance(task: Any, context: Any, *, ledger: Any = None) -> list[RequiredPartition]:
    """Refuse to start ``task`` (``ClearanceDenied``) unless every input partition is cleared."""
    logger = getattr(task, "log", log)
    try:
        cleared = check_clearance(task, context, ledger=ledger)
    except ClearanceRefused as refused:
        logger.error("%s", refused)  # readable in the task log; the exception repeats it
        raise ClearanceDenied(refused) from refused
    usage = _record_usage(task, context, cleared, ledger)
    logger.info(
        "Consent clearance: %s may start on %d partition(s) allowed in run %s (gates: %s); its use is usage "
        "record %d in the consent ledger",
        task.task_id,
        len(cleared),
        context["run_id"],
        ", ".join(sorted({p.gate for p in cleared})),
        usage.seq,
    )
    return cleared


def _record_usage(task: Any, context: Any, cleared: list[RequiredPartition], ledger: Any) -> Any:
    """Append the usage record of a cleared task (``LedgerError`` when it cannot be written)."""
    from airflow_consent.cluster_policy import upstream_gates
    from airflow_consent.ledger.usage import UsedPartition
    from airflow_consent.run import arguments_of

    used = [
        UsedPartition(
            id=p.id,
            uri=p.partition.uri,
            fingerprint=p.fingerprint,
            dataset=p.partition.dataset,
            root=p.partition.root,
            keys=dict(p.partition.keys),
            gate=p.gate,
            decision_ids=list(p.decision_ids),
        )
        for p in cleared
        if p.partition is not None
    ]
    gates: dict[str, dict | None] = {p.gate: None for p in cleared}  # approved-asset events: no gate arguments
    gates.update({gate.task_id: dataclasses.asdict(arguments_of(gate)) for gate in upstream_gates(task)})
    ti = context.get("ti")
    map_index = getattr(ti, "map_index", None)
    outlets = [
        uri
        for outlet in getattr(task, "outlets", None) or ()
        if isinstance(uri := getattr(outlet, "uri", None) or getattr(outlet, "name", None), str)
    ]
    with _opened(ledger) as opened:
        return opened.record_usage(
            dag_id=task.dag_id,
            run_id=context["run_id"],
            task_id=task.task_id,
            map_index=-1 if map_index is None else map_index,
            try_number=getattr(ti, "try_number", None),
            partitions=used,
            gates=gates,
            outlets=outlets,
        )


def check_clearance(task: Any, context: Any, *, ledger: Any = None) -> list[RequiredPartition]:
    """The partitions ``task`` is cleared for in this run; raises ``ClearanceRefused`` otherwise."""
    from airflow_consent.cluster_policy import upstream_gates

    dag_id, run_id, task_id = task.dag_id, context["run_id"], task.task_id
    head = f"Consent clearance refused: training task {task_id!r} of DAG {dag_id!r} may not start in run {run_id!r}"
    gates = upstream_gates(task)
    if not gates and (approvals := _approvals(task, context)) is not None:
        return _check_approvals(approvals, ledger, head)
    if not gates:
        try:
            with _opened(ledger) as opened:
                allowed = [d for d in opened.latest_decisions(dag_id, run_id).values() if d.passed]
        except LedgerTampered as exc:
            raise _tampered(head, exc) from exc
        record = (
            "the ledger holds no allow decision for this run either"
            if not allowed
            else f"the ledger's {len(allowed)} allow decision(s) for this run cannot be tied to this task "
            "without its gate"
        )
        problem = ClearanceProblem(
            kind="no_gate",
            message=f"no consent gate is upstream of {task_id!r} in the DAG as it is now (was the gate removed "
            f"after the DAG was parsed?); {record}",
        )
        raise ClearanceRefused(f"{head}: {problem.message}", [problem])

    try:
        with _opened(ledger) as opened:  # each gate's own records: another task's allow does not count
            decided = {gate.task_id: opened.latest_decisions(dag_id, run_id, task_id=gate.task_id) for gate in gates}
    except LedgerTampered as exc:
        raise _tampered(head, exc) from exc
    required, problems = _required_partitions(gates, context)
    cleared, mismatches = _compare(required, decided, {gate.task_id: _asked(gate, context) for gate in gates}, run_id)
    problems += mismatches
    if not problems and not cleared:
        problems.append(ClearanceProblem(kind="not_allowed", message="no input partition is allowed in this run"))
    if problems:
        raise ClearanceRefused(_message(head, problems), problems)
    return cleared


def _tampered(head: str, exc: LedgerTampered) -> ClearanceRefused:
    problem = ClearanceProblem(kind="tampered", message=f"the consent ledger fails verification: {exc}")
    return ClearanceRefused(f"{head}: {problem.message}", [problem])


def _approvals(task: Any, context: Any) -> list[tuple[str, dict]] | None:
    """(asset URI, extra of its latest triggering event) for each approved asset the DAG is scheduled
    on; None when the DAG is not scheduled on one."""
    from airflow_consent.cluster_policy import approved_schedule
    from airflow_consent.config import enforcement_settings

    scheduled = approved_schedule(task.dag, enforcement_settings())
    if not scheduled:
        return None
    triggering = context.get("triggering_asset_events") or {}
    approvals = []
    for asset in triggering:
        if getattr(asset, "uri", None) in scheduled and (events := triggering[asset]):
            approvals.append((asset.uri, dict(events[-1].extra or {})))
    return approvals


def _check_approvals(approvals: list[tuple[str, dict]], ledger: Any, head: str) -> list[RequiredPartition]:
    """Clear a task scheduled on approved assets: each approved partition must have a passing record
    under the event's decision id in the ledger, with the fingerprint on disk now."""
    if not approvals:
        problem = ClearanceProblem(
            kind="no_gate", message="no approval event of a consent gate triggered this run (was it triggered by hand?)"
        )
        raise ClearanceRefused(f"{head}: {problem.message}", [problem])
    required: list[RequiredPartition] = []
    problems: list[ClearanceProblem] = []
    for uri, extra in approvals:
        decision_id, approved = extra.get("decision_id"), extra.get("approved_partitions")
        if not decision_id or not approved:
            problems.append(
                ClearanceProblem(
                    kind="not_allowed", gate=uri, message=f"the event on {uri} carries no consent decision"
                )
            )
            continue
        try:
            with _opened(ledger) as opened:
                decided = opened.latest_decisions(decision_id=decision_id)
        except LedgerTampered as exc:
            problems.append(ClearanceProblem(kind="tampered", message=f"the consent ledger fails verification: {exc}"))
            continue
        on_disk = _partitions_now([(p["uri"], p["id"]) for p in approved])
        for claimed in approved:
            pid = claimed["id"]
            decision = decided.get(pid)
            now = on_disk.get(pid)
            if decision is None or not decision.passed or decision.fingerprint != claimed["fingerprint"]:
                problems.append(
                    ClearanceProblem(
                        kind="not_allowed",
                        partition_id=pid,
                        gate=uri,
                        message=f"{pid}: the event on {uri} approves it, but the ledger holds no passing decision "
                        f"{decision_id} for it with fingerprint {claimed['fingerprint']}",
                    )
                )
            elif now is None or now[1] != claimed["fingerprint"]:
                problems.append(
                    ClearanceProblem(
                        kind="changed",
                        partition_id=pid,
                        gate=uri,
                        allowed_fingerprint=claimed["fingerprint"],
                        current_fingerprint=now and now[1],
                        message=f"{pid}: changed after its check: allowed with fingerprint {claimed['fingerprint']}, "
                        f"on disk now {now[1] if now else 'missing'}",
                    )
                )
            else:
                required.append(
                    RequiredPartition(
                        id=pid,
                        fingerprint=now[1],
                        gate=uri,
                        excludable=False,
                        partition=now[0],
                        decision_ids=(decision_id,),
                    )
                )
    if problems:
        raise ClearanceRefused(_message(head, problems), problems)
    return required


def _partitions_now(approved: list[tuple[str, str]]) -> dict[str, tuple[DiscoveredPartition, str]]:
    """Partition id -> (partition, fingerprint) on disk now for (URI, id) pairs, discovering each
    dataset once. The dataset root is the partition URI without as many trailing segments as the id
    has ``key=value`` segments (ids are escaped, URIs are not, but both have one segment per key)."""
    from airflow_consent.discovery import discover_partitions, fingerprints

    roots: dict[tuple[str, str], set[str]] = {}
    for uri, pid in approved:
        segments = pid.split("/")
        depth = 0
        while depth < len(segments) - 1 and "=" in segments[-1 - depth]:
            depth += 1
        root, dataset = uri.rstrip("/").rsplit("/", depth)[0], "/".join(segments[: len(segments) - depth])
        roots.setdefault((root, dataset), set()).add(pid)
    found: dict[str, tuple[DiscoveredPartition, str]] = {}
    for (root, dataset), wanted in roots.items():
        try:
            partitions = discover_partitions(root, dataset=dataset)
        except (ConsentConfigurationError, NoPartitionsFound):
            continue  # reported as missing by the caller
        present = [p for p in partitions if p.id in wanted]
        found.update({p.id: (p, digest) for p, digest in zip(present, fingerprints(present), strict=True)})
    return found


@contextmanager
def _opened(ledger: Any) -> Iterator[Any]:
    """``ledger``, or the ``[consent] ledger_url`` one for the duration.

    Its ``latest_decisions`` counts an allow, and a deny whose violations are all of rules not
    enforced (warn/dryrun), and checks the records' hashes and links first (``LedgerTampered``).
    """
    if ledger is not None:
        yield ledger
        return
    from airflow_consent.ledger import Ledger

    with Ledger() as default_ledger:
        yield default_ledger


def _required_partitions(gates: list[Any], context: Any) -> tuple[list[RequiredPartition], list[ClearanceProblem]]:
    """Discover and fingerprint again what each gate checks; a gate whose inputs cannot be read is a problem."""
    from airflow_consent.discovery import discover_partitions, fingerprints

    required: dict[tuple[str, str], RequiredPartition] = {}
    by_uri: dict[str, str] = {}  # fingerprint by partition URI: two gates on one dataset hash it once
    problems: list[ClearanceProblem] = []
    for gate in gates:
        try:
            specs, partition_filter = _gate_inputs(gate, context)
            for uri, name in specs:
                found = discover_partitions(uri, dataset=name, partition_filter=partition_filter or None)
                new = [p for p in found if p.uri not in by_uri]
                by_uri.update(zip((p.uri for p in new), fingerprints(new), strict=True))  # files hashed in parallel
                for partition in found:
                    required.setdefault(
                        (partition.id, gate.task_id),
                        RequiredPartition(
                            id=partition.id,
                            fingerprint=by_uri[partition.uri],
                            gate=gate.task_id,
                            excludable=getattr(gate, "on_violation", "fail") == "exclude",
                            partition=partition,
                        ),
                    )
        except (ConsentConfigurationError, NoPartitionsFound, OSError) as exc:
            problems.append(
                ClearanceProblem(
                    kind="unreadable",
                    gate=gate.task_id,
                    message=f"cannot read the inputs of gate {gate.task_id!r} again: {exc}",
                )
            )
    return [required[key] for key in sorted(required)], problems


def _gate_inputs(gate: Any, context: Any) -> tuple[list[tuple[str, str | None]], Any]:
    """The gate's (uri, dataset name) pairs and partition filter, templates rendered for this run."""
    datasets = getattr(gate, "datasets", None)
    if not datasets:
        raise ConsentConfigurationError(f"gate {gate.task_id!r} has no datasets")
    partition_filter = getattr(gate, "partition_filter", None)
    if hasattr(gate, "render_template"):
        datasets = gate.render_template(datasets, context)
        partition_filter = gate.render_template(partition_filter, context)
    if isinstance(datasets, str) or hasattr(datasets, "uri"):
        datasets = [datasets]
    specs = []
    for dataset in datasets:
        uri = getattr(dataset, "uri", None)
        specs.append((uri, getattr(dataset, "name", None)) if uri else (str(dataset), None))
    return specs, partition_filter


def _asked(gate: Any, context: Any) -> tuple[str, str, str]:
    """(purpose, engine, entrypoint) the gate asks now, as its records name them: its settings resolved
    as every gate run resolves them (``airflow_consent.run.resolve``)."""
    from airflow_consent.run import arguments_of, resolve

    settings = resolve(arguments_of(gate))
    purpose = gate.render_template(gate.purpose, context) if hasattr(gate, "render_template") else gate.purpose
    return purpose, settings.engine().name, settings.entrypoint


def _compare(
    required: list[RequiredPartition],
    decided: dict[str, dict[str, LatestDecision]],
    asked: dict[str, tuple[str, str, str]],
    run_id: str,
) -> tuple[list[RequiredPartition], list[ClearanceProblem]]:
    """The partitions cleared (each let through by every gate that checks it), and the problems.

    ``decided`` is gate task id -> partition id -> that gate's latest decision in this run; ``asked``
    is gate task id -> (purpose, engine, entrypoint) that gate asks now.
    """
    problems: list[ClearanceProblem] = []
    passed: dict[str, RequiredPartition] = {}
    excluded: set[str] = set()
    for partition in required:
        decision = decided.get(partition.gate, {}).get(partition.id)
        if decision is None and partition.excludable:
            problems.append(
                ClearanceProblem(
                    kind="not_allowed",
                    partition_id=partition.id,
                    gate=partition.gate,
                    current_fingerprint=partition.fingerprint,
                    message=f"{partition.id}: gate {partition.gate!r} never decided it in run {run_id!r} (added after "
                    "the gate ran, or the gate did not run?): exclude mode leaves out only the partitions the gate "
                    "denied; run the gate again to decide it",
                )
            )
        elif decision is None or not decision.passed:
            if partition.excludable:
                log.info("%s was excluded by gate %s: not an input of this run", partition.id, partition.gate)
                excluded.add(partition.id)
                continue
            problems.append(
                ClearanceProblem(
                    kind="not_allowed",
                    partition_id=partition.id,
                    gate=partition.gate,
                    current_fingerprint=partition.fingerprint,
                    message=f"{partition.id}: no allow decision in the consent ledger for run {run_id!r} (gate "
                    f"{partition.gate!r} did not allow it in this run: was the gate marked success by hand, or "
                    "did it not run?)",
                )
            )
        elif (decision.purpose, decision.engine, decision.entrypoint) != asked[partition.gate]:
            purpose, engine, entrypoint = asked[partition.gate]
            problems.append(
                ClearanceProblem(
                    kind="not_bound",
                    partition_id=partition.id,
                    gate=partition.gate,
                    current_fingerprint=partition.fingerprint,
                    message=f"{partition.id}: its allow decision in run {run_id!r} was made for purpose "
                    f"{decision.purpose!r} by {decision.engine} at {decision.entrypoint}, but gate {partition.gate!r} "
                    f"asks for purpose {purpose!r} of {engine} at {entrypoint}: not a decision of this gate; run the "
                    "gate again",
                )
            )
        elif decision.fingerprint != partition.fingerprint:
            problems.append(
                ClearanceProblem(
                    kind="changed",
                    partition_id=partition.id,
                    gate=partition.gate,
                    allowed_fingerprint=decision.fingerprint,
                    current_fingerprint=partition.fingerprint,
                    message=f"{partition.id}: changed after its check: allowed with fingerprint "
                    f"{decision.fingerprint}, on disk now {partition.fingerprint}",
                )
            )
        else:
            earlier = passed.get(partition.id, partition)
            ids = (*earlier.decision_ids, decision.decision_id) if decision.decision_id else earlier.decision_ids
            passed[partition.id] = dataclasses.replace(earlier, decision_ids=ids)
    return [p for pid, p in passed.items() if pid not in excluded], problems


def _message(head: str, problems: list[ClearanceProblem]) -> str:
    lines = [f"{head}: {len(problems)} problem(s)"]
    lines += [f"  - {p.message}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  - ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)
