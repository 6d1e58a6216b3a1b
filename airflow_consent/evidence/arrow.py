"""Row-level consent evidence with Arrow compute, one record batch at a time.

For each partition: the row count, the distinct subjects with their row counts (matched against the
revocation list), the rows per combination of consent flags, and the rows collected at or after
their consent was withdrawn or expired. Only the configured columns are read; no row ever becomes
a Python object. Each data file's schema is checked before any row is read, so a missing column or
a wrong type is reported against the file that has it.

A partition larger than one record batch (``batch_rows``) is streamed batch by batch. Partitions
that fit in one batch are read whole and measured together, many partitions per batch, with a
partition index column: a gate over ten thousand small partitions then costs about one file read
per partition instead of some thirty compute calls. Files are read with
``pyarrow.parquet.ParquetFile.iter_batches`` (footer read once, then row group by row group), about
half the per-file cost of a ``pyarrow.dataset`` scan.

A partition alone in its batch (the large ones) needs no partition index: its distinct subjects
are one hash pass (``pc.unique``), and only the rows of subjects found on the list are counted
after (none, mostly); its flag combinations are counted on the flags' bitmaps. Row for row that is
about a quarter less than counting rows per subject (``benchmarks/row_check.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.evidence.config import ColumnsConfig, DatasetEvidenceSettings
from airflow_consent.evidence.revocations import (
    EXAMPLES,
    KIND_TYPES,
    RevocationListUnreadable,
    RevocationMatcher,
    subject_kind,
)
from airflow_consent.models import EvidenceProblem

COMPACT_AT = 4_000_000
BITMAP_FLAGS = 4  # up to this many consent flags, a batch's combinations are counted on bitmaps (2**(n+1) calls)


@dataclass
class Revoked:
    """What matching a partition's distinct subjects against the revocation list found."""

    rows: int
    subjects: int
    examples: list[str]


@dataclass
class Measurement:
    """What the Arrow pass measured on one partition (or the problems that stopped it)."""

    rows: int = 0
    distinct_subjects: int = 0
    flag_rows: np.ndarray | None = None
    collected_after_withdrawal: int | None = None
    collected_after_expiry: int | None = None
    revoked: Revoked | None = None
    problems: list[EvidenceProblem] = field(default_factory=list)


MatcherFor = Callable[[str], RevocationMatcher | None]


def measure_partitions(
    partitions: Sequence[DiscoveredPartition], settings: DatasetEvidenceSettings, matcher_for: MatcherFor
) -> list[Measurement]:
    """Measure ``partitions`` (of one dataset); problems are returned on each measurement, never raised.

    ``matcher_for(kind)`` gives the revocation matcher for subject ids of that kind ('int' or
    'string'), or None when the dataset has no revocation list; it raises
    ``RevocationListUnreadable`` when the list cannot serve this dataset.
    """
    layout = _Layout(settings.config.columns)
    batch_rows = settings.config.batch_rows
    measurements = [Measurement() for _ in partitions]
    group = _Group(layout, matcher_for)
    for partition, measurement in zip(partitions, measurements, strict=True):
        opened, kind, problems = _opened_files(partition, settings)
        try:
            if problems:
                measurement.problems = problems
                continue
            rows = sum(parquet.metadata.num_rows for _, parquet in opened)
            if rows > batch_rows:
                _stream(partition, opened, kind, layout, batch_rows, matcher_for, measurement)
                continue
            pieces = _read_whole(partition, opened, layout, measurement)
            if measurement.problems:
                continue
            schema = pieces[0][1].schema
            if group.schema not in (None, schema) or group.rows + rows > batch_rows:
                group.measure()
                group = _Group(layout, matcher_for)
            group.add(partition, measurement, pieces, kind, schema, rows)
        finally:
            for _, parquet in opened:
                parquet.close(force=True)
    group.measure()
    return measurements


