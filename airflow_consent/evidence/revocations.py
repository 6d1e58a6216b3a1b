"""Revocation lists: the subjects whose data must not be used, read once per gate evaluation.

A list is a column of subject ids in a Parquet or CSV file (local or any fsspec URI) or a database
table (SQLAlchemy URL, or an Airflow connection holding the credentials). It becomes one Arrow
array of distinct ids, read once per gate evaluation. Each partition's distinct subjects are
matched against it by ``RevocationMatcher``: integer ids by a search in the sorted list (no
per-call setup), string ids with ``pyarrow.compute.is_in``, many partitions' subjects per call,
because building the lookup table of a million-subject list costs about 0.1 s per call.

An unreadable list never raises out of the gate: it becomes a problem on every partition checked
against it (``RevocationListUnreadable``), which the policies deny.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from airflow_consent.evidence.config import RevocationSource

log = logging.getLogger(__name__)

SQL_CHUNK_ROWS = 100_000
FLUSH_AT = 2_000_000
EXAMPLES = 5


class RevocationListUnreadable(Exception):
    """The list could not be read or its ids cannot be compared with a dataset's subject ids."""

    def __init__(self, source: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


def subject_kind(data_type: pa.DataType) -> str | None:
    """'int' or 'string' for the subject id types the evidence path compares; None for any other type."""
    if pa.types.is_integer(data_type):
        return "int"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "string"
    return None


KIND_TYPES = {"int": pa.int64(), "string": pa.string()}


@dataclass
class RevocationList:
    """The distinct subject ids of one list, as read (``kind`` 'int' or 'string'; 'csv' ids are text)."""

    source: str
    values: pa.Array
    kind: str
    from_text: bool = False
    _by_kind: dict[str, pa.Array] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def listed(self) -> int:
        return len(self.values)

    def values_as(self, kind: str) -> pa.Array:
        """The ids typed like a dataset's subject column; ids read as text (CSV) may become integers."""
        with self._lock:
            if kind not in self._by_kind:
                self._by_kind[kind] = self._convert(kind)
            return self._by_kind[kind]

    def _convert(self, kind: str) -> pa.Array:
        if kind == self.kind:
            return self.values
        if self.from_text and kind == "int":
            try:
                return pc.unique(pc.cast(pc.utf8_trim_whitespace(self.values), pa.int64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise RevocationListUnreadable(
                    self.source, f"the subject ids are integers in the data but not in the list: {exc}"
                ) from exc
        raise RevocationListUnreadable(
            self.source, f"the list holds {self.kind} ids but the data's subject ids are {kind}s: they never match"
        )


def load_revocation_list(source: RevocationSource) -> RevocationList:
    """Read ``source`` into distinct ids; raises ``RevocationListUnreadable`` naming the source."""
    where = source.describe()
    try:
        if source.path:
            column, from_text = _read_file(source), source.format == "csv"
        else:
            column, from_text = _read_table(source), False
    except RevocationListUnreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read is reported on the partitions, never skipped
        raise RevocationListUnreadable(where, f"cannot read the revocation list: {type(exc).__name__}: {exc}") from exc
    kind = subject_kind(column.type)
    if kind is None:
        raise RevocationListUnreadable(
            where, f"column {source.column!r} has type {column.type}; subject ids must be integers or strings"
        )
    if column.null_count:
        log.warning("%s: ignoring %d null subject id(s) in the revocation list", where, column.null_count)
        column = pc.drop_null(column)
    values = pc.unique(pc.cast(column, KIND_TYPES[kind]))
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    log.info("Revocation list %s: %d subject(s)", where, len(values))
    return RevocationList(source=where, values=values, kind=kind, from_text=from_text)


def _read_file(source: RevocationSource) -> pa.ChunkedArray:
    fs, path = fsspec.core.url_to_fs(source.path)
    if source.format == "parquet":
        with fs.open(path, "rb") as handle:
            schema = pq.read_schema(handle)
            if source.column not in schema.names:
                raise RevocationListUnreadable(source.describe(), _missing_column(source.column, schema.names))
            handle.seek(0)
            return pq.read_table(handle, columns=[source.column]).column(source.column)
    with fs.open(path, "rb") as handle:
        table = pacsv.read_csv(
            handle,
            convert_options=pacsv.ConvertOptions(column_types={source.column: pa.string()}, strings_can_be_null=True),
        )
    if source.column not in table.column_names:
        raise RevocationListUnreadable(source.describe(), _missing_column(source.column, table.column_names))
    return table.column(source.column)


def _read_table(source: RevocationSource) -> pa.ChunkedArray:
    import sqlalchemy as sa

    engine = sa.create_engine(_sqlalchemy_url(source))
    try:
        statement = sa.select(sa.column(source.column)).select_from(sa.table(source.table))
        chunks: list[pa.Array] = []
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=SQL_CHUNK_ROWS).execute(statement)
            for rows in result.partitions(SQL_CHUNK_ROWS):
                chunks.append(pa.array([row[0] for row in rows]))
    finally:
        engine.dispose()
    types = {chunk.type for chunk in chunks if chunk.type != pa.null()}
    if len(types) > 1:
        raise RevocationListUnreadable(
            source.describe(), f"column {source.column!r} mixes types {sorted(map(str, types))}"
        )
    data_type = types.pop() if types else pa.string()
    return pa.chunked_array([chunk.cast(data_type) for chunk in chunks], type=data_type)


def _sqlalchemy_url(source: RevocationSource):
    if source.url:
        return source.url
    import sqlalchemy as sa
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(source.conn_id)
    if conn.conn_type == "sqlite":
        return sa.URL.create("sqlite", database=conn.host or conn.schema)
    driver = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}.get(conn.conn_type, conn.conn_type)
    return sa.URL.create(driver, username=conn.login, password=conn.password, host=conn.host, port=conn.port,
                         database=conn.schema)


def _missing_column(column: str, names: list[str]) -> str:
    return f"no column {column!r} (columns: {', '.join(names) or 'none'})"


# --- matching ---------------------------------------------------------------------------------


@dataclass
class RevocationMatch:
    """One partition's distinct subjects (with their row counts) to match; the result fields fill in on flush."""

    subjects: pa.Array
    counts: pa.Array
    rows: int | None = None
    matched: int | None = None
    examples: list[str] | None = None


class RevocationMatcher:
    """Matches partitions' distinct subjects against one list. Thread-safe.

    Integer ids are matched at once by binary search in the sorted list. String ids are queued by
    ``submit``; once ``flush_at`` ids are queued, the submitting thread runs one ``is_in`` over all
    of them. ``flush`` matches what is left; every ``RevocationMatch`` is filled in by the time it
    returns.
    """

    def __init__(self, revocations: RevocationList, kind: str, *, flush_at: int = FLUSH_AT):
        self.revocations = revocations
        self.kind = kind
        self.flush_at = flush_at
        values = revocations.values_as(kind)
        self._sorted = np.sort(values.to_numpy()) if kind == "int" else None
        self._options = None if kind == "int" else pc.SetLookupOptions(value_set=values, skip_nulls=True)
        self._pending: list[RevocationMatch] = []
        self._queued = 0
        self._lock = threading.Lock()

    def submit(self, subjects: pa.Array, counts: pa.Array) -> RevocationMatch:
        match = RevocationMatch(subjects=subjects, counts=counts)
        if self._sorted is not None:
            self._search(match)
            return match
        batch = None
        with self._lock:
            self._pending.append(match)
            self._queued += len(subjects)
            if self._queued >= self.flush_at:
                batch, self._pending, self._queued = self._pending, [], 0
        if batch:
            self._match(batch)
        return match

    def flush(self) -> None:
        with self._lock:
            batch, self._pending, self._queued = self._pending, [], 0
        if batch:
            self._match(batch)

    def _search(self, match: RevocationMatch) -> None:
        """Binary search of the partition's sorted distinct subjects in the sorted list."""
        subjects = match.subjects.to_numpy()
        order = np.argsort(subjects)
        ordered = subjects[order]
        listed = self._sorted
        found = np.zeros(len(ordered), dtype=bool)
        if len(listed) and len(ordered):
            at = np.minimum(np.searchsorted(listed, ordered), len(listed) - 1)
            found = listed[at] == ordered
        match.matched = int(found.sum())
        match.rows = int(match.counts.to_numpy()[order][found].sum()) if match.matched else 0
        match.examples = [str(v) for v in ordered[found][:EXAMPLES]]

    def _match(self, batch: list[RevocationMatch]) -> None:
        subjects = pa.concat_arrays([m.subjects for m in batch]) if len(batch) > 1 else batch[0].subjects
        listed = pc.is_in(subjects, options=self._options)
        offset = 0
        for match in batch:
            found = listed.slice(offset, len(match.subjects))
            offset += len(match.subjects)
            matched = pc.sum(found).as_py() or 0
            match.matched = matched
            if not matched:
                match.rows, match.examples = 0, []
                continue
            match.rows = pc.sum(pc.filter(match.counts, found)).as_py()
            revoked = pc.filter(match.subjects, found)
            first = pc.array_take(revoked, pc.array_sort_indices(revoked)).slice(0, EXAMPLES)
            match.examples = [str(v) for v in first.to_pylist()]
