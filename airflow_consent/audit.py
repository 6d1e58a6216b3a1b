"""Re-audit: which DAG runs, training tasks and models used data that is now revoked or now denied.

Every training task the run-time clearance let start left a usage record in the ledger
(``airflow_consent.clearance``): the partitions it was cleared on (id, fingerprint), the decisions
that allowed them, its gates' arguments and its outlets. ``audit_ledger`` reads them back (the whole
usage chain verified, the decisions checked like a clearance checks them) and asks each used
partition today's question:

1. **The gate again** (``run_gate(..., record=False)``), as the partition's gate would ask it today:
   its arguments from the usage record, resolved under today's ``[consent]`` (an argument the
   platform pins now takes its pinned value), today's policies and revocation lists, the purpose and
   model of the decision that allowed it, judged now; one batched query per dataset, gate settings,
   purpose and model, over exactly the used partitions. A policy change (a license reclassified, a
   source struck from the approved list) makes a past allow wrong as surely as a withdrawn subject,
   and the gate is the one place the project decides, so the audit cannot disagree with the next gate.
2. **Every revoked subject**, when the bytes on disk are the ones used (same fingerprint) and the
   dataset has a revocation list: the partition's subject column matched against today's list (the
   gate names at most five), so the report can say, per subject, which runs and models used them.

Each (partition, fingerprint used, purpose) gets a status: ``revoked`` (subjects on today's list
are in the bytes used), ``denied`` (today's gate blocks those bytes), ``changed`` (the partition was
re-delivered since: today's verdict is of other bytes, so the use cannot be re-checked), ``purged``
(changed, but by deletion certificates of the ledger's purge chain that go from exactly the bytes
used to those on disk now: the revoked rows are gone, the models trained on them are named for
retraining), ``missing`` (the partition is gone) or ``ok``. The outcome is ``affected`` when any is
revoked or denied, else ``unverifiable`` when any is changed or missing, else ``clean``: a purged
finding is listed, with the models to retrain, but does not on its own make the audit fail (every
later use was cleared on the purged bytes, so it is a finding of its own). Every audit is appended
to the ledger's audit chain. Free of Airflow: the CLI and ``ConsentAuditOperator`` call it.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from airflow_consent.errors import ConsentConfigurationError, LedgerTampered, NoPartitionsFound
from airflow_consent.models import DecidedPartition

if TYPE_CHECKING:
    from airflow_consent.gate import Log
    from airflow_consent.ledger import Ledger, LedgerRecord
    from airflow_consent.ledger.usage import PurgeRecord, UsageRecord, UsedPartition
    from airflow_consent.run import GateSettings

log = logging.getLogger(__name__)

Status = Literal["revoked", "denied", "changed", "purged", "missing", "ok"]
Outcome = Literal["clean", "affected", "unverifiable"]
AFFECTED: tuple[Status, ...] = ("revoked", "denied")
UNVERIFIABLE: tuple[Status, ...] = ("changed", "missing")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditUse(_Model):
    """One training task instance that was cleared on a partition."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    cleared_at: datetime
    usage_seqs: list[int]
    decision_ids: list[str]
    models: list[str]
    """the ``model`` the gate's request named"""
    outlets: list[str]
    """the task's outlets: the models it produces"""

    @property
    def task(self) -> str:
        return f"{self.dag_id}.{self.task_id}" + (f"[{self.map_index}]" if self.map_index >= 0 else "")


class AuditFinding(_Model):
    """One partition, as a set of tasks used it (one fingerprint, one purpose), judged today."""

    partition_id: str
    partition_uri: str
    purpose: str
    fingerprint: str
    fingerprint_now: str | None
    status: Status
    today: DecidedPartition | None
    """today's verdict on the bytes on disk now (None: the partition is gone)"""
    policy_revision: str | None
    revoked_subjects: list[str]
    revoked_rows: int | None
    note: str | None
    uses: list[AuditUse]
    purge_ids: list[str] = []
    """``purged``: the deletion certificates from the bytes used to those on disk now, in order"""


class AuditSubject(_Model):
    """A subject on today's revocation list, and everything trained on their rows."""

    subject_id: str
    partitions: list[str]
    runs: list[str]
    tasks: list[str]
    models: list[str]


