"""Revocation lists: the subjects whose data must not be used, read once per gate evaluation.

A list is a column of subject ids in a Parquet or CSV file (local or any fsspec URI) or a database
table (SQLAlchemy URL, or an Airflow connection holding the credentials). It becomes one Arrow
array of distinct ids, read once per gate evaluation. Partitions' distinct subjects are matched
against it by ``RevocationMatcher``: integer ids by binary search in the sorted list (no per-call
setup), string ids with ``pyarrow.compute.is_in``, many small partitions' subjects per call,
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

from airflow_consent.errors import RevocationListUnreadable
from airflow_consent.evidence.config import RevocationSource

log = logging.getLogger(__name__)

SQL_CHUNK_ROWS = 100_000
EXAMPLES = 5


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
    except Exception as exc:
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
    return RevocationList(source=where, values=values, kind=kind, from_text=from_text)


def _read_file(source: RevocationSource) -> pa.ChunkedArray:
    fs, path = fsspec.core.url_to_fs(source.path)
    if (kind := fs.info(path).get("type")) != "file":  # a FIFO or a device would never end
        raise RevocationListUnreadable(source.describe(), f"not a regular file ({kind}): cannot read it as a list")
    if source.format == "parquet":
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)  # not pq.read_table: that imports pyarrow.dataset, and pandas
            names = parquet.schema_arrow.names
            if source.column not in names:
                raise RevocationListUnreadable(source.describe(), _missing_column(source.column, names))
            return parquet.read(columns=[source.column]).column(source.column)
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
        schema, _, name = source.table.rpartition(".")
        statement = sa.select(sa.column(source.column)).select_from(sa.table(name, schema=schema or None))
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
    return sa.URL.create(
        driver, username=conn.login, password=conn.password, host=conn.host, port=conn.port, database=conn.schema
    )


def _missing_column(column: str, names: list[str]) -> str:
    return f"no column {column!r} (columns: {', '.join(names) or 'none'})"


# --- matching ---------------------------------------------------------------------------------


class RevocationMatcher:
    """Tells which of many subject ids are on one list; stateless after construction, so thread-safe.

    Integer ids are looked up by binary search in the sorted list (sorted once; no per-call setup).
    String ids go through ``pyarrow.compute.is_in`` with the list prepared as its value set; callers
    pass many partitions' subjects per call, since each call hashes the list again.
    """

    def __init__(self, revocations: RevocationList, kind: str):
        self.revocations = revocations
        self.kind = kind
        values = revocations.values_as(kind)
        self._sorted = np.sort(values.to_numpy()) if kind == "int" else None
        self._options = None if kind == "int" else pc.SetLookupOptions(value_set=values, skip_nulls=True)

    def listed(self, subjects: pa.Array) -> np.ndarray:
        """A boolean mask over ``subjects`` (no nulls): True where the subject is on the list."""
        if self._sorted is None:
            return pc.fill_null(pc.is_in(subjects, options=self._options), False).to_numpy(zero_copy_only=False)
        values = subjects.to_numpy()
        found = np.zeros(len(values), dtype=bool)
        if not len(values) or not len(self._sorted):
            return found
        order = np.argsort(values)
        ordered = values[order]
        at = np.minimum(np.searchsorted(self._sorted, ordered), len(self._sorted) - 1)
        found[order] = self._sorted[at] == ordered
        return found
