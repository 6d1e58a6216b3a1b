"""The ledger's chains after the gate: usage records and audit records; no database code.

A **usage record** is appended when the run-time clearance lets a training task start: the task
(DAG, run, task id, map index, try), each partition it was cleared on (id, URI, fingerprint, the
gate that checked it and the decision ids that allowed it), the arguments of those gates (so an
audit can ask the same question again) and the task's outlets (the models it produces). An **audit
record** holds one re-audit of those uses (``airflow_consent.audit``); a **purge record** is a
deletion certificate (``airflow_consent.purge``): which partitions lost the rows of which revoked
subjects (as ``sha256`` of their ids, never the ids), their fingerprints before and after, and the
uses of the bytes before (the models to retrain).

Each is a chain of its own, hashed like the decision records (``records.py``): ``record_hash`` is
``sha256`` over the canonical JSON of the stored content, its ``prev_hash``, the chain's name (so a
row of one chain is never a valid row of another) and a hash version; the deployment key signs
``record_hash`` (``keys.py``). A reader verifies the whole chain it reads (``chain_problems``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_consent.errors import LedgerTampered
from airflow_consent.ledger.records import GENESIS, canonical_json, describe_invalid, sha256_digest, timestamp
from airflow_consent.ledger.schema import (
    audit_head_table,
    audit_table,
    purge_head_table,
    purge_table,
    usage_head_table,
    usage_table,
)

if TYPE_CHECKING:
    from sqlalchemy import Table

    from airflow_consent.ledger.keys import LedgerKey
    from airflow_consent.ledger.verify import Head

HASH_VERSION = 1
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Chain:
    """One chain: its records table, its head table, and the stored columns its hash covers."""

    records: Table
    head: Table
    json_fields: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.records.name

    @property
    def hashed(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.records.c if c.name not in ("seq", "record_hash", "signature"))

    def record_hash(self, row: Mapping[str, Any]) -> str:
        """The hash a stored row of this chain must carry."""
        payload = {name: row[name] for name in self.hashed}
        payload.update(chain=self.name, hash_version=HASH_VERSION)
        return sha256_digest(canonical_json(payload))


USAGE = Chain(usage_table, usage_head_table, json_fields=("partitions", "gates", "outlets"))
AUDIT = Chain(audit_table, audit_head_table, json_fields=("result",))
PURGE = Chain(purge_table, purge_head_table, json_fields=("partitions", "retrain"))


class _ChainRecord(BaseModel):
    """A stored row of a chain, read strictly: a row a writer of this package cannot have written is refused."""

    model_config = ConfigDict(frozen=True, strict=True)
    chain: ClassVar[Chain]

    seq: int
    recorded_at: datetime = Field(strict=False)
    prev_hash: str
    record_hash: str
    signature: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]):
        values = dict(row)
        try:
            for name in cls.chain.json_fields:
                values[name] = json.loads(values[name])
            return cls.model_validate(values)
        except ValidationError as exc:
            problem = describe_invalid(exc)
        except (TypeError, ValueError) as exc:
            problem = f"a JSON column does not hold JSON ({exc})"
        raise LedgerTampered(f"{cls.chain.name} seq {values.get('seq')!r}: not a record this package writes: {problem}")


class UsedPartition(BaseModel):
    """A partition a training task was cleared on, as it was on disk then."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: str
    uri: str
    fingerprint: str
    dataset: str
    root: str
    keys: dict[str, str]
    gate: str = Field(description="the gate task that checked it, or the approved asset whose event cleared it")
    decision_ids: list[str] = Field(min_length=1)


class UsageRecord(_ChainRecord):
    """A training task was cleared to start on ``partitions`` and produces ``outlets``."""

    chain: ClassVar[Chain] = USAGE

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int | None
    partitions: list[UsedPartition]
    gates: dict[str, dict[str, str | None] | None] = Field(
        description="gate task id -> its gate arguments (None: cleared by an approved-asset event, arguments unknown)"
    )
    outlets: list[str]


