"""The decision ledger in a database: SQLite by default, PostgreSQL for shared deployments.

Appends are serialized so the chain never forks: SQLite takes the database write lock up front
(``BEGIN IMMEDIATE``, waiting up to the busy timeout), PostgreSQL a transaction-scoped advisory
lock. Under the lock an append reads the head, checks it against the last record, chains the new
records onto it, signs them with the deployment's key (``ledger/keys.py``), inserts them and moves
the head, all in one transaction. The usage, audit and purge chains (``ledger/usage.py``) are appended
under the same lock, each onto its own head, and read back whole and verified.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from airflow_consent.errors import ConsentConfigurationError, LedgerError, LedgerTampered
from airflow_consent.ledger.keys import LedgerKey, deployment_key
from airflow_consent.ledger.records import GENESIS, LedgerRecord, canonical_json, record_hash, timestamp
from airflow_consent.ledger.schema import (
    HEAD_ID,
    chain_metadata,
    chain_trigger_ddl,
    head_table,
    ledger_table,
    metadata,
    trigger_ddl,
)
from airflow_consent.ledger.usage import (
    AUDIT,
    PURGE,
    USAGE,
    AuditRecord,
    Chain,
    PurgeRecord,
    UsageRecord,
    chain_problems,
    chained_rows,
)
from airflow_consent.ledger.verify import Head, VerifyResult, verify_chain

if TYPE_CHECKING:
    from airflow_consent.ledger.usage import UsedPartition
    from airflow_consent.models import GateReport, GateRequest

SQLITE_BUSY_TIMEOUT_S = 60
_ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"airflow-consent ledger").digest()[:8], "big", signed=True)
_WRITE = "consent_ledger_write"
_CHUNK = 500


class _StoredBoolean(TypeDecorator):
    """``allow`` read as stored: SQLite's 0 and 1 become False and True, anything else stays as it is
    for ``LedgerRecord`` to refuse (SQLAlchemy's ``Boolean`` would read ``'false'`` or ``2`` as True)."""

    impl = Integer
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return bool(value) if type(value) is int and value in (0, 1) else value


# The ledger table's columns as every read selects them.
_STORED_COLUMNS = [
    type_coerce(column, _StoredBoolean()).label(column.name) if column.name == "allow" else column
    for column in ledger_table.c
]


class LatestDecision(NamedTuple):
    """A partition's latest decision: the fingerprint it was made on, whether it let the partition
    through, and what it was asked for and asked of (for clearance to compare with the gate)."""

    fingerprint: str
    passed: bool
    purpose: str
    engine: str
    entrypoint: str
    decision_id: str | None = None


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` for psycopg 3; refuse backends that are not supported."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise ConsentConfigurationError(f"[consent] ledger_url {url!r} is not a database URL: {exc}") from exc
    if backend not in ("sqlite", "postgresql"):
        raise ConsentConfigurationError(f"[consent] ledger_url: {backend} is not supported; use sqlite or postgresql")
    return url


class Ledger:
    """Append-only, hash-chained record of every gate decision, one record per partition.

    :param url: a SQLAlchemy URL (``sqlite:///path`` or ``postgresql://user@host/db``); default
        ``[consent] ledger_url``, which defaults to ``sqlite:///$AIRFLOW_HOME/consent_ledger.db``.
    :param key: signs appended records and checks the signatures of records read for a clearance;
        default the deployment's (``[consent] ledger_secret``, else ``$AIRFLOW_HOME/consent_ledger.key``).
    """

    def __init__(self, url: str | None = None, *, key: LedgerKey | None = None) -> None:
        if url is None:
            from airflow_consent.config import settings

            url = settings().ledger_url
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self._key = key
        self._engine: Engine | None = None
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"Ledger({self.display_url!r})"

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # --- writing ---------------------------------------------------------------------------------

    def record(self, report: GateReport, request: GateRequest, *, mode: str, input_digest: str) -> list[LedgerRecord]:
        """Append one record per partition of ``report``, atomically and in order; return them."""
        if not mode or not mode.isidentifier():
            raise ValueError(f"mode must be a word like 'deny', not {mode!r}")
        if not (input_digest or "").startswith("sha256:"):
            raise ValueError(f"input_digest must be 'sha256:<hex>', not {input_digest!r}")
        requester = request.requested_by
        common = {
            "decision_id": report.decision_id,
            "evaluated_at": timestamp(report.evaluated_at),
            "dag_id": request.dag_id,
            "run_id": request.run_id,
            "task_id": request.task_id,
            "purpose": report.purpose,
            "model": request.model,
            "requested_by": f"{requester.kind}:{requester.id}" if requester else None,
            "engine": report.engine,
            "entrypoint": report.entrypoint,
            "opa_version": report.opa_version,
            "policy_revision": report.policy_revision,
            "input_digest": input_digest,
            "mode": mode,
        }
        rows: list[dict[str, Any]] = []
        key = self._required_key(create=True)
        try:
            with self._write() as conn:
                last = self._locked_head(conn)
                recorded_at = timestamp(datetime.now(UTC))
                for seq, partition in enumerate(report.partitions, start=last.seq + 1):
                    row = {
                        **common,
                        "seq": seq,
                        "recorded_at": recorded_at,
                        "partition_id": partition.id,
                        "partition_uri": partition.uri,
                        "fingerprint": partition.fingerprint,
                        "allow": partition.allow,
                        "violations": canonical_json([v.model_dump(mode="json") for v in partition.violations]),
                        "prev_hash": rows[-1]["record_hash"] if rows else last.hash,
                    }
                    row["record_hash"] = record_hash(row)
                    row["signature"] = key.sign(row["record_hash"])
                    rows.append(row)
                if rows:
                    conn.execute(ledger_table.insert(), rows)
                    conn.execute(
                        head_table.update()
                        .where(head_table.c.id == HEAD_ID)
                        .values(last_seq=rows[-1]["seq"], last_hash=rows[-1]["record_hash"], updated_at=recorded_at)
                    )
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerError(f"could not append to the consent ledger at {self.display_url}: {exc}") from exc
        return [LedgerRecord.from_row(row) for row in rows]

    def _locked_head(self, conn: Connection, chain: Chain | None = None) -> Head:
        """The head of the decisions (or of ``chain``), read under the write lock, after checking the last
        record still matches it."""
        if chain is not None:
            self._create_chain(conn, chain)
        elif not self._schema_ready:
            self._create_schema(conn)
        records, heads = (chain.records, chain.head) if chain is not None else (ledger_table, head_table)
        last = select(records.c.seq, records.c.record_hash).order_by(records.c.seq.desc()).limit(1)
        tail = last.subquery()
        both = conn.execute(  # one round trip while holding the lock
            select(heads.c.last_seq, heads.c.last_hash, tail.c.seq, tail.c.record_hash)
            .select_from(heads.outerjoin(tail, true()))
            .where(heads.c.id == HEAD_ID)
        ).first()
        head = Head(both.last_seq, both.last_hash) if both else None
        if both is None:
            both = conn.execute(last).first()
        found = Head(both.seq, both.record_hash) if both and both.seq is not None else Head(0, GENESIS)
        if head is None or head != found:
            what = f"the {chain.name} chain of the consent ledger" if chain is not None else "the consent ledger"
            raise LedgerTampered(
                f"{what} at {self.display_url} ends at {found} but its head is {head}: refusing to "
                "append to a tampered ledger; run `airflow-consent ledger verify`"
            )
        return head

    def _create_chain(self, conn: Connection, chain: Chain) -> None:
        """Create a chain's tables, triggers and head row on its first append."""
        if inspect(conn).has_table(chain.records.name):
            return
        chain_metadata.create_all(conn, tables=[chain.records, chain.head])
        for statement in chain_trigger_ddl(self.dialect, chain.records.name, chain.head.name):
            conn.exec_driver_sql(statement.replace("%", "%%") if self.dialect == "postgresql" else statement)
        conn.execute(
            chain.head.insert().values(
                id=HEAD_ID, last_seq=0, last_hash=GENESIS, updated_at=timestamp(datetime.now(UTC))
            )
        )

    def _create_schema(self, conn: Connection) -> None:
        """Create the tables, triggers and head row once; safe under concurrent first appends."""
        if inspect(conn).has_table(ledger_table.name):
            _check_columns(conn, self.display_url)
        else:
            metadata.create_all(conn)
            for statement in trigger_ddl(self.dialect):
                conn.exec_driver_sql(statement.replace("%", "%%") if self.dialect == "postgresql" else statement)
            conn.execute(
                head_table.insert().values(
                    id=HEAD_ID, last_seq=0, last_hash=GENESIS, updated_at=timestamp(datetime.now(UTC))
                )
            )
        self._schema_ready = True

    def record_usage(
        self,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int,
        try_number: int | None,
        partitions: list[UsedPartition],
        gates: dict[str, dict[str, str | None] | None],
        outlets: list[str],
    ) -> UsageRecord:
        """Append that a training task was cleared on ``partitions`` and produces ``outlets``; return it."""
        content = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index,
            "try_number": try_number,
            "partitions": [p.model_dump(mode="json") for p in partitions],
            "gates": gates,
            "outlets": outlets,
        }
        (row,) = self._append_chained(USAGE, [content])
        return UsageRecord.from_row(row)

    def record_audit(self, content: dict[str, Any]) -> AuditRecord:
        """Append one audit's result (``airflow_consent.audit``); return it."""
        (row,) = self._append_chained(AUDIT, [content])
        return AuditRecord.from_row(row)

    def record_purge(self, content: dict[str, Any]) -> PurgeRecord:
        """Append one deletion certificate (``airflow_consent.purge``); return it."""
        (row,) = self._append_chained(PURGE, [content])
        return PurgeRecord.from_row(row)

    def usage_records(self) -> tuple[list[UsageRecord], Head]:
        """Every usage record in chain order, and the usage head, after verifying the whole usage chain."""
        rows, head = self._read_chain(USAGE)
        return [UsageRecord.from_row(row) for row in rows], head

    def audit_records(self) -> list[AuditRecord]:
        """Every audit record in chain order, after verifying the whole audit chain."""
        rows, _ = self._read_chain(AUDIT)
        return [AuditRecord.from_row(row) for row in rows]

    def purge_records(self) -> list[PurgeRecord]:
        """Every deletion certificate in chain order, after verifying the whole purge chain."""
        rows, _ = self._read_chain(PURGE)
        return [PurgeRecord.from_row(row) for row in rows]

    def decision_records(self, decision_ids: set[str]) -> list[LedgerRecord]:
        """The records of the decisions ``decision_ids``, in chain order, checked like a clearance checks
        them (hashes, links to their neighbours, signatures): ``LedgerTampered`` otherwise."""
        wanted = sorted(decision_ids)
        rows: list[Mapping[str, Any]] = []
        with self._read() as conn:
            if conn is None:
                return []
            for start in range(0, len(wanted), _CHUNK):
                query = select(*_STORED_COLUMNS).where(ledger_table.c.decision_id.in_(wanted[start : start + _CHUNK]))
                rows += [row._mapping for row in conn.execute(query)]
            rows.sort(key=lambda row: row["seq"])
            self._check_neighbourhood(conn, rows, f"{len(wanted)} decision(s)")
        self._check_signatures(rows, f"{len(wanted)} decision(s)")
        return [LedgerRecord.from_row(row) for row in rows]

    def _append_chained(self, chain: Chain, contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        key = self._required_key(create=True)
        try:
            with self._write() as conn:
                head = self._locked_head(conn, chain)
                rows = chained_rows(chain, contents, head, key, datetime.now(UTC))
                conn.execute(chain.records.insert(), rows)
                conn.execute(
                    chain.head.update()
                    .where(chain.head.c.id == HEAD_ID)
                    .values(
                        last_seq=rows[-1]["seq"], last_hash=rows[-1]["record_hash"], updated_at=rows[-1]["recorded_at"]
                    )
                )
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerError(
                f"could not append to the {chain.name} chain of the consent ledger at {self.display_url}: {exc}"
            ) from exc
        return rows

    def _read_chain(self, chain: Chain) -> tuple[list[Mapping[str, Any]], Head]:
        """A whole chain and its head, verified (``LedgerTampered`` naming the problems); empty when absent."""
        rows, head = self._chain_rows(chain)
        if problems := chain_problems(chain, rows, head, self._required_key(create=False)):
            raise LedgerTampered(
                f"the {chain.name} chain of the consent ledger at {self.display_url} does not verify "
                f"({'; '.join(problems)})"
            )
        return rows, head or Head(0, GENESIS)

    def _chain_rows(self, chain: Chain) -> tuple[list[Mapping[str, Any]], Head | None]:
        """A whole chain in ``seq`` order and its head (None: deleted), as stored; empty when absent."""
        with self._read(chain.records) as conn:
            if conn is None:
                return [], Head(0, GENESIS)
            rows = [row._mapping for row in conn.execute(select(chain.records).order_by(chain.records.c.seq))]
            found = conn.execute(
                select(chain.head.c.last_seq, chain.head.c.last_hash).where(chain.head.c.id == HEAD_ID)
            ).first()
        return rows, Head(found.last_seq, found.last_hash) if found else None

    # --- reading ---------------------------------------------------------------------------------

    def records(
        self, *, dag_id: str | None = None, run_id: str | None = None, limit: int | None = None
    ) -> list[LedgerRecord]:
        """Records in chain order, filtered by DAG and run; with ``limit``, only the latest ``limit``."""
        query = self._select(dag_id=dag_id, run_id=run_id)
        if limit is not None:
            query = query.order_by(ledger_table.c.seq.desc()).limit(limit)
        else:
            query = query.order_by(ledger_table.c.seq)
        with self._read() as conn:
            if conn is None:
                return []
            found = [LedgerRecord.from_row(row._mapping) for row in conn.execute(query)]
        return sorted(found, key=lambda r: r.seq) if limit is not None else found

    def iter_records(self, *, dag_id: str | None = None, run_id: str | None = None) -> Iterator[LedgerRecord]:
        """Every record in chain order, streamed (for exports of any size)."""
        query = self._select(dag_id=dag_id, run_id=run_id).order_by(ledger_table.c.seq)
        with self._read() as conn:
            if conn is None:
                return
            for row in conn.execution_options(yield_per=2000).execute(query):
                yield LedgerRecord.from_row(row._mapping)

    def allowed_fingerprints(
        self, dag_id: str | None = None, run_id: str | None = None, *, decision_id: str | None = None
    ) -> dict[str, str]:
        """Partition id → fingerprint of its latest decision in this run (or in decision ``decision_id``),
        where that decision let it through: allowed by the policies, or denied only by violations in
        warn/dryrun mode (see ``latest_decisions``)."""
        decided = self.latest_decisions(dag_id, run_id, decision_id=decision_id)
        return {pid: decision.fingerprint for pid, decision in decided.items() if decision.passed}

    def latest_decisions(
        self,
        dag_id: str | None = None,
        run_id: str | None = None,
        *,
        task_id: str | None = None,
        decision_id: str | None = None,
    ) -> dict[str, LatestDecision]:
        """Partition id → its latest decision in this run (made by gate task ``task_id``, when given), or
        in decision ``decision_id``: the fingerprint it was made on, and whether it let the partition
        through (allowed by the policies, or denied only by violations in warn/dryrun mode).

        A partition absent from the answer was never decided there. Raises ``LedgerTampered`` when
        those records fail their hashes, their links to their neighbours or their signatures: a
        clearance must never rest on an edited record, nor on one no gate of this deployment signed.
        """
        what = (
            f"decision {decision_id!r}"
            if decision_id
            else f"DAG {dag_id!r} run {run_id!r}" + (f" task {task_id!r}" if task_id else "")
        )
        with self._read() as conn:
            if conn is None:
                return {}
            query = self._select(dag_id=dag_id, run_id=run_id, task_id=task_id, decision_id=decision_id)
            rows = [row._mapping for row in conn.execute(query.order_by(ledger_table.c.seq))]
            self._check_neighbourhood(conn, rows, what)
        self._check_signatures(rows, what)
        latest: dict[str, LedgerRecord] = {}
        for row in rows:
            latest[row["partition_id"]] = LedgerRecord.from_row(row)
        return {
            pid: LatestDecision(
                record.fingerprint,
                _passed(record),
                record.purpose,
                record.engine,
                record.entrypoint,
                record.decision_id,
            )
            for pid, record in latest.items()
        }

    def head(self) -> Head:
        """The last record's sequence number and hash (``0:GENESIS`` when empty): publish it as an anchor."""
        with self._read() as conn:
            head = self._head(conn) if conn is not None else None
        return head or Head(0, GENESIS)

    def verify(self, *, anchor: Head | None = None) -> VerifyResult:
        """Recompute the whole chain, and check every signature when this machine has the deployment's
        key; ``anchor`` (an earlier head, kept elsewhere) also catches rewrites. The usage, audit and
        purge chains are checked too: their problems are added, each naming its chain."""
        result = self._verify_decisions(anchor)
        key = self._deployment_key(create=False)
        chains = (USAGE, AUDIT, PURGE)
        problems = [problem for chain in chains for problem in chain_problems(chain, *self._chain_rows(chain), key)]
        return dataclasses.replace(result, ok=False, problems=[*result.problems, *problems]) if problems else result

    def _verify_decisions(self, anchor: Head | None) -> VerifyResult:
        """The decision chain, verified record by record (``verify_chain``)."""
        key = self._deployment_key(create=False)
        with self._read() as conn:
            if conn is None:
                raise LedgerError(
                    f"there is no consent ledger at {self.display_url}: nothing was verified (a mistyped URL or "
                    "[consent] ledger_url, or a deleted database?)"
                )
            head = self._head(conn)

            def find_seq(digest: str) -> int | None:
                return conn.execute(select(ledger_table.c.seq).where(ledger_table.c.record_hash == digest)).scalar()

            query = select(*_STORED_COLUMNS).order_by(ledger_table.c.seq)
            rows = conn.execution_options(yield_per=2000).execute(query)
            return verify_chain((row._mapping for row in rows), head=head, find_seq=find_seq, anchor=anchor, key=key)

    def _deployment_key(self, *, create: bool) -> LedgerKey | None:
        if self._key is None:
            from airflow_consent.config import settings

            self._key = deployment_key(settings().ledger_secret, create=create)
        return self._key

    def _required_key(self, *, create: bool) -> LedgerKey:
        if (key := self._deployment_key(create=create)) is None:
            raise ConsentConfigurationError(
                f"this machine has no consent ledger key, so it cannot check who wrote the records in "
                f"{self.display_url}: set [consent] ledger_secret to the deployment's secret (the same on every "
                "machine)"
            )
        return key

    def _check_signatures(self, rows: list[Mapping[str, Any]], what: str) -> None:
        """Each row is signed with the deployment's key (``LedgerTampered`` naming those that are not)."""
        if not rows:
            return
        key = self._required_key(create=False)
        problems = [
            f"seq {row['seq']} is {problem}" if problem.startswith("unsigned") else f"seq {row['seq']}: {problem}"
            for row in rows
            if (problem := key.problem(row["record_hash"], row["signature"]))
        ]
        if problems:
            raise LedgerTampered(
                f"the consent ledger records of {what} were not all appended by a consent gate of this deployment "
                f"({'; '.join(problems[:5])}{'; ...' if len(problems) > 5 else ''}): run `airflow-consent ledger "
                "verify`"
            )

    def _check_neighbourhood(self, conn: Connection, rows: list[Mapping[str, Any]], what: str) -> None:
        """Each row matches its hash, follows its predecessor, and is followed by its successor (or the head)."""
        if not rows:
            return
        by_seq: dict[int, Mapping[str, Any]] = {row["seq"]: row for row in rows}
        wanted = sorted({s + d for s in by_seq for d in (-1, 1) if s + d > 0} - set(by_seq))
        columns = (ledger_table.c.seq, ledger_table.c.prev_hash, ledger_table.c.record_hash)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for row in conn.execute(select(*columns).where(ledger_table.c.seq.in_(chunk))):
                by_seq[row.seq] = row._mapping
        head = self._head(conn)
        problems = []
        for row in rows:
            seq = row["seq"]
            before, after = by_seq.get(seq - 1), by_seq.get(seq + 1)
            if record_hash(row) != row["record_hash"]:
                problems.append(f"seq {seq} was edited")
            if row["prev_hash"] != (GENESIS if seq == 1 else before["record_hash"] if before else None):
                problems.append(f"seq {seq} does not follow seq {seq - 1}")
            if after is not None and after["prev_hash"] != row["record_hash"]:
                problems.append(f"seq {seq + 1} does not follow seq {seq}")
            if after is None and head != Head(seq, row["record_hash"]):
                problems.append(f"seq {seq} is neither followed by seq {seq + 1} nor the ledger head")
        if problems:
            raise LedgerTampered(
                f"the consent ledger records of {what} do not verify ({'; '.join(problems[:5])}): "
                "run `airflow-consent ledger verify`"
            )

    @staticmethod
    def _select(*, dag_id: str | None, run_id: str | None, decision_id: str | None = None, task_id: str | None = None):
        query = select(*_STORED_COLUMNS)
        if task_id is not None:
            query = query.where(ledger_table.c.task_id == task_id)
        if decision_id is not None:
            query = query.where(ledger_table.c.decision_id == decision_id)
        if dag_id is not None:
            query = query.where(ledger_table.c.dag_id == dag_id)
        if run_id is not None:
            query = query.where(ledger_table.c.run_id == run_id)
        return query

    @staticmethod
    def _head(conn: Connection) -> Head | None:
        query = select(head_table.c.last_seq, head_table.c.last_hash).where(head_table.c.id == HEAD_ID)
        row = conn.execute(query).first()
        return Head(row.last_seq, row.last_hash) if row else None

    # --- connections -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _create_engine(self.url, self.dialect)
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction holding the ledger's write lock."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                yield conn

    @contextmanager
    def _read(self, table: Table = ledger_table) -> Iterator[Connection | None]:
        """One consistent snapshot (PostgreSQL: REPEATABLE READ); None when the ledger has no ``table`` yet
        (the decisions, or a chain's records)."""
        if self._sqlite_file() is not None and not self._sqlite_file().exists():
            yield None  # reading must not create an empty database (a mistyped path would "verify")
            return
        try:
            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    has_table = inspect(conn).has_table(table.name)
                    if has_table and table is ledger_table:
                        _check_columns(conn, self.display_url)
                    yield conn if has_table else None
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerError(f"could not read the consent ledger at {self.display_url}: {exc}") from exc

    def _sqlite_file(self) -> Path | None:
        database = make_url(self.url).database if self.dialect == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database).expanduser()


def _create_engine(url: str, dialect: str) -> Engine:
    """An engine; for SQLite with WAL, a busy timeout, and our own BEGIN (IMMEDIATE for appends)."""
    if dialect == "postgresql":
        return create_engine(url)
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {} if "timeout" in parsed.query else {"timeout": SQLITE_BUSY_TIMEOUT_S}
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not sqlite3, emits BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def _check_columns(conn: Connection, where: str) -> None:
    """A ledger created before records were signed has no ``signature`` column: say so, not an SQL error."""
    if "signature" not in {column["name"] for column in inspect(conn).get_columns(ledger_table.name)}:
        raise LedgerError(
            f"the consent ledger at {where} was created before ledger records were signed: it cannot clear any "
            "task; keep it for the audit trail (`airflow-consent ledger export`) and point [consent] ledger_url "
            "at a new database"
        )


def _passed(record: LedgerRecord) -> bool:
    """Allowed, or denied only by violations in warn/dryrun mode."""
    return record.allow or (
        bool(record.violations) and all(v.get("enforcement", "deny") != "deny" for v in record.violations)
    )
