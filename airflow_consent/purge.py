"""Purge: remove the rows of revoked subjects from partitions, and certify it in the ledger.

``purge_partitions`` reads, for each named partition of a hive-partitioned Parquet dataset, every
data file into memory, drops the rows whose subject (the column the dataset's evidence
configuration names) is on the dataset's revocation list, and computes the fingerprint the
partition will have (``fingerprint_of_contents``), before anything on disk changes. A missing
configuration, revocation list or subject column stops it there: no file is touched. Then, if any
row is to go, it appends a **deletion certificate** to the ledger's ``consent_purge`` chain (subject
ids as ``sha256`` of the id, rows removed and fingerprints before and after per partition, and every
use of the bytes before from the usage records: the models to retrain), and only then rewrites each
changed file atomically (a temporary file in the same directory, then ``os.replace``) with the same
schema and Parquet key-value metadata (manifest claims live there). A partition with nothing to
remove is left byte-identical and is not in the certificate; a purge with nothing to remove
appends none. Free of Airflow: the CLI calls it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from airflow_consent.errors import ConsentConfigurationError, PurgeFailed
from airflow_consent.ledger.usage import PurgedPartition, RetrainUse

if TYPE_CHECKING:
    import pyarrow as pa

    from airflow_consent.discovery import DiscoveredPartition
    from airflow_consent.evidence.revocations import RevocationList
    from airflow_consent.gate import Log
    from airflow_consent.ledger import Ledger

log = logging.getLogger(__name__)


class PurgeReport(BaseModel):
    """What one purge did: the partitions rewritten, those left as they were, and its certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purge_id: str
    purged_at: datetime
    dataset: str
    root: str
    revocation_list: str
    purged: list[PurgedPartition]
    unchanged: list[str]
    """the named partitions with no row of a revoked subject: not rewritten"""
    retrain: list[RetrainUse]
    recorded_seq: int | None = None

    @property
    def rows_removed(self) -> int:
        return sum(p.rows_removed for p in self.purged)


def subject_digest(subject: object) -> str:
    """How a certificate names a subject: ``sha256:<hex>`` of the id as text."""
    return "sha256:" + hashlib.sha256(str(subject).encode("utf-8")).hexdigest()


@dataclass
class _Plan:
    """One partition, read and purged in memory: the new bytes of each file to rewrite."""

    partition: DiscoveredPartition
    rewrites: dict[str, bytes]
    read: dict[str, str]
    """the SHA-256 of each file to rewrite as it was read"""
    rows_before: int
    rows_removed: int
    subjects: list[str]
    fingerprint_before: str
    fingerprint_after: str


def purge_partitions(
    dataset_uri: str,
    partition_ids: Sequence[str],
    *,
    dataset_config_path: str | None = None,
    ledger_url: str | None = None,
    requested_by: str = "cli:airflow-consent purge",
    logger: Log = log,
) -> PurgeReport:
    """Remove the rows of revoked subjects from ``partition_ids`` of ``dataset_uri`` and certify it in the
    ledger at ``ledger_url`` (default ``[consent] ledger_url``); see the module docstring. Raises
    ``ConsentConfigurationError`` (nothing touched) for a bad argument, a dataset without a revocation
    list or subject column; ``RevocationListUnreadable``; ``LedgerError``; ``PurgeFailed``."""
    from airflow_consent.discovery import discover_partitions
    from airflow_consent.evidence.config import config_dir, load_dataset_settings
    from airflow_consent.evidence.revocations import load_revocation_list
    from airflow_consent.ledger import Ledger

    if not partition_ids:
        raise ConsentConfigurationError("name at least one partition to purge (--partition)")
    if dataset_config_path is None:
        from airflow_consent.config import settings

        dataset_config_path = settings().dataset_config_path
    if not dataset_config_path:
        raise ConsentConfigurationError(
            "no evidence configuration directory: pass --dataset-config-path or set [consent] dataset_config_path"
        )
    directory = config_dir(dataset_config_path)
    partitions = _selected(discover_partitions(dataset_uri), partition_ids)
    dataset = partitions[0].dataset
    evidence = load_dataset_settings(directory, dataset)
    if evidence is None:
        raise ConsentConfigurationError(f"{directory}: no evidence configuration {dataset}.json for {dataset!r}")
    if evidence.revocations is None:
        raise ConsentConfigurationError(
            f"{evidence.source}: names no revocation list (revocations): nothing says whose rows to remove"
        )
    revocations = load_revocation_list(evidence.revocations)
    column = evidence.config.columns.subject_id
    plans = [
        _plan(partition, [f.name for f in partition.files if evidence.wants_file(f.name)], column, revocations)
        for partition in partitions
    ]
    changed = [plan for plan in plans if plan.rows_removed]
    purged_at = datetime.now(UTC)
    with Ledger(ledger_url) as ledger:
        retrain = _uses_before(ledger, changed)
        report = PurgeReport(
            purge_id=str(uuid.uuid4()),
            purged_at=purged_at,
            dataset=dataset,
            root=partitions[0].root,
            revocation_list=revocations.source,
            purged=[
                PurgedPartition(
                    id=plan.partition.id,
                    uri=plan.partition.uri,
                    files=sorted(plan.rewrites),
                    rows_before=plan.rows_before,
                    rows_removed=plan.rows_removed,
                    subjects=plan.subjects,
                    fingerprint_before=plan.fingerprint_before,
                    fingerprint_after=plan.fingerprint_after,
                )
                for plan in changed
            ],
            unchanged=[plan.partition.id for plan in plans if not plan.rows_removed],
            retrain=retrain,
        )
        if not changed:
            logger.info("Consent purge: no row of a subject on %s in %d partition(s)", revocations.source, len(plans))
            return report
        recorded = _certify(ledger, report, requested_by)
        logger.info(
            "Recorded deletion certificate %s in the consent ledger %s: consent_purge seq %d",
            report.purge_id,
            ledger.display_url,
            recorded,
        )
    for plan in changed:
        _rewrite(plan)
    _check_written(changed)
    return report.model_copy(update={"recorded_seq": recorded})