class AuditReport(_Model):
    """What one audit found; JSON for ``--json``, XCom and the ledger's audit record."""

    audit_id: str
    audited_at: datetime
    purpose: str | None
    since: datetime | None
    usage_head: str
    usage_records: int
    outcome: Outcome
    findings: list[AuditFinding]
    subjects: list[AuditSubject]
    recorded_seq: int | None = None

    @property
    def affected(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.status in AFFECTED]

    @property
    def unverifiable(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.status in UNVERIFIABLE]

    @property
    def purged(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.status == "purged"]

    def flagged_uses(self) -> list[AuditUse]:
        return [use for f in self.findings if f.status != "ok" for use in f.uses]


def parse_since(text: str | datetime | None) -> datetime | None:
    """An ISO 8601 time (a date, or a time with or without a zone; UTC when none) as an aware UTC datetime."""
    if text is None or text == "":
        return None
    try:
        moment = text if isinstance(text, datetime) else datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConsentConfigurationError(f"since: {text!r} is not an ISO 8601 date or time") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def run_audit(
    *,
    purpose: str | None = None,
    since: datetime | None = None,
    ledger_url: str | None = None,
    requested_by: str = "cli:airflow-consent audit",
    record: bool = True,
    logger: Log = log,
) -> AuditReport:
    """Audit the ledger at ``ledger_url`` (default ``[consent] ledger_url``) and, with ``record``, append
    the result to its audit chain. Raises ``LedgerError``/``LedgerTampered``, ``EngineError`` or
    ``ConsentConfigurationError`` when no trustworthy audit could be made."""
    from airflow_consent.ledger import Ledger

    with Ledger(ledger_url) as ledger:
        report = audit_ledger(ledger, purpose=purpose, since=since, logger=logger)
        if record:
            recorded = ledger.record_audit(
                {
                    "audit_id": report.audit_id,
                    "requested_by": requested_by,
                    "purpose": purpose,
                    "since": report.since and report.since.isoformat(timespec="microseconds"),
                    "usage_head": report.usage_head,
                    "outcome": report.outcome,
                    "affected": len(report.affected),
                    "result": report.model_dump(mode="json", exclude={"recorded_seq"}),
                }
            )
            report = report.model_copy(update={"recorded_seq": recorded.seq})
            logger.info(
                "Recorded audit %s in the consent ledger %s: consent_audit seq %d",
                report.audit_id,
                ledger.display_url,
                recorded.seq,
            )
    return report


def audit_ledger(
    ledger: Ledger,
    *,
    purpose: str | None = None,
    since: datetime | None = None,
    logger: Log = log,
) -> AuditReport:
    """Re-check every partition the usage records (recorded at or after ``since``, cleared for
    ``purpose``) name, as described in the module docstring; records nothing."""
    audited_at = datetime.now(UTC)
    usages, head = ledger.usage_records()
    selected = [u for u in usages if since is None or u.recorded_at >= since]
    purges = _purge_steps(ledger.purge_records()) if usages else {}
    records = ledger.decision_records({d for u in selected for p in u.partitions for d in p.decision_ids})
    decided = {(r.decision_id, r.partition_id): r for r in records}
    pending: dict[tuple, _Pending] = {}
    audited: set[int] = set()  # the usage records with a use of ``purpose``
    for usage in selected:
        for used in usage.partitions:
            for decision_id in used.decision_ids:
                if (record := decided.get((decision_id, used.id))) is None:
                    raise LedgerTampered(
                        f"consent_usage seq {usage.seq} says {usage.dag_id}.{usage.task_id} was cleared on {used.id} "
                        f"by decision {decision_id}, which the decision ledger does not hold: run `airflow-consent "
                        "ledger verify`"
                    )
                if purpose is None or record.purpose == purpose:
                    audited.add(usage.seq)
                    arguments = usage.gates.get(used.gate)
                    key = (used.id, used.fingerprint, record.purpose, record.model, _frozen(arguments))
                    pending.setdefault(key, _Pending(used, record.purpose, record.model, arguments)).add(usage, record)
    logger.info("Consent audit: %d usage record(s) name %d partition use(s) to re-check", len(audited), len(pending))
    batches: dict[tuple, list[_Pending]] = defaultdict(list)
    for key, item in pending.items():
        batches[(key[2:], item.used.root, item.used.dataset)].append(item)
    findings: list[AuditFinding] = []
    for batch in batches.values():
        findings += _judge(batch, audited_at, purges, logger)
    findings.sort(key=lambda f: (f.status == "ok", f.partition_id, f.purpose, f.fingerprint))
    outcome: Outcome = (
        "affected"
        if any(f.status in AFFECTED for f in findings)
        else "unverifiable"
        if any(f.status in UNVERIFIABLE for f in findings)
        else "clean"
    )
    return AuditReport(
        audit_id=str(uuid.uuid4()),
        audited_at=audited_at,
        purpose=purpose,
        since=since,
        usage_head=str(head),
        usage_records=len(audited),
        outcome=outcome,
        findings=findings,
        subjects=_subjects(findings),
    )