def flag_combinations(flag_rows: np.ndarray, purposes: list[str]) -> list[dict]:
    """``[{"purposes": [...], "rows": n}]`` for each combination of consent flags some rows carry."""
    entries = []
    for code in np.flatnonzero(flag_rows):
        granted = sorted(purpose for bit, purpose in enumerate(purposes) if int(code) >> bit & 1)
        entries.append({"purposes": granted, "rows": int(flag_rows[code])})
    return sorted(entries, key=lambda e: (len(e["purposes"]), e["purposes"]))


# --- layout and per-batch arithmetic -------------------------------------------------------------


class _Layout:
    """The configured columns in the order they are read: subject, consent flags, times."""

    def __init__(self, columns: ColumnsConfig):
        self.columns = columns
        self.flags = list(columns.consent.values())
        self.times = [c for c in (columns.collected_at, columns.consent_withdrawn_at, columns.consent_expires_at) if c]
        self.wanted = [columns.subject_id, *self.flags, *self.times]
        self.combinations = 1 << len(self.flags)

    def normalized(self, table: pa.Table) -> pa.Table:
        """Subject ids as int64 or string, times in microseconds (UTC when zoned), nullable fields without
        metadata: tables of different files and partitions that concatenate."""
        columns = [table.column(0).cast(KIND_TYPES[subject_kind(table.schema.field(0).type)])]
        columns += [table.column(index) for index in range(1, 1 + len(self.flags))]
        columns += [_utc(table.column(index)) for index in range(1 + len(self.flags), len(self.wanted))]
        return pa.Table.from_arrays(columns, names=self.wanted)


@dataclass
class _Counts:
    """Row counts of one batch, per slot (a partition's position in the batch)."""

    rows: np.ndarray
    flag_rows: np.ndarray | None
    after_withdrawal: np.ndarray | None
    after_expiry: np.ndarray | None
    undated: np.ndarray


def _count(batch: pa.RecordBatch | pa.Table, slots: np.ndarray | None, width: int, layout: _Layout) -> _Counts:
    """Rows, flag combinations and time comparisons of ``batch``; ``slots`` gives each row's slot (None: all 0)."""

    def per_slot(values: np.ndarray | None, size: int = width) -> np.ndarray:
        if slots is None:
            total = batch.num_rows if values is None else int(np.count_nonzero(values))
            return np.array([total], dtype=np.int64)
        return np.bincount(slots, weights=values, minlength=size).astype(np.int64)

    flag_rows = None
    if layout.flags and slots is None and len(layout.flags) <= BITMAP_FLAGS:
        flag_rows = _flag_rows(batch, 1, len(layout.flags)).reshape(1, -1)
    elif layout.flags:
        codes = _flag_codes(batch, 1, len(layout.flags))
        if slots is None:
            flag_rows = np.bincount(codes, minlength=layout.combinations).reshape(1, -1)
        else:
            keys = slots.astype(np.int64) * layout.combinations + codes
            flag_rows = np.bincount(keys, minlength=width * layout.combinations).reshape(width, -1)
    after = {}
    undated = np.zeros(width, dtype=np.int64)
    if layout.times:
        base = 1 + len(layout.flags)
        collected = _utc(batch.column(base))
        limited = None
        for offset, column in enumerate(layout.times[1:], start=1):
            limit = _utc(batch.column(base + offset))
            after[column] = per_slot(_mask(pc.greater_equal(collected, limit)))
            valid = pc.is_valid(limit)
            limited = valid if limited is None else pc.or_(limited, valid)
        if collected.null_count:
            undated = per_slot(_mask(pc.and_(pc.is_null(collected), limited)))
    columns = layout.columns
    return _Counts(
        rows=per_slot(None),
        flag_rows=flag_rows,
        after_withdrawal=after.get(columns.consent_withdrawn_at) if columns.consent_withdrawn_at else None,
        after_expiry=after.get(columns.consent_expires_at) if columns.consent_expires_at else None,
        undated=undated,
    )