def _selected(found: list[DiscoveredPartition], wanted: Sequence[str]) -> list[DiscoveredPartition]:
    """The partitions named by id (``dataset/key=value/...``, or without the dataset); each must exist and
    be on a local filesystem (a rewrite is an ``os.replace``)."""
    import pyarrow.fs as pafs

    by_name = {p.id: p for p in found} | {p.id.split("/", 1)[-1]: p for p in found}
    unknown = [name for name in wanted if name.strip("/") not in by_name]
    if unknown:
        raise ConsentConfigurationError(
            f"no partition {', '.join(map(repr, unknown))} in {found[0].root}; it has {', '.join(p.id for p in found)}"
        )
    selected = list({id(p): p for p in (by_name[name.strip("/")] for name in wanted)}.values())
    remote = [p.id for p in selected if not isinstance(p.filesystem, pafs.LocalFileSystem)]
    if remote:
        raise ConsentConfigurationError(f"purge rewrites local files only; {', '.join(remote)} is not local")
    return selected


def _plan(partition: DiscoveredPartition, names: list[str], column: str, revocations: RevocationList) -> _Plan:
    """Read every data file of ``partition`` and drop, in memory, the rows of subjects on ``revocations``
    from those in ``names``; nothing is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_consent.discovery import fingerprint_of_contents

    contents: dict[str, bytes] = {}
    for data_file in partition.files:
        with open(data_file.path, "rb") as handle:
            contents[data_file.name] = handle.read()
    rewrites: dict[str, bytes] = {}
    rows_before = rows_removed = 0
    subjects: set[str] = set()
    for name in names:
        where = f"{partition.id}/{name}"
        try:
            parquet = pq.ParquetFile(pa.BufferReader(contents[name]))
            table = parquet.read()
        except (OSError, pa.ArrowException) as exc:
            raise ConsentConfigurationError(f"{where}: not a readable Parquet file: {exc}") from exc
        if column not in table.column_names:
            raise ConsentConfigurationError(
                f"{where}: no subject column {column!r} (columns.subject_id of the evidence configuration); "
                f"it has {', '.join(table.column_names)}"
            )
        listed = _listed(table.column(column).combine_chunks(), revocations, where)
        rows_before += table.num_rows
        if not listed.any():
            continue
        rows_removed += int(listed.sum())
        subjects.update(subject_digest(s) for s in table.column(column).filter(pa.array(listed)).unique().to_pylist())
        rewrites[name] = _written(table.filter(pa.array(~listed)), parquet)
    return _Plan(
        partition=partition,
        rewrites=rewrites,
        read={name: hashlib.sha256(contents[name]).hexdigest() for name in rewrites},
        rows_before=rows_before,
        rows_removed=rows_removed,
        subjects=sorted(subjects),
        fingerprint_before=fingerprint_of_contents(partition, contents),
        fingerprint_after=fingerprint_of_contents(partition, {**contents, **rewrites}),
    )


def _listed(subjects: pa.Array, revocations: RevocationList, where: str) -> Any:
    """A boolean mask over ``subjects``: True where the subject is on ``revocations`` (nulls never are)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_consent.evidence.revocations import RevocationMatcher, subject_kind

    kind = subject_kind(subjects.type)
    if kind is None:
        raise ConsentConfigurationError(f"{where}: subject column has type {subjects.type}, not integers or strings")
    valid = pc.is_valid(subjects).to_numpy(zero_copy_only=False)
    found = np.zeros(len(subjects), dtype=bool)
    found[valid] = RevocationMatcher(revocations, kind).listed(subjects.filter(pa.array(valid)))
    return found