@dataclass
class _Pending:
    """The uses of one partition (one fingerprint, purpose, model, gate arguments) still to be judged."""

    used: UsedPartition
    purpose: str
    model: str | None
    arguments: dict[str, str | None] | None
    uses: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)

    def add(self, usage: UsageRecord, record: LedgerRecord) -> None:
        use = self.uses.setdefault(
            (usage.dag_id, usage.run_id, usage.task_id, usage.map_index),
            {
                "dag_id": usage.dag_id,
                "run_id": usage.run_id,
                "task_id": usage.task_id,
                "map_index": usage.map_index,
                "cleared_at": usage.recorded_at,
                "usage_seqs": [],
                "decision_ids": [],
                "models": [],
                "outlets": [],
            },
        )
        for name, value in (
            ("usage_seqs", usage.seq),
            ("decision_ids", record.decision_id),
            ("models", record.model),
            *(("outlets", outlet) for outlet in usage.outlets),
        ):
            if value is not None and value not in use[name]:
                use[name].append(value)


def _frozen(arguments: dict[str, str | None] | None) -> tuple | None:
    return None if arguments is None else tuple(sorted(arguments.items()))


def _settings_today(arguments: dict[str, str | None] | None) -> GateSettings:
    """The gate's settings as a gate with these arguments resolves them today; the arguments the
    platform pins now take their ``[consent]`` values. Unknown arguments (a task cleared by an
    approved-asset event): ``[consent]`` alone."""
    from airflow_consent.config import settings
    from airflow_consent.enforcement import check_mode
    from airflow_consent.run import GateArguments, resolve

    config = settings()
    kept = {k: v for k, v in (arguments or {}).items() if k not in config.pinned_task_arguments}
    if mode := kept.get("enforcement"):
        check_mode(mode, "the gate's enforcement argument")
    return resolve(GateArguments(**kept), config)  # type: ignore[arg-type]  # enforcement: checked above


_PurgeSteps = dict[tuple[str, str], tuple["PurgeRecord", str]]


def _purge_steps(purges: list[PurgeRecord]) -> _PurgeSteps:
    """(partition id, fingerprint before) -> (the certificate that purged those bytes, fingerprint after)."""
    return {(p.id, p.fingerprint_before): (record, p.fingerprint_after) for record in purges for p in record.partitions}


def _purged_by(purges: _PurgeSteps, partition_id: str, used: str, now: str) -> list[PurgeRecord]:
    """The certificates leading from fingerprint ``used`` to ``now`` (empty: the bytes changed otherwise)."""
    certificates: list[PurgeRecord] = []
    fingerprint = used
    while (step := purges.get((partition_id, fingerprint))) is not None and len(certificates) < len(purges):
        certificates.append(step[0])
        fingerprint = step[1]
        if fingerprint == now:
            return certificates
    return []


