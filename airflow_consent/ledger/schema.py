"""The ledger's tables, and triggers that make the database itself refuse edits.

``consent_ledger`` holds the decision records; ``consent_ledger_head`` holds one row, the last
record's sequence number and hash, updated in the same transaction as each append, so a truncated
tail is detected. Two more chains are built the same way, each a records table with a head table of
its own: ``consent_usage`` (which training task was cleared on which decisions, and the models it
produces), ``consent_audit`` (each re-audit of those uses) and ``consent_purge`` (each deletion
certificate: the rows of revoked subjects removed from partitions); they are created on their first
append, so a ledger created before them is read as having none. The triggers (SQLite and
PostgreSQL) refuse UPDATE, DELETE and TRUNCATE of records and any move of the head backwards:
defence in depth against mistakes; someone who can drop triggers can still tamper, and that is what
the hash chains and ``ledger verify`` are for.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

LEDGER_TABLE = "consent_ledger"
HEAD_TABLE = "consent_ledger_head"
HEAD_ID = 1

metadata = MetaData()

ledger_table = Table(
    LEDGER_TABLE,
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("decision_id", Text, nullable=False),
    Column("recorded_at", String(40), nullable=False),
    Column("evaluated_at", String(40), nullable=False),
    Column("dag_id", Text),
    Column("run_id", Text),
    Column("task_id", Text),
    Column("purpose", Text, nullable=False),
    Column("model", Text),
    Column("requested_by", Text),
    Column("partition_id", Text, nullable=False),
    Column("partition_uri", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("engine", Text, nullable=False),
    Column("entrypoint", Text, nullable=False),
    Column("opa_version", Text),
    Column("policy_revision", Text),
    Column("input_digest", String(80), nullable=False),
    Column("mode", String(32), nullable=False),
    Column("allow", Boolean(create_constraint=False), nullable=False),
    Column("violations", Text, nullable=False),
    Column("prev_hash", String(80), nullable=False),
    Column("record_hash", String(80), nullable=False),
    Column("signature", String(120)),  # not hashed: see ledger/keys.py
    UniqueConstraint("decision_id", "partition_id", name="uq_consent_ledger_decision_partition"),
    Index("ix_consent_ledger_record_hash", "record_hash", unique=True),
    Index("ix_consent_ledger_run", "dag_id", "run_id"),
)


def _head_table(name: str, tables: MetaData) -> Table:
    """A chain's head: one row, the last record's sequence number and hash."""
    return Table(
        name,
        tables,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("last_seq", BigInteger, nullable=False),
        Column("last_hash", String(80), nullable=False),
        Column("updated_at", String(40), nullable=False),
    )


head_table = _head_table(HEAD_TABLE, metadata)

USAGE_TABLE = "consent_usage"
USAGE_HEAD_TABLE = "consent_usage_head"
AUDIT_TABLE = "consent_audit"
AUDIT_HEAD_TABLE = "consent_audit_head"
PURGE_TABLE = "consent_purge"
PURGE_HEAD_TABLE = "consent_purge_head"

chain_metadata = MetaData()  # apart from ``metadata``: creating the decision tables never creates these

usage_table = Table(
    USAGE_TABLE,
    chain_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", String(40), nullable=False),
    Column("dag_id", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("task_id", Text, nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("try_number", Integer),
    Column("partitions", Text, nullable=False),  # canonical JSON: id, uri, fingerprint, gate, decision ids, …
    Column("gates", Text, nullable=False),  # canonical JSON: gate task id -> its arguments
    Column("outlets", Text, nullable=False),  # canonical JSON: the task's outlet URIs (the models it produces)
    Column("prev_hash", String(80), nullable=False),
    Column("record_hash", String(80), nullable=False),
    Column("signature", String(120), nullable=False),
    Index("ix_consent_usage_record_hash", "record_hash", unique=True),
    Index("ix_consent_usage_run", "dag_id", "run_id"),
)
usage_head_table = _head_table(USAGE_HEAD_TABLE, chain_metadata)

audit_table = Table(
    AUDIT_TABLE,
    chain_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", String(40), nullable=False),
    Column("audit_id", Text, nullable=False),
    Column("requested_by", Text),
    Column("purpose", Text),  # the audit's filters, None: all
    Column("since", String(40)),
    Column("usage_head", Text, nullable=False),  # SEQ:sha256:… of the last usage record audited
    Column("outcome", String(16), nullable=False),
    Column("affected", Integer, nullable=False),
    Column("result", Text, nullable=False),  # canonical JSON of the audit report
    Column("prev_hash", String(80), nullable=False),
    Column("record_hash", String(80), nullable=False),
    Column("signature", String(120), nullable=False),
    Index("ix_consent_audit_record_hash", "record_hash", unique=True),
    Index("ix_consent_audit_id", "audit_id", unique=True),
)
audit_head_table = _head_table(AUDIT_HEAD_TABLE, chain_metadata)

purge_table = Table(
    PURGE_TABLE,
    chain_metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", String(40), nullable=False),
    Column("purge_id", Text, nullable=False),
    Column("requested_by", Text),
    Column("dataset", Text, nullable=False),
    Column("root", Text, nullable=False),
    Column("revocation_list", Text, nullable=False),  # where the revoked subject ids were read (no credentials)
    Column("rows_removed", Integer, nullable=False),
    Column("partitions", Text, nullable=False),  # canonical JSON: id, rows, sha256 of subject ids, fingerprints
    Column("retrain", Text, nullable=False),  # canonical JSON: the uses of the bytes before (run, task, outlets)
    Column("prev_hash", String(80), nullable=False),
    Column("record_hash", String(80), nullable=False),
    Column("signature", String(120), nullable=False),
    Index("ix_consent_purge_record_hash", "record_hash", unique=True),
    Index("ix_consent_purge_id", "purge_id", unique=True),
)
purge_head_table = _head_table(PURGE_HEAD_TABLE, chain_metadata)


def _sqlite_triggers(records: str, head: str) -> list[str]:
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {records}_no_update BEFORE UPDATE ON {records}
        BEGIN SELECT RAISE(ABORT, '{records} is append-only: UPDATE refused'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {records}_no_delete BEFORE DELETE ON {records}
        BEGIN SELECT RAISE(ABORT, '{records} is append-only: DELETE refused'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {head}_forward BEFORE UPDATE ON {head}
        WHEN NEW.last_seq <= OLD.last_seq OR NEW.id <> OLD.id
        BEGIN SELECT RAISE(ABORT, 'the {_chain_name(records)} head only moves forward'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {head}_no_delete BEFORE DELETE ON {head}
        BEGIN SELECT RAISE(ABORT, 'the {_chain_name(records)} head cannot be deleted'); END""",
    ]