def _written(table: pa.Table, original: Any) -> bytes:
    """``table`` as Parquet bytes, with its schema and key-value metadata (read from ``original`` into
    ``table.schema``) and the original's compression."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = original.metadata
    compression = metadata.row_group(0).column(0).compression if metadata.num_row_groups else "snappy"
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=compression.lower() if compression != "UNCOMPRESSED" else "none",
    )
    return sink.getvalue().to_pybytes()


def _uses_before(ledger: Ledger, plans: list[_Plan]) -> list[RetrainUse]:
    """Every use, in the usage records, of a purged partition's bytes before the purge."""
    if not plans:
        return []
    before = {(plan.partition.id, plan.fingerprint_before) for plan in plans}
    usages, _ = ledger.usage_records()
    return [
        RetrainUse(
            partition_id=used.id,
            fingerprint=used.fingerprint,
            usage_seq=usage.seq,
            dag_id=usage.dag_id,
            run_id=usage.run_id,
            task_id=usage.task_id,
            map_index=usage.map_index,
            outlets=usage.outlets,
        )
        for usage in usages
        for used in usage.partitions
        if (used.id, used.fingerprint) in before
    ]


def _certify(ledger: Ledger, report: PurgeReport, requested_by: str) -> int:
    record = ledger.record_purge(
        {
            "purge_id": report.purge_id,
            "requested_by": requested_by,
            "dataset": report.dataset,
            "root": report.root,
            "revocation_list": report.revocation_list,
            "rows_removed": report.rows_removed,
            "partitions": [p.model_dump(mode="json") for p in report.purged],
            "retrain": [u.model_dump(mode="json") for u in report.retrain],
        }
    )
    return record.seq


def _rewrite(plan: _Plan) -> None:
    """Replace each rewritten file atomically: a hidden temporary file beside it, then ``os.replace``;
    a file that is no longer the one read is left as it is (``PurgeFailed``)."""
    for name, data in plan.rewrites.items():
        target = plan.partition.path_of(name)
        with open(target, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != plan.read[name]:
                raise PurgeFailed(
                    f"{plan.partition.id}/{name}: changed since the purge read it; left as it is (the deletion "
                    "certificate is recorded; the audit will report the partition changed): run the purge again"
                )
        directory, base = os.path.split(target)
        temporary = os.path.join(directory, f".{base}.purge-{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            shutil.copymode(target, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise PurgeFailed(
                f"{plan.partition.id}/{name}: could not be rewritten ({exc}); the deletion certificate is "
                "recorded: run the purge again"
            ) from exc
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_written(plans: list[_Plan]) -> None:
    """Each partition now has the fingerprint its certificate states (else something else wrote to it)."""
    from airflow_consent.discovery import discover_partitions, fingerprint

    for plan in plans:
        partition = plan.partition
        (now,) = [p for p in discover_partitions(partition.root, dataset=partition.dataset) if p.id == partition.id]
        if (found := fingerprint(now)) != plan.fingerprint_after:
            raise PurgeFailed(
                f"{partition.id}: fingerprint after the purge is {found}, not {plan.fingerprint_after} as "
                "certified: the partition changed while it was purged"
            )


def render_purge(report: PurgeReport) -> str:
    """The purge as people read it: each partition, the uses to retrain, the certificate."""
    lines = [
        f"Consent purge of {report.dataset}: {report.rows_removed} row(s) removed from {len(report.purged)} "
        f"partition(s), {len(report.unchanged)} unchanged; revocation list {report.revocation_list}"
    ]
    for p in report.purged:
        lines.append(
            f"  PURGED     {p.id}: {p.rows_removed} of {p.rows_before} row(s), {len(p.subjects)} subject(s); "
            f"fingerprint {p.fingerprint_before} -> {p.fingerprint_after}"
        )
    for pid in report.unchanged:
        lines.append(f"  UNCHANGED  {pid}: no row of a revoked subject")
    for use in report.retrain:
        lines.append(
            f"  retrain: run {use.dag_id}/{use.run_id}, task {use.dag_id}.{use.task_id} used {use.partition_id} "
            f"(consent_usage seq {use.usage_seq}; outlets {', '.join(use.outlets) or 'none'})"
        )
    if report.recorded_seq is not None:
        lines.append(f"  recorded as deletion certificate {report.purge_id} (consent_purge seq {report.recorded_seq})")
    return "\n".join(lines)
