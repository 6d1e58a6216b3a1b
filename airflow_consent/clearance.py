"""Run-time clearance: a training task starts only on partitions the ledger allowed in this very run.

The cluster policy (``airflow_consent.cluster_policy``) wraps each training task's ``pre_execute``
with ``enforce_clearance``; it runs in the task's own process, after the worker parsed the DAG file
again, and again whenever a deferred task resumes.

The input partitions are derived from the gates upstream of the training task, as the DAG file is
now: each gate's ``datasets`` and ``partition_filter`` (rendered against the run's context) are
discovered again and every partition is fingerprinted again from its bytes (``airflow_consent.
discovery``), exactly as the gate did. The training task's own inlets are not used: the gate's
arguments are what the policies judged, and an inlet need not be a hive-partitioned dataset.

The task is refused, with a message that says which, when

- no gate is upstream of it (the gate was removed after the DAG was parsed, or never there);
- a partition has no decision of this DAG run in the ledger that let it pass (an allow, or a deny
  only by rules in warn/dryrun): the gate was marked "success" by hand, did not run, or denied it;
- a partition's fingerprint now differs from the one its allow decision was made on (the data
  changed after the check): both fingerprints are named;
- the ledger records of this run fail their hash chain (``LedgerTampered``).

Every refusal fails the task without retries (``ClearanceDenied``, an ``AirflowFailException``); a
ledger that cannot be read raises ``LedgerError`` and the task is retried.

With a gate in ``on_violation="exclude"`` mode, the partitions it excluded are not inputs of the
training task: only the partitions it allowed are checked, and at least one must be.

A training task with no gate upstream, in a DAG scheduled on a gate's approved asset
(``[consent] approved_asset_patterns``), is cleared by the latest triggering event of each such
asset instead: every partition the event approves must have a passing record under the event's
decision id in the ledger, with the fingerprint the event names, which must still be the one on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from airflow.sdk.exceptions import AirflowFailException

from airflow_consent.errors import ConsentConfigurationError, ConsentError, LedgerTampered

log = logging.getLogger(__name__)

MAX_LISTED = 10

ProblemKind = Literal["no_gate", "not_allowed", "changed", "unreadable", "tampered"]


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


class ClearanceRefused(ConsentError):
    """The ledger does not clear the training task for this run; carries every problem found."""

    def __init__(self, message: str, problems: list[ClearanceProblem]):
        super().__init__(message)
        self.problems = problems


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
    logger.info(
        "Consent clearance: %s may start on %d partition(s) allowed in run %s (gates: %s)",
        task.task_id, len(cleared), context["run_id"], ", ".join(sorted({p.gate for p in cleared})),
    )
    return cleared


def check_clearance(task: Any, context: Any, *, ledger: Any = None) -> list[RequiredPartition]:
    """The partitions ``task`` is cleared for in this run; raises ``ClearanceRefused`` otherwise."""
    from airflow_consent.cluster_policy import upstream_gates

    dag_id, run_id, task_id = task.dag_id, context["run_id"], task.task_id
    head = f"Consent clearance refused: training task {task_id!r} of DAG {dag_id!r} may not start in run {run_id!r}"
    gates = upstream_gates(task)
    if not gates and (approvals := _approvals(task, context)) is not None:
        return _check_approvals(approvals, ledger, head)
    try:
        allowed = _cleared_in_ledger(ledger, dag_id, run_id)
    except LedgerTampered as exc:
        problem = ClearanceProblem(kind="tampered", message=f"the consent ledger fails verification: {exc}")
        raise ClearanceRefused(f"{head}: {problem.message}", [problem]) from exc
    if not gates:
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

    required, problems = _required_partitions(gates, context)
    problems += _compare(required, allowed, run_id)
    if not problems and not [p for p in required if p.id in allowed]:
        problems.append(ClearanceProblem(kind="not_allowed", message="no input partition is allowed in this run"))
    if problems:
        raise ClearanceRefused(_message(head, problems), problems)
    return [p for p in required if p.id in allowed]


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
        problem = ClearanceProblem(kind="no_gate", message="no approval event of a consent gate triggered this run "
                                   "(was it triggered by hand?)")
        raise ClearanceRefused(f"{head}: {problem.message}", [problem])
    required: list[RequiredPartition] = []
    problems: list[ClearanceProblem] = []
    for uri, extra in approvals:
        decision_id, approved = extra.get("decision_id"), extra.get("approved_partitions")
        if not decision_id or not approved:
            problems.append(ClearanceProblem(kind="not_allowed", gate=uri,
                                             message=f"the event on {uri} carries no consent decision"))
            continue
        try:
            passed = _cleared_in_ledger(ledger, decision_id=decision_id)
        except LedgerTampered as exc:
            problems.append(ClearanceProblem(kind="tampered", message=f"the consent ledger fails verification: {exc}"))
            continue
        on_disk = _fingerprints_now([p["uri"] for p in approved], [p["id"] for p in approved])
        for claimed in approved:
            pid = claimed["id"]
            if passed.get(pid) != claimed["fingerprint"]:
                problems.append(ClearanceProblem(
                    kind="not_allowed", partition_id=pid, gate=uri,
                    message=f"{pid}: the event on {uri} approves it, but the ledger holds no passing decision "
                    f"{decision_id} for it with fingerprint {claimed['fingerprint']}",
                ))
            elif on_disk.get(pid) != claimed["fingerprint"]:
                problems.append(ClearanceProblem(
                    kind="changed", partition_id=pid, gate=uri, allowed_fingerprint=claimed["fingerprint"],
                    current_fingerprint=on_disk.get(pid),
                    message=f"{pid}: changed after its check: allowed with fingerprint {claimed['fingerprint']}, "
                    f"on disk now {on_disk.get(pid) or 'missing'}",
                ))
            else:
                required.append(RequiredPartition(id=pid, fingerprint=claimed["fingerprint"], gate=uri, excludable=False))
    if problems:
        raise ClearanceRefused(_message(head, problems), problems)
    return required


def _fingerprints_now(uris: list[str], ids: list[str]) -> dict[str, str]:
    """Partition id -> fingerprint on disk now, discovering each partition's dataset root once."""
    from airflow_consent.discovery import discover_partitions, fingerprint

    roots: dict[tuple[str, str], set[str]] = {}
    for uri, pid in zip(uris, ids, strict=True):
        dataset, *keys = pid.split("/")
        roots.setdefault((uri.rstrip("/").rsplit("/", len(keys))[0], dataset), set()).add(pid)
    found: dict[str, str] = {}
    for (root, dataset), wanted in roots.items():
        try:
            partitions = discover_partitions(root, dataset=dataset)
        except ConsentConfigurationError:
            continue  # reported as missing by the caller
        found.update({p.id: fingerprint(p) for p in partitions if p.id in wanted})
    return found


