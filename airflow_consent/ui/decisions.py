"""The ledger's decisions for one DAG run, with the ledger's verification status, as plain data.

No FastAPI here: the HTML page and the JSON route both render what ``run_decisions`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_consent.errors import LedgerError
from airflow_consent.ledger import Ledger, LedgerRecord


def _rules(record: LedgerRecord) -> list[dict[str, Any]]:
    return [
        {
            "rule_id": str(v.get("rule_id", "?")),
            "severity": v.get("severity"),
            "message": v.get("message"),
            "remediation": v.get("remediation"),
        }
        for v in record.violations
    ]


def _decision(record: LedgerRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "dag_id": record.dag_id,
        "run_id": record.run_id,
        "partition_id": record.partition_id,
        "partition_uri": record.partition_uri,
        "verdict": "allow" if record.allow else "deny",
        "rules": _rules(record),
        "mode": record.mode,
        "decision_id": record.decision_id,
        "task_id": record.task_id,
        "evaluated_at": record.evaluated_at.isoformat(),
        "policy_revision": record.policy_revision,
        "opa_version": record.opa_version,
        "fingerprint": record.fingerprint,
    }


def run_decisions(dag_id: str, run_id: str, *, ledger_url: str | None = None) -> dict[str, Any]:
    """Every ledger record of this run (one per partition and evaluation, in chain order) and the
    verification of the whole ledger: ``OK``, ``TAMPERED`` with its problems, or ``UNAVAILABLE``
    when the ledger cannot be read. A record that is not one a gate writes makes the run ``TAMPERED``."""
    found = _read(ledger_url, lambda ledger: ledger.records(dag_id=dag_id, run_id=run_id))
    return {"dag_id": dag_id, "run_id": run_id, **found}


def recent_decisions(readable_dag_ids: set[str], *, limit: int, ledger_url: str | None = None) -> dict[str, Any]:
    """The latest ``limit`` ledger records of the whole deployment, of those only the DAGs in
    ``readable_dag_ids`` (records made outside a DAG, e.g. from the CLI, are left out), and the
    verification of the whole ledger, as ``run_decisions``."""

    def readable(ledger: Ledger) -> list[LedgerRecord]:
        return [r for r in ledger.records(limit=limit) if r.dag_id in readable_dag_ids]

    return {"limit": limit, **_read(ledger_url, readable)}


def _read(ledger_url: str | None, select: Callable[[Ledger], list[LedgerRecord]]) -> dict[str, Any]:
    ledger = Ledger(ledger_url)
    try:
        records: list[LedgerRecord] = []
        read_problems: list[str] = []
        try:
            records = select(ledger)
        except LedgerError as exc:  # LedgerTampered included: a row that does not validate
            read_problems.append(str(exc))
        try:
            result = ledger.verify()
        except LedgerError as exc:
            verification = {"status": "UNAVAILABLE", "checked": 0, "problems": [*read_problems, str(exc)]}
        else:
            problems = [*read_problems, *result.problems]
            verification = {
                "status": "OK" if result.ok and not problems else "TAMPERED",
                "checked": result.checked,
                "problems": problems,
                "head": f"{result.head_seq}:{result.head_hash}",
                "signatures": result.signatures,
            }
    finally:
        ledger.close()
    return {
        "verification": verification,
        "decisions": [_decision(r) for r in records],
    }