def _judge(batch: list[_Pending], audited_at: datetime, purges: _PurgeSteps, logger: Log) -> list[AuditFinding]:
    """Run today's gate over the partitions of one batch (one dataset, gate settings, purpose, model)."""
    from airflow_consent.models import GateRequest, Requester
    from airflow_consent.run import run_gate

    first = batch[0]
    settings = _settings_today(first.arguments)
    distinct = {item.used.id: item.used for item in batch}
    wanted = [[(k, "=", v) for k, v in sorted(p.keys.items())] for p in distinct.values()]
    partition_filter = wanted if all(wanted) else None
    request = GateRequest(
        purpose=first.purpose,
        model=first.model,
        evaluated_at=audited_at,
        requested_by=Requester(kind="cli", id="airflow-consent audit"),
    )
    specs = settings.specs([(first.used.root, first.used.dataset)])
    try:
        report = run_gate(request, specs, settings, partition_filter=partition_filter, record=False, logger=logger)
        today = {p.id: p for p in report.partitions}
        revision = report.policy_revision
    except NoPartitionsFound:
        today, revision = {}, None
    unchanged = [pid for pid, p in distinct.items() if pid in today and today[pid].fingerprint == p.fingerprint]
    revoked = _revoked_subjects(settings, first.used, partition_filter, unchanged) if unchanged else {}
    findings = []
    for item in batch:
        now = today.get(item.used.id)
        subjects, rows, note = revoked.get(item.used.id, ([], None, None))
        certificates = _purged_by(purges, item.used.id, item.used.fingerprint, now.fingerprint) if now else []
        if now is None:
            status: Status = "missing"
            note = f"the partition is no longer in {item.used.root}: the bytes used cannot be re-checked"
        elif certificates:
            status = "purged"
            removed = sum(p.rows_removed for c in certificates for p in c.partitions if p.id == item.used.id)
            named = [f"{c.purge_id} (consent_purge seq {c.seq}, {c.recorded_at:%Y-%m-%d %H:%M}Z)" for c in certificates]
            note = (
                f"purged since it was used: {removed} row(s) of revoked subjects removed by deletion certificate(s) "
                + ", ".join(named)
                + "; retrain the models below, trained on the bytes before"
            )
        elif now.fingerprint != item.used.fingerprint:
            status = "changed"
            note = (
                "re-delivered since it was used (purged, corrected?): today's verdict is of the bytes on disk "
                "now, not of those used"
            )
        else:
            status = "revoked" if subjects else "denied" if now.blocked else "ok"
        findings.append(
            AuditFinding(
                partition_id=item.used.id,
                partition_uri=item.used.uri,
                purpose=item.purpose,
                fingerprint=item.used.fingerprint,
                fingerprint_now=now.fingerprint if now else None,
                status=status,
                today=now,
                policy_revision=revision,
                revoked_subjects=subjects,
                revoked_rows=rows,
                note=note,
                uses=[AuditUse(**use) for use in sorted(item.uses.values(), key=lambda u: u["cleared_at"])],
                purge_ids=[c.purge_id for c in certificates],
            )
        )
    return findings


def _revoked_subjects(
    settings: GateSettings,
    used: UsedPartition,
    partition_filter: list | None,
    partition_ids: list[str],
) -> dict[str, tuple[list[str], int | None, str | None]]:
    """Partition id -> (every subject of it on today's revocation list, their rows, or why they could not
    be listed), for the partitions of ``used``'s dataset named; empty when it has no revocation list."""
    if not settings.dataset_config_path:
        return {}
    from airflow_consent.discovery import discover_partitions
    from airflow_consent.errors import RevocationListUnreadable
    from airflow_consent.evidence.config import config_dir, load_dataset_settings
    from airflow_consent.evidence.revocations import load_revocation_list

    evidence = load_dataset_settings(config_dir(settings.dataset_config_path), used.dataset)
    if evidence is None or evidence.revocations is None:
        return {}
    try:
        revocations = load_revocation_list(evidence.revocations)
    except RevocationListUnreadable as exc:
        return {pid: ([], None, f"revoked subjects not listed: {exc}") for pid in partition_ids}
    found = {}
    for partition in discover_partitions(used.root, dataset=used.dataset, partition_filter=partition_filter):
        if partition.id in partition_ids:
            found[partition.id] = _listed(partition, evidence.config.columns.subject_id, revocations)
    return found