def _cleared_in_ledger(ledger: Any, dag_id: str | None = None, run_id: str | None = None, *,
                       decision_id: str | None = None) -> dict[str, str]:
    """Partition id -> fingerprint of its latest decision in this run, where that decision let it pass.

    The ledger counts an allow, and a deny whose violations are all of rules not enforced
    (warn/dryrun), and checks the run's records' hashes and links first (``LedgerTampered``).
    """
    if ledger is not None:
        return ledger.allowed_fingerprints(dag_id, run_id, decision_id=decision_id)
    from airflow_consent.ledger import Ledger

    with Ledger() as default_ledger:
        return default_ledger.allowed_fingerprints(dag_id, run_id, decision_id=decision_id)


def _required_partitions(gates: list[Any], context: Any) -> tuple[list[RequiredPartition], list[ClearanceProblem]]:
    """Discover and fingerprint again what each gate checks; a gate whose inputs cannot be read is a problem."""
    from airflow_consent.discovery import discover_partitions, fingerprint

    required: dict[str, RequiredPartition] = {}
    problems: list[ClearanceProblem] = []
    for gate in gates:
        try:
            specs, partition_filter = _gate_inputs(gate, context)
            for uri, name in specs:
                for partition in discover_partitions(uri, dataset=name, partition_filter=partition_filter or None):
                    if partition.id not in required:
                        required[partition.id] = RequiredPartition(
                            id=partition.id,
                            fingerprint=fingerprint(partition),
                            gate=gate.task_id,
                            excludable=getattr(gate, "on_violation", "fail") == "exclude",
                        )
        except (ConsentConfigurationError, OSError) as exc:
            problems.append(ClearanceProblem(
                kind="unreadable", gate=gate.task_id,
                message=f"cannot read the inputs of gate {gate.task_id!r} again: {exc}",
            ))
    return sorted(required.values(), key=lambda p: p.id), problems


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


def _compare(required: list[RequiredPartition], allowed: dict[str, str], run_id: str) -> list[ClearanceProblem]:
    problems = []
    for partition in required:
        allowed_fingerprint = allowed.get(partition.id)
        if allowed_fingerprint is None:
            if partition.excludable:
                log.info("%s was excluded by gate %s: not an input of this run", partition.id, partition.gate)
                continue
            problems.append(ClearanceProblem(
                kind="not_allowed", partition_id=partition.id, gate=partition.gate,
                current_fingerprint=partition.fingerprint,
                message=f"{partition.id}: no allow decision in the consent ledger for run {run_id!r} (gate "
                f"{partition.gate!r} did not allow it in this run: was the gate marked success by hand, or "
                "did it not run?)",
            ))
        elif allowed_fingerprint != partition.fingerprint:
            problems.append(ClearanceProblem(
                kind="changed", partition_id=partition.id, gate=partition.gate,
                allowed_fingerprint=allowed_fingerprint, current_fingerprint=partition.fingerprint,
                message=f"{partition.id}: changed after its check: allowed with fingerprint "
                f"{allowed_fingerprint}, on disk now {partition.fingerprint}",
            ))
    return problems


def _message(head: str, problems: list[ClearanceProblem]) -> str:
    lines = [f"{head}: {len(problems)} problem(s)"]
    lines += [f"  - {p.message}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  - ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)
