"""The ledger's two tables, and triggers that make the database itself refuse edits.

``consent_ledger`` holds the records; ``consent_ledger_head`` holds one row, the last record's
sequence number and hash, updated in the same transaction as each append, so a truncated tail is
detected. The triggers (SQLite and PostgreSQL) refuse UPDATE, DELETE and TRUNCATE of records and
any move of the head backwards: defence in depth against mistakes; someone who can drop triggers
can still tamper, and that is what the hash chain and ``ledger verify`` are for.
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

head_table = Table(
    HEAD_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(80), nullable=False),
    Column("updated_at", String(40), nullable=False),
)

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {LEDGER_TABLE}_no_update BEFORE UPDATE ON {LEDGER_TABLE}
        BEGIN SELECT RAISE(ABORT, '{LEDGER_TABLE} is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {LEDGER_TABLE}_no_delete BEFORE DELETE ON {LEDGER_TABLE}
        BEGIN SELECT RAISE(ABORT, '{LEDGER_TABLE} is append-only: DELETE refused'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {HEAD_TABLE}_forward BEFORE UPDATE ON {HEAD_TABLE}
        WHEN NEW.last_seq <= OLD.last_seq OR NEW.id <> OLD.id
        BEGIN SELECT RAISE(ABORT, 'the consent ledger head only moves forward'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {HEAD_TABLE}_no_delete BEFORE DELETE ON {HEAD_TABLE}
        BEGIN SELECT RAISE(ABORT, 'the consent ledger head cannot be deleted'); END""",
]

_POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION {LEDGER_TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{LEDGER_TABLE} is append-only: % refused on %', TG_OP, TG_TABLE_NAME; END $$""",
    f"""CREATE OR REPLACE FUNCTION {HEAD_TABLE}_forward() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.last_seq <= OLD.last_seq OR NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'the consent ledger head only moves forward';
          END IF;
          RETURN NEW;
        END $$""",
    f"""CREATE TRIGGER {LEDGER_TABLE}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {LEDGER_TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION {LEDGER_TABLE}_append_only()""",
    f"""CREATE TRIGGER {HEAD_TABLE}_no_delete BEFORE DELETE OR TRUNCATE ON {HEAD_TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION {LEDGER_TABLE}_append_only()""",
    f"""CREATE TRIGGER {HEAD_TABLE}_forward BEFORE UPDATE ON {HEAD_TABLE}
        FOR EACH ROW EXECUTE FUNCTION {HEAD_TABLE}_forward()""",
]


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that install the append-only triggers on ``dialect``."""
    return {"sqlite": _SQLITE_TRIGGERS, "postgresql": _POSTGRES_TRIGGERS}[dialect]