class AuditRecord(_ChainRecord):
    """One re-audit of the usage records against today's revocation lists and policies."""

    chain: ClassVar[Chain] = AUDIT

    audit_id: str
    requested_by: str | None
    purpose: str | None
    since: datetime | None = Field(strict=False)
    usage_head: str
    outcome: Literal["clean", "affected", "unverifiable"]
    affected: int
    result: dict[str, Any]


class PurgedPartition(BaseModel):
    """One partition a purge rewrote: what was removed, and its fingerprint before and after."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: str
    uri: str
    files: list[str] = Field(description="the data files rewritten")
    rows_before: int
    rows_removed: int
    subjects: list[str] = Field(description="sha256:<hex> of each removed subject's id, as text; never the ids")
    fingerprint_before: str
    fingerprint_after: str


class RetrainUse(BaseModel):
    """A training task that was cleared on a purged partition's bytes before the purge."""

    model_config = ConfigDict(frozen=True, strict=True)

    partition_id: str
    fingerprint: str
    usage_seq: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    outlets: list[str]


class PurgeRecord(_ChainRecord):
    """A deletion certificate: the rows of revoked subjects removed from ``partitions``."""

    chain: ClassVar[Chain] = PURGE

    purge_id: str
    requested_by: str | None
    dataset: str
    root: str
    revocation_list: str
    rows_removed: int
    partitions: list[PurgedPartition] = Field(min_length=1)
    retrain: list[RetrainUse]


def chained_rows(
    chain: Chain, contents: Iterable[Mapping[str, Any]], head: Head, key: LedgerKey, recorded_at: datetime
) -> list[dict[str, Any]]:
    """The stored rows of ``contents`` appended after ``head``: JSON columns as canonical JSON, numbered,
    linked, hashed and signed."""
    rows: list[dict[str, Any]] = []
    for seq, content in enumerate(contents, start=head.seq + 1):
        row = {
            **content,
            "seq": seq,
            "recorded_at": timestamp(recorded_at),
            "prev_hash": rows[-1]["record_hash"] if rows else head.hash,
        }
        for name in chain.json_fields:
            row[name] = canonical_json(row[name])
        row["record_hash"] = chain.record_hash(row)
        row["signature"] = key.sign(row["record_hash"])
        rows.append(row)
    return rows


def chain_problems(
    chain: Chain, rows: Iterable[Mapping[str, Any]], head: Head | None, key: LedgerKey | None
) -> list[str]:
    """What is wrong with a whole chain read in ``seq`` order: numbering, hashes, links, signatures
    (when ``key`` is given: an auditor without the secret checks the rest), and the head (empty: nothing)."""
    problems: list[str] = []
    last_seq, last_hash = 0, GENESIS
    for row in rows:
        seq = row["seq"]
        where = f"{chain.name} seq {seq}"
        if seq != last_seq + 1:
            problems.append(f"{where}: follows seq {last_seq} (records deleted or inserted)")
        if chain.record_hash(row) != row["record_hash"]:
            problems.append(f"{where}: edited (its content no longer matches its record_hash)")
        if row["prev_hash"] != last_hash:
            problems.append(f"{where}: does not follow seq {last_seq} (chain broken)")
        if key is not None and (unsigned := key.problem(row["record_hash"], row["signature"])):
            problems.append(f"{where}: {unsigned}")
        last_seq, last_hash = seq, row["record_hash"]
    if head is None:
        if last_seq:
            problems.append(f"the {chain.name} head is missing (deleted); the records end at seq {last_seq}")
    elif (head.seq, head.hash) != (last_seq, last_hash):
        problems.append(
            f"the {chain.name} records end at seq {last_seq} but its head is {head} (records deleted, "
            "inserted or edited and re-hashed)"
        )
    return problems[:MAX_PROBLEMS] + (
        [f"... and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else []
    )