def _flag_rows(batch: pa.RecordBatch | pa.Table, first: int, count: int) -> np.ndarray:
    """Rows per combination of flags (index: bit i = flag i is true; null counts as not consented), from
    the flags' bitmaps: a few bitwise operations per combination instead of a code per row."""
    combinations: list[tuple[int, pa.Array | pa.ChunkedArray | None]] = [(0, None)]  # None: every row
    for bit in range(count):
        flag = pc.fill_null(batch.column(first + bit), False)
        choices = ((1 << bit, flag), (0, pc.invert(flag)))
        combinations = [
            (code | value, chosen if rows is None else pc.and_(rows, chosen))
            for code, rows in combinations
            for value, chosen in choices
        ]
    counted = np.zeros(1 << count, dtype=np.int64)
    for code, rows in combinations:
        counted[code] = pc.sum(rows).as_py() or 0
    return counted


def _flag_codes(batch: pa.RecordBatch | pa.Table, first: int, count: int) -> np.ndarray:
    """Each row's combination of flags (bit i = flag i is true; null counts as not consented)."""
    code_type = np.uint8 if count <= 8 else np.uint16
    codes = np.zeros(batch.num_rows, dtype=code_type)
    for bit in range(count):
        flags = pc.fill_null(batch.column(first + bit), False).to_numpy(zero_copy_only=False)
        codes |= flags.view(np.uint8).astype(code_type, copy=False) << code_type(bit)
    return codes


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a numpy mask, null as false."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _utc(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A timestamp column in microseconds; zoned columns compared in UTC."""
    return column.cast(pa.timestamp("us", tz="UTC" if column.type.tz else None))


# --- a partition larger than a batch: streamed ---------------------------------------------------


def _stream(
    partition: DiscoveredPartition,
    opened: list[tuple[str, pq.ParquetFile]],
    kind: str,
    layout: _Layout,
    batch_rows: int,
    matcher_for: MatcherFor,
    measurement: Measurement,
) -> None:
    subject_type = KIND_TYPES[kind]
    subjects: list[pa.Array] = []
    counts: list[pa.Array] = []
    queued = 0
    totals: _Counts | None = None
    for name, parquet in opened:
        nulls = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=layout.wanted, use_threads=False):
                if not batch.num_rows:
                    continue
                column = batch.column(0)
                if column.null_count:
                    nulls += column.null_count
                    column = pc.drop_null(column)
                values, rows = _value_counts(column.cast(subject_type))
                subjects.append(values)
                counts.append(rows)
                queued += len(values)
                if queued > COMPACT_AT and len(subjects) > 1:
                    subjects, counts = _compact(subjects, counts)
                    queued = len(subjects[0])
                totals = _add(totals, _count(batch, None, 1, layout))
        except (OSError, pa.ArrowException) as exc:
            measurement.problems.append(_problem(partition.uri_of(name), None, f"cannot read the data: {exc}"))
            continue
        if nulls:
            measurement.problems.append(_null_subjects(partition.uri_of(name), layout, nulls))
    if totals is None:
        totals = _Counts(np.zeros(1, np.int64), None, None, None, np.zeros(1, np.int64))
    if len(subjects) > 1:
        subjects, counts = _compact(subjects, counts)
    values = subjects[0] if subjects else pa.array([], KIND_TYPES[kind])
    _finish(partition, measurement, totals, 0, layout, len(values))
    if not measurement.problems:
        measurement.revoked = _match_one(
            values, counts[0] if counts else pa.array([], pa.int64()), kind, matcher_for, measurement
        )