def _postgres_triggers(records: str, head: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE FUNCTION {records}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{records} is append-only: % refused on %', TG_OP, TG_TABLE_NAME; END $$""",
        f"""CREATE OR REPLACE FUNCTION {head}_forward() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.last_seq <= OLD.last_seq OR NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'the {_chain_name(records)} head only moves forward';
          END IF;
          RETURN NEW;
        END $$""",
        f"""CREATE TRIGGER {records}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {records}
        FOR EACH STATEMENT EXECUTE FUNCTION {records}_append_only()""",
        f"""CREATE TRIGGER {head}_no_delete BEFORE DELETE OR TRUNCATE ON {head}
        FOR EACH STATEMENT EXECUTE FUNCTION {records}_append_only()""",
        f"""CREATE TRIGGER {head}_forward BEFORE UPDATE ON {head}
        FOR EACH ROW EXECUTE FUNCTION {head}_forward()""",
    ]


def _chain_name(records: str) -> str:
    """How trigger messages name a chain: 'consent ledger' for the decisions, else the table's name."""
    return "consent ledger" if records == LEDGER_TABLE else records


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that install the append-only triggers on ``dialect``."""
    return chain_trigger_ddl(dialect, LEDGER_TABLE, HEAD_TABLE)


def chain_trigger_ddl(dialect: str, records: str, head: str) -> list[str]:
    """The append-only triggers of one chain (its records table and its head table) on ``dialect``."""
    return {"sqlite": _sqlite_triggers, "postgresql": _postgres_triggers}[dialect](records, head)
