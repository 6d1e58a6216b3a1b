"""What one ledger record holds and how it is hashed; no database code.

A record's ``record_hash`` is ``sha256`` over the canonical JSON of its stored content and its
``prev_hash``, the ``record_hash`` of the record appended just before it (``GENESIS`` for the
first). Its sequence number is not hashed: the chain of ``prev_hash`` links fixes each record's
position, and the verifier checks that the numbering agrees with it. Its ``signature`` (the
deployment key's HMAC of ``record_hash``, ``airflow_consent.ledger.keys``) is not hashed either: an
auditor without the secret can still check the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_consent.errors import LedgerTampered

GENESIS = "sha256:" + "0" * 64
HASH_VERSION = 1

# Stored columns covered by record_hash, in no particular order (canonical JSON sorts the keys).
HASHED_FIELDS = (
    "decision_id",
    "recorded_at",
    "evaluated_at",
    "dag_id",
    "run_id",
    "task_id",
    "purpose",
    "model",
    "requested_by",
    "partition_id",
    "partition_uri",
    "fingerprint",
    "engine",
    "entrypoint",
    "opa_version",
    "policy_revision",
    "input_digest",
    "mode",
    "allow",
    "violations",
    "prev_hash",
)


def describe_invalid(exc: ValidationError) -> str:
    """Each field a stored row got wrong, with the value it holds: why it is not a record we write."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc']))} is {error['input']!r:.100} ({error['msg']})" for error in exc.errors()
    )


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the same document always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def input_digest(policy_input: dict) -> str:
    """``sha256:<hex>`` of the canonical JSON of a policy input document (as sent to OPA)."""
    return sha256_digest(canonical_json(policy_input))


class InputDigest:
    """``input_digest`` of a policy input ``{"request": …, "partitions": […]}`` sent in chunks: the
    partitions are added as they go out, and the digest equals that of the whole document."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b'{"partitions":[')  # canonical JSON sorts "partitions" before "request"
        self._empty = True

    def add(self, partitions: list[dict]) -> None:
        for partition in partitions:
            self._hash.update(("" if self._empty else ",").encode() + canonical_json(partition).encode("utf-8"))
            self._empty = False

    def finish(self, request: dict) -> str:
        self._hash.update(f'],"request":{canonical_json(request)}}}'.encode())
        return "sha256:" + self._hash.hexdigest()


def timestamp(moment: datetime) -> str:
    """The stored form of a time: UTC, ISO 8601, microseconds (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(row: Mapping[str, Any]) -> str:
    """The hash a stored row must carry: over its hashed columns, as stored."""
    payload = {name: row[name] for name in HASHED_FIELDS}
    payload["hash_version"] = HASH_VERSION
    return sha256_digest(canonical_json(payload))


class LedgerRecord(BaseModel):
    """One partition's decision in one gate evaluation, as appended to the ledger.

    Nothing is coerced: an ``allow`` stored as ``'true'`` or ``2`` is not a decision the gate wrote.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    seq: int
    decision_id: str
    recorded_at: datetime = Field(strict=False)  # stored, and exported, as ISO text
    evaluated_at: datetime = Field(strict=False)
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    purpose: str
    model: str | None
    requested_by: str | None
    partition_id: str
    partition_uri: str
    fingerprint: str
    engine: str
    entrypoint: str
    opa_version: str | None
    policy_revision: str | None
    input_digest: str
    mode: str
    allow: bool
    violations: list[dict[str, Any]]
    prev_hash: str
    record_hash: str
    signature: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LedgerRecord:
        """Build from a stored row (times as ISO text, violations as JSON text); raises ``LedgerTampered``
        for a row the gate cannot have written."""
        values = dict(row)
        try:
            values["violations"] = json.loads(values["violations"])
            return cls.model_validate(values)
        except ValidationError as exc:
            problem = describe_invalid(exc)
        except (TypeError, ValueError) as exc:
            problem = f"its violations are not JSON ({exc})"
        raise LedgerTampered(f"consent ledger seq {values.get('seq')!r}: not a record a gate writes: {problem}")

    def to_row(self) -> dict[str, Any]:
        """The stored form of this record: what ``record_hash`` covers."""
        row = self.model_dump()
        row["recorded_at"] = timestamp(self.recorded_at)
        row["evaluated_at"] = timestamp(self.evaluated_at)
        row["violations"] = canonical_json(self.violations)
        return row

    @property
    def rule_ids(self) -> list[str]:
        return [str(v.get("rule_id", "?")) for v in self.violations]