def _add(total: _Counts | None, more: _Counts) -> _Counts:
    if total is None:
        return more

    def plus(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a + b

    return _Counts(
        total.rows + more.rows,
        plus(total.flag_rows, more.flag_rows),
        plus(total.after_withdrawal, more.after_withdrawal),
        plus(total.after_expiry, more.after_expiry),
        total.undated + more.undated,
    )


def _value_counts(subjects: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The distinct ``subjects`` and the rows of each: ``pc.value_counts``, in about two thirds of its time."""
    encoded = pc.dictionary_encode(subjects)
    rows = np.bincount(encoded.indices.to_numpy(), minlength=len(encoded.dictionary))
    return encoded.dictionary, pa.array(rows, pa.int64())


def _compact(subjects: list[pa.Array], counts: list[pa.Array]) -> tuple[list[pa.Array], list[pa.Array]]:
    """Merge per-batch (subject, rows) counts into one pair of arrays with distinct subjects."""
    table = pa.table({"s": pa.chunked_array(subjects), "n": pa.chunked_array(counts)})
    merged = table.group_by("s", use_threads=False).aggregate([("n", "sum")])
    return [merged.column("s").combine_chunks()], [merged.column("n_sum").combine_chunks()]


def _match_one(
    values: pa.Array, counts: pa.Array, kind: str, matcher_for: MatcherFor, measurement: Measurement
) -> Revoked | None:
    try:
        matcher = matcher_for(kind)
    except RevocationListUnreadable as exc:
        measurement.problems.append(_problem(exc.source, "revocations", exc.message))
        return None
    if matcher is None:
        return None
    found = matcher.listed(values)
    matched = int(np.count_nonzero(found))
    if not matched:
        return Revoked(0, 0, [])
    revoked = values.filter(pa.array(found))
    first = revoked.take(pc.sort_indices(revoked)).slice(0, EXAMPLES)
    return Revoked(int(counts.to_numpy()[found].sum()), matched, [str(v) for v in first.to_pylist()])


# --- partitions that fit in a batch: measured together ---------------------------------------------


@dataclass
class _Member:
    partition: DiscoveredPartition
    measurement: Measurement
    pieces: list[tuple[str, pa.Table]]


class _Group:
    """Small partitions of one subject-id kind, measured as one batch with a slot index."""

    def __init__(self, layout: _Layout, matcher_for: MatcherFor):
        self.layout = layout
        self.matcher_for = matcher_for
        self.kind: str | None = None
        self.schema: pa.Schema | None = None
        self.rows = 0
        self.members: list[_Member] = []

    def add(
        self,
        partition: DiscoveredPartition,
        measurement: Measurement,
        pieces: list[tuple[str, pa.Table]],
        kind: str,
        schema: pa.Schema,
        rows: int,
    ) -> None:
        self.kind, self.schema = kind, schema
        self.rows += rows
        self.members.append(_Member(partition, measurement, pieces))

    def measure(self) -> None:
        if not self.members:
            return
        layout, width = self.layout, len(self.members)
        tables = [table for member in self.members for _, table in member.pieces]
        files = [(slot, name) for slot, member in enumerate(self.members) for name, _ in member.pieces]
        batch = pa.concat_tables(tables).combine_chunks()
        subjects = batch.column(0).chunk(0) if batch.num_rows else pa.array([], KIND_TYPES[self.kind])
        slots = None  # each row's slot; None: one partition
        if width > 1:
            file_of_row = np.repeat(np.arange(len(tables)), [table.num_rows for table in tables])
            slots = np.array([slot for slot, _ in files], dtype=np.int64)[file_of_row]
        counts = _count(batch, slots, width, layout)

        nulls_per_file = [table.column(0).null_count for table in tables]
        valid, present = None, subjects
        if subjects.null_count:
            valid = _mask(pc.is_valid(subjects))
            present = subjects.filter(pa.array(valid))
        pair_rows: np.ndarray | None = None  # rows per (slot, subject); None: counted later, revoked subjects only
        if slots is None:
            pair_subjects = pc.unique(present)
            pair_slots = np.zeros(len(pair_subjects), dtype=np.int64)
        else:
            pairs = pa.table({"slot": slots if valid is None else slots[valid], "subject": present})
            distinct = pairs.group_by(["slot", "subject"], use_threads=False).aggregate([([], "count_all")])
            pair_slots = distinct.column("slot").to_numpy()
            pair_subjects = distinct.column("subject").combine_chunks()
            pair_rows = distinct.column("count_all").to_numpy()
        distinct_per_slot = np.bincount(pair_slots, minlength=width)

        for index, (slot, name) in enumerate(files):
            if nulls_per_file[index]:
                member = self.members[slot]
                member.measurement.problems.append(
                    _null_subjects(member.partition.uri_of(name), layout, nulls_per_file[index])
                )
        for slot, member in enumerate(self.members):
            _finish(member.partition, member.measurement, counts, slot, layout, int(distinct_per_slot[slot]))

        pending = [m for m in self.members if not m.measurement.problems]
        if not pending:
            return
        try:
            matcher = self.matcher_for(self.kind)
        except RevocationListUnreadable as exc:
            for member in pending:
                member.measurement.problems.append(_problem(exc.source, "revocations", exc.message))
            return
        if matcher is None:
            return
        found = matcher.listed(pair_subjects)
        if pair_rows is None:  # one partition: its rows of the revoked subjects, if it has any
            hits = pair_subjects.filter(pa.array(found))
            revoked_rows = np.array([_rows_of(present, hits)], dtype=np.int64)
        else:
            revoked_rows = np.bincount(pair_slots, weights=pair_rows * found, minlength=width).astype(np.int64)
        revoked_subjects = np.bincount(pair_slots, weights=found, minlength=width).astype(np.int64)
        examples = _examples(pair_slots, pair_subjects, found)
        for slot, member in enumerate(self.members):
            if not member.measurement.problems:
                member.measurement.revoked = Revoked(
                    int(revoked_rows[slot]), int(revoked_subjects[slot]), examples.get(slot, [])
                )


def _rows_of(subjects: pa.Array, hits: pa.Array) -> int:
    """How many of ``subjects`` are one of ``hits``."""
    return (pc.sum(pc.is_in(subjects, value_set=hits)).as_py() or 0) if len(hits) else 0


def _examples(slots: np.ndarray, subjects: pa.Array, found: np.ndarray) -> dict[int, list[str]]:
    """Slot → its first revoked subjects in sort order, for the slots with any."""
    if not found.any():
        return {}
    hits = pa.table({"slot": slots[found], "subject": subjects.filter(pa.array(found))})
    hits = hits.sort_by([("slot", "ascending"), ("subject", "ascending")])
    hit_slots = hits.column("slot").to_numpy()
    starts = np.flatnonzero(np.r_[True, hit_slots[1:] != hit_slots[:-1]])
    ends = np.r_[starts[1:], len(hit_slots)]
    column = hits.column("subject")
    return {
        int(hit_slots[start]): [str(v) for v in column.slice(start, min(end - start, EXAMPLES)).to_pylist()]
        for start, end in zip(starts, ends, strict=True)
    }


def _read_whole(
    partition: DiscoveredPartition,
    opened: list[tuple[str, pq.ParquetFile]],
    layout: _Layout,
    measurement: Measurement,
) -> list[tuple[str, pa.Table]]:
    pieces = []
    for name, parquet in opened:
        try:
            batches = list(
                parquet.iter_batches(
                    batch_size=max(1, parquet.metadata.num_rows), columns=layout.wanted, use_threads=False
                )
            )
            file_schema = parquet.schema_arrow
            schema = pa.schema([file_schema.field(column) for column in layout.wanted])
            pieces.append((name, layout.normalized(pa.Table.from_batches(batches, schema=schema))))
        except (OSError, pa.ArrowException) as exc:
            measurement.problems.append(_problem(partition.uri_of(name), None, f"cannot read the data: {exc}"))
    return pieces


# --- shared: checks and results ---------------------------------------------------------------------


def _finish(
    partition: DiscoveredPartition, measurement: Measurement, counts: _Counts, slot: int, layout: _Layout, distinct: int
) -> None:
    """Copy slot ``slot`` of ``counts`` into ``measurement``, adding the problems the counts reveal."""
    columns = layout.columns
    measurement.rows = int(counts.rows[slot])
    if measurement.rows == 0 and not measurement.problems:
        measurement.problems.append(
            _problem(partition.uri, None, "the partition has no rows: there is nothing to check")
        )
    if counts.undated[slot]:
        measurement.problems.append(
            _problem(
                partition.uri,
                columns.collected_at,
                f"{int(counts.undated[slot])} row(s) have no {columns.collected_at} but a withdrawal or expiry time: "
                "cannot tell whether they were collected after consent ended",
            )
        )
    if measurement.problems:
        return
    measurement.distinct_subjects = distinct
    measurement.flag_rows = None if counts.flag_rows is None else counts.flag_rows[slot]
    withdrawal, expiry = counts.after_withdrawal, counts.after_expiry
    measurement.collected_after_withdrawal = None if withdrawal is None else int(withdrawal[slot])
    measurement.collected_after_expiry = None if expiry is None else int(expiry[slot])


def _opened_files(
    partition: DiscoveredPartition, settings: DatasetEvidenceSettings
) -> tuple[list[tuple[str, pq.ParquetFile]], str, list[EvidenceProblem]]:
    """Open each data file's Parquet footer and check the configured columns' presence and types.

    The files are returned open (even when there are problems); the caller closes them.
    """
    files = [f for f in partition.files if settings.wants_file(f.name)]
    problems: list[EvidenceProblem] = [
        _problem(
            partition.uri_of(f.name),
            None,
            f"unmeasured file in partition: it does not match data_files {settings.config.data_files!r}, so its "
            "rows were not checked, yet a reader of the partition reads it; rename or remove it, or widen "
            "data_files",
        )
        for f in partition.files
        if not settings.wants_file(f.name)
    ]
    if not files:
        return (
            [],
            "string",
            [
                *problems,
                _problem(
                    partition.uri,
                    None,
                    f"no data file matches {settings.config.data_files!r}: there are no rows to check",
                ),
            ],
        )
    columns = settings.config.columns
    opened: list[tuple[str, pq.ParquetFile]] = []
    kinds: dict[str, str] = {}
    naive_files: dict[str, bool] = {}
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
        opened.append((data_file.name, parquet))
        schema = parquet.schema_arrow
        zones: dict[str, str | None] = {}

        def check(
            column: str, expected: str, ok: Callable[[pa.DataType], bool], schema: pa.Schema = schema, uri: str = uri
        ) -> pa.DataType | None:
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
            problems.append(
                _problem(
                    uri,
                    naive[0],
                    f"timestamp columns {naive} have no time zone but the others do: they cannot be compared",
                )
            )
        elif zones:
            naive_files[data_file.name] = next(iter(zones.values())) is None
    if len(set(naive_files.values())) > 1:
        problems.append(
            _problem(
                partition.uri,
                columns.collected_at,
                f"the timestamp columns have no time zone in {sorted(n for n, v in naive_files.items() if v)} but do "
                f"in {sorted(n for n, v in naive_files.items() if not v)}: they cannot be compared",
            )
        )
    if len(set(kinds.values())) > 1:
        problems.append(
            _problem(
                partition.uri,
                columns.subject_id,
                f"column {columns.subject_id!r} holds integers in some files and strings in others: {kinds}",
            )
        )
    return opened, next(iter(kinds.values()), "string"), problems


def _null_subjects(uri: str, layout: _Layout, nulls: int) -> EvidenceProblem:
    return _problem(
        uri,
        layout.columns.subject_id,
        f"{nulls} row(s) have a null subject id: they cannot be checked against consent or revocations",
    )


def _problem(file: str, field_name: str | None, message: str) -> EvidenceProblem:
    return EvidenceProblem(file=file, field=field_name, message=message)
