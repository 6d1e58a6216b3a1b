"""Row-level consent evidence with Arrow compute, one record batch at a time.

For one partition: the row count, the distinct subjects with their row counts (handed to a
``RevocationMatcher``), the rows per combination of consent flags, and the rows collected at or after
their consent was withdrawn or expired. Only the configured columns are read, batch by batch; no row
ever becomes a Python object. Each data file's schema is checked before any row is read, so a
missing column or a wrong type is reported against the file that has it.

Files are read with ``pyarrow.parquet.ParquetFile.iter_batches`` (footer read once, then row group
by row group): it costs about half of a ``pyarrow.dataset`` scan per file, which matters for a gate
over ten thousand small partitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.evidence.config import DatasetEvidenceSettings
from airflow_consent.evidence.revocations import (
    KIND_TYPES,
    RevocationListUnreadable,
    RevocationMatch,
    RevocationMatcher,
    subject_kind,
)
from airflow_consent.models import EvidenceProblem

COMPACT_AT = 4_000_000


@dataclass
class Measurement:
    """What the Arrow pass measured on one partition (or the problems that stopped it)."""

    rows: int = 0
    distinct_subjects: int = 0
    flag_rows: np.ndarray | None = None
    collected_after_withdrawal: int | None = None
    collected_after_expiry: int | None = None
    revocation: RevocationMatch | None = None
    problems: list[EvidenceProblem] = field(default_factory=list)


MatcherFor = Callable[[str], RevocationMatcher | None]


def measure_partition(
    partition: DiscoveredPartition, settings: DatasetEvidenceSettings, matcher_for: MatcherFor
) -> Measurement:
    """Measure ``partition``; problems (missing columns, wrong types, unreadable files, ...) are returned, never raised.

    ``matcher_for(kind)`` gives the revocation matcher for subject ids of that kind ('int' or
    'string'), or None when the dataset has no revocation list; it raises
    ``RevocationListUnreadable`` when the list cannot serve this dataset.
    """
    measurement = Measurement()
    files = [f for f in partition.files if settings.wants_file(f.name)]
    if not files:
        measurement.problems.append(_problem(
            partition.uri, None, f"no data file matches {settings.config.data_files!r}: there are no rows to check"
        ))
        return measurement

    columns = settings.config.columns
    opened, kind, problems = _checked_files(partition, files, settings)
    try:
        if problems:
            measurement.problems = problems
            return measurement
        return _measure(partition, settings, opened, kind, matcher_for, measurement)
    finally:
        for _, parquet in opened:
            parquet.close(force=True)


def _measure(
    partition: DiscoveredPartition,
    settings: DatasetEvidenceSettings,
    opened: list[tuple[str, pq.ParquetFile]],
    kind: str,
    matcher_for: MatcherFor,
    measurement: Measurement,
) -> Measurement:
    columns = settings.config.columns

    purposes = list(columns.consent)
    flag_columns = list(columns.consent.values())
    times = [c for c in (columns.collected_at, columns.consent_withdrawn_at, columns.consent_expires_at) if c]
    wanted = [columns.subject_id, *flag_columns, *times]
    flag_rows = np.zeros(1 << len(purposes), dtype=np.int64) if purposes else None
    after_withdrawal = 0 if columns.consent_withdrawn_at else None
    after_expiry = 0 if columns.consent_expires_at else None
    undated = 0
    subject_chunks: list[pa.Array] = []
    count_chunks: list[pa.Array] = []
    queued = 0
    subject_type = KIND_TYPES[kind]

    for name, parquet in opened:
        nulls = 0
        try:
            for batch in parquet.iter_batches(batch_size=settings.config.batch_rows, columns=wanted, use_threads=False):
                if not batch.num_rows:
                    continue
                measurement.rows += batch.num_rows
                subjects = batch.column(0)
                if subjects.null_count:
                    nulls += subjects.null_count
                    subjects = pc.drop_null(subjects)
                counted = pc.value_counts(subjects.cast(subject_type))
                subject_chunks.append(counted.field("values"))
                count_chunks.append(counted.field("counts"))
                queued += len(counted)
                if queued > COMPACT_AT and len(subject_chunks) > 1:
                    subject_chunks, count_chunks = _compact(subject_chunks, count_chunks)
                    queued = len(subject_chunks[0])
                if flag_rows is not None:
                    flag_rows += _flag_combinations(batch, 1, len(flag_columns))
                if times:
                    base = 1 + len(flag_columns)
                    collected = _utc(batch.column(base))
                    limited = None
                    for offset, column in enumerate(times[1:], start=1):
                        limit = _utc(batch.column(base + offset))
                        after = pc.sum(pc.greater_equal(collected, limit)).as_py() or 0
                        if column == columns.consent_withdrawn_at:
                            after_withdrawal += after
                        else:
                            after_expiry += after
                        limited = pc.is_valid(limit) if limited is None else pc.or_(limited, pc.is_valid(limit))
                    if collected.null_count:
                        undated += pc.sum(pc.and_(pc.is_null(collected), limited)).as_py() or 0
        except (OSError, pa.ArrowException) as exc:
            measurement.problems.append(_problem(partition.uri_of(name), None, f"cannot read the data: {exc}"))
            continue
        if nulls:
            measurement.problems.append(_problem(
                partition.uri_of(name), columns.subject_id,
                f"{nulls} row(s) have a null subject id: they cannot be checked against consent or revocations",
            ))

    if measurement.rows == 0 and not measurement.problems:
        measurement.problems.append(
            _problem(partition.uri, None, "the partition has no rows: there is nothing to check")
        )
    if undated:
        measurement.problems.append(_problem(
            partition.uri, columns.collected_at,
            f"{undated} row(s) have no {columns.collected_at} but a withdrawal or expiry time: "
            "cannot tell whether they were collected after consent ended",
        ))
    if measurement.problems:
        return measurement

    subjects, counts = (subject_chunks, count_chunks)
    if len(subject_chunks) > 1:
        subjects, counts = _compact(subject_chunks, count_chunks)
    measurement.distinct_subjects = len(subjects[0])
    measurement.flag_rows = flag_rows
    measurement.collected_after_withdrawal = after_withdrawal
    measurement.collected_after_expiry = after_expiry
    try:
        matcher = matcher_for(kind)
    except RevocationListUnreadable as exc:
        measurement.problems.append(_problem(exc.source, "revocations", exc.message))
        return measurement
    if matcher is not None:
        measurement.revocation = matcher.submit(subjects[0], counts[0])
    return measurement


def flag_combinations(flag_rows: np.ndarray, purposes: list[str]) -> list[dict]:
    """``[{"purposes": [...], "rows": n}]`` for each combination of consent flags some rows carry."""
    entries = []
    for code in np.flatnonzero(flag_rows):
        granted = sorted(purpose for bit, purpose in enumerate(purposes) if int(code) >> bit & 1)
        entries.append({"purposes": granted, "rows": int(flag_rows[code])})
    return sorted(entries, key=lambda e: (len(e["purposes"]), e["purposes"]))


def _checked_files(
    partition: DiscoveredPartition, files: list, settings: DatasetEvidenceSettings
) -> tuple[list[tuple[str, pq.ParquetFile]], str, list[EvidenceProblem]]:
    """Open each file's Parquet footer and check the configured columns' presence and types.

    The files that pass are returned open; the caller closes them.
    """
    columns = settings.config.columns
    opened: list[tuple[str, pq.ParquetFile]] = []
    problems: list[EvidenceProblem] = []
    kinds: dict[str, str] = {}
    zones: dict[str, str | None] = {}
    for data_file in files:
        uri = partition.uri_of(data_file.name)
        handle = None
        try:
            handle = partition.filesystem.open_input_file(data_file.path)
            parquet = pq.ParquetFile(handle)
        except (OSError, pa.ArrowException) as exc:
            if handle is not None:
                handle.close()
            problems.append(_problem(uri, None, f"not a readable Parquet file: {exc}"))
            continue
        schema = parquet.schema_arrow
        before = len(problems)

        def check(column: str, expected: str, ok: Callable[[pa.DataType], bool]) -> pa.DataType | None:
            index = schema.get_field_index(column)
            if index < 0:
                similar = [n for n in schema.names if n.lower() == column.lower()]
                hint = f" (did you mean {similar[0]!r}?)" if similar else f" (columns: {', '.join(schema.names)})"
                problems.append(_problem(uri, column, f"column {column!r} is missing{hint}"))
                return None
            data_type = schema.field(index).type
            if not ok(data_type):
                problems.append(_problem(uri, column, f"column {column!r} has type {data_type}; expected {expected}"))
                return None
            return data_type

        subject_type = check(columns.subject_id, "integers or strings", lambda t: subject_kind(t) is not None)
        if subject_type is not None:
            kinds[data_file.name] = subject_kind(subject_type)
        for flag in columns.consent.values():
            check(flag, "bool", pa.types.is_boolean)
        for column in (columns.collected_at, columns.consent_withdrawn_at, columns.consent_expires_at):
            if column:
                data_type = check(column, "a timestamp", pa.types.is_timestamp)
                if data_type is not None:
                    zones[column] = data_type.tz
        if len({tz is None for tz in zones.values()}) > 1:
            naive = sorted(c for c, tz in zones.items() if tz is None)
            problems.append(_problem(
                uri, naive[0], f"timestamp columns {naive} have no time zone but the others do: they cannot be compared"
            ))
        if len(problems) == before:
            opened.append((data_file.name, parquet))
        else:
            parquet.close(force=True)
    if len(set(kinds.values())) > 1:
        problems.append(_problem(
            partition.uri, columns.subject_id,
            f"column {columns.subject_id!r} holds integers in some files and strings in others: {kinds}",
        ))
    kind = next(iter(kinds.values()), "string")
    return opened, kind, problems


def _flag_combinations(batch: pa.RecordBatch, first: int, count: int) -> np.ndarray:
    """Rows per combination of flags (bit i = flag i is true; null counts as not consented)."""
    code_type = np.uint8 if count <= 8 else np.uint16
    codes = np.zeros(batch.num_rows, dtype=code_type)
    for bit in range(count):
        flags = pc.fill_null(batch.column(first + bit), False).to_numpy(zero_copy_only=False)
        codes |= flags.view(np.uint8).astype(code_type, copy=False) << code_type(bit)
    return np.bincount(codes, minlength=1 << count)


def _utc(column: pa.Array) -> pa.Array:
    """A timestamp column in microseconds; zoned columns compared in UTC."""
    return column.cast(pa.timestamp("us", tz="UTC" if column.type.tz else None))


def _compact(subjects: list[pa.Array], counts: list[pa.Array]) -> tuple[list[pa.Array], list[pa.Array]]:
    """Merge per-batch (subject, rows) counts into one pair of arrays with distinct subjects."""
    table = pa.table({"s": pa.chunked_array(subjects), "n": pa.chunked_array(counts)})
    merged = table.group_by("s", use_threads=False).aggregate([("n", "sum")])
    return [merged.column("s").combine_chunks()], [merged.column("n_sum").combine_chunks()]


def _problem(file: str, field_name: str | None, message: str) -> EvidenceProblem:
    return EvidenceProblem(file=file, field=field_name, message=message)