def _listed(partition: Any, column: str, revocations: Any) -> tuple[list[str], int | None, str | None]:
    """The subjects of ``partition`` (its ``column``, every data file) on ``revocations``, and their rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from airflow_consent.errors import RevocationListUnreadable
    from airflow_consent.evidence.revocations import RevocationMatcher, subject_kind

    try:
        pieces = []
        for data_file in partition.files:
            with partition.filesystem.open_input_file(data_file.path) as handle:
                pieces.append(pq.ParquetFile(handle).read(columns=[column]).column(column))
        subjects = pc.drop_null(pa.chunked_array(pieces).combine_chunks() if pieces else pa.array([], pa.string()))
        kind = subject_kind(subjects.type)
        if kind is None:
            return [], None, f"revoked subjects not listed: column {column!r} has type {subjects.type}"
        hits = subjects.filter(pa.array(RevocationMatcher(revocations, kind).listed(subjects)))
    except (OSError, KeyError, pa.ArrowException, RevocationListUnreadable) as exc:
        return [], None, f"revoked subjects not listed: {type(exc).__name__}: {exc}"
    return sorted(str(s) for s in pc.unique(hits).to_pylist()), len(hits), None


def _subjects(findings: list[AuditFinding]) -> list[AuditSubject]:
    """Per revoked subject: the partitions holding their rows, and the runs, tasks and models that used them."""
    by_subject: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for finding in findings:
        for subject in finding.revoked_subjects:
            entry = by_subject[subject]
            entry["partitions"].add(finding.partition_id)
            for use in finding.uses:
                entry["runs"].add(f"{use.dag_id}/{use.run_id}")
                entry["tasks"].add(use.task)
                entry["models"].update(use.models, use.outlets)
    return [
        AuditSubject(subject_id=subject, **{name: sorted(values) for name, values in entry.items()})
        for subject, entry in sorted(by_subject.items())
    ]


def render_audit(report: AuditReport) -> str:
    """The audit as people read it: the outcome, each partition that is not ok with the uses it names,
    then each revoked subject."""
    from airflow_consent.report import _violation_lines

    flagged = report.flagged_uses()
    runs = {(u.dag_id, u.run_id) for u in flagged}
    tasks = {(u.dag_id, u.run_id, u.task) for u in flagged}
    models = {m for u in flagged for m in (*u.models, *u.outlets)}
    scope = (
        f"{report.usage_records} usage record(s)"
        + (f" since {report.since.isoformat()}" if report.since else "")
        + (f", purpose {report.purpose!r}" if report.purpose else "")
    )
    lines = [
        (
            f"Consent audit {report.outcome.upper()}: {len(report.affected)} affected and "
            f"{len(report.unverifiable)} unverifiable of {len(report.findings)} used partition(s) in {scope}; "
            f"{len(runs)} DAG run(s), {len(tasks)} training task(s), {len(models)} model(s) flagged"
            + (f"; {len(report.purged)} purged since use (retrain)" if report.purged else "")
        )
    ]
    for finding in report.findings:
        lines.append(
            f"  {finding.status.upper():8} {finding.partition_id} for {finding.purpose!r}, used with "
            f"fingerprint {finding.fingerprint}"
            + (
                ""
                if finding.fingerprint_now in (finding.fingerprint, None)
                else f", on disk now {finding.fingerprint_now}"
            )
        )
        if finding.status == "ok":
            continue
        if finding.revoked_subjects:
            lines.append(
                f"      {len(finding.revoked_subjects)} subject(s) on today's revocation list, "
                f"{finding.revoked_rows} row(s): {', '.join(finding.revoked_subjects)}"
            )
        if finding.note:
            lines.append(f"      {finding.note}")
        if finding.today is not None:
            lines += _violation_lines(finding.today)
        for use in finding.uses:
            made = ", ".join([*(f"model {m}" for m in use.models), *(f"outlet {o}" for o in use.outlets)])
            lines.append(
                f"      used by run {use.dag_id}/{use.run_id}, task {use.task} ({made or 'no model named'}; "
                f"decision {', '.join(use.decision_ids)})"
            )
    for subject in report.subjects:
        lines.append(
            f"  subject {subject.subject_id}: in {', '.join(subject.partitions)}; runs "
            f"{', '.join(subject.runs)}; tasks {', '.join(subject.tasks)}; models "
            f"{', '.join(subject.models) or 'none named'}"
        )
    if report.recorded_seq is not None:
        lines.append(f"  recorded as audit {report.audit_id} (consent_audit seq {report.recorded_seq})")
    return "\n".join(lines)
