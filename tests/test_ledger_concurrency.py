"""Concurrent gates: 8 processes append 500 records each, all at once, on SQLite and on a real
PostgreSQL. Nothing is lost, nothing is duplicated, and the chain still verifies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airflow_consent.ledger import Ledger

pytestmark = pytest.mark.slow

PROCESSES = 8
RECORDS_EACH = 500

# One process: wait for the start signal, then append one single-partition report per record, each
# in its own transaction, as many concurrent gates would.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from datetime import datetime, timezone
    from airflow_consent.ledger import Ledger, input_digest
    from airflow_consent.models import DecidedPartition, GateReport, GateRequest

    url, worker, count, start_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    now = datetime.now(timezone.utc)
    request = GateRequest(purpose="face_recognition_training", dag_id="concurrency", run_id=f"run-{worker}",
                          task_id="gate", evaluated_at=now)
    digest = input_digest({"worker": worker})
    with Ledger(url) as ledger:
        open(f"{start_file}.ready-{worker}", "w").close()
        while not os.path.exists(start_file):
            time.sleep(0.005)
        started = time.perf_counter()
        for n in range(count):
            partition = DecidedPartition(id=f"ds/worker={worker}/n={n}", uri=f"/data/{worker}/{n}",
                                         fingerprint=f"sha256:{n:064x}", allow=n % 3 != 0, violations=[])
            report = GateReport(decision_id=f"{worker}-{n}", allow=partition.allow, purpose=request.purpose,
                                entrypoint="consent/main/decision", engine="test", opa_version="1.22.3",
                                policy_revision=None, evaluated_at=now, duration_ms=0.0, partitions=[partition])
            ledger.record(report, request, mode="deny", input_digest=digest)
        print(f"{time.perf_counter() - started:.3f}")
    """
)


def run_concurrently(url: str, tmp_path: Path) -> float:
    """Start the workers, release them together, wait; return the wall time of the appends."""
    start_file = tmp_path / "start"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(w), str(RECORDS_EACH), str(start_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("start.ready-*"))) < PROCESSES:  # all imported and waiting
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker did not start"
        time.sleep(0.05)
    started = time.perf_counter()
    start_file.touch()
    failures = []
    for worker in workers:
        _out, err = worker.communicate(timeout=300)
        if worker.returncode != 0:
            failures.append(err[-3000:])
    elapsed = time.perf_counter() - started
    assert not failures, "\n---\n".join(failures)
    return elapsed


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_appends_lose_nothing_and_the_chain_verifies(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")

    elapsed = run_concurrently(url, tmp_path)

    total = PROCESSES * RECORDS_EACH
    with Ledger(url) as ledger:
        result = ledger.verify()
        assert result.ok, result.problems
        assert result.checked == total and result.head_seq == total
        records = ledger.records()
        assert [r.seq for r in records] == list(range(1, total + 1))
        assert {r.decision_id for r in records} == {f"{w}-{n}" for w in range(PROCESSES) for n in range(RECORDS_EACH)}
        for worker in range(PROCESSES):  # each worker's records kept its own order
            mine = [int(r.decision_id.split("-")[1]) for r in records if r.run_id == f"run-{worker}"]
            assert mine == list(range(RECORDS_EACH))
        allowed = ledger.allowed_fingerprints("concurrency", "run-0")
        assert len(allowed) == RECORDS_EACH - len(range(0, RECORDS_EACH, 3))
    print(f"\n{backend}: {total} appends by {PROCESSES} processes in {elapsed:.1f} s = {total / elapsed:.0f} records/s")
