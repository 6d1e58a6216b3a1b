"""The decision ledger: an append-only, hash-chained record of every gate decision, per partition.

``Ledger`` stores it in SQLite (default) or PostgreSQL; ``input_digest`` fingerprints the policy
input a decision was made on. The database code is imported on first use of ``Ledger``, so the
gate can compute a digest without loading SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_consent.ledger.records import GENESIS, LedgerRecord, input_digest
from airflow_consent.ledger.verify import Head, VerifyResult

if TYPE_CHECKING:
    from airflow_consent.ledger.store import Ledger

__all__ = ["GENESIS", "Head", "Ledger", "LedgerRecord", "VerifyResult", "input_digest"]


def __getattr__(name: str):
    if name == "Ledger":
        from airflow_consent.ledger.store import Ledger

        return Ledger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
