"""The gate records every evaluation in the ledger, and fails closed when it cannot."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import AirflowFailException
from dag_runs import run_dag, xcom

from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import LedgerError
from airflow_consent.gate import DatasetSpec, collect_partitions, evaluate_gate
from airflow_consent.ledger import Ledger, input_digest
from airflow_consent.models import GateRequest
from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.sample_data import generate_profile_photos

DAG_FILE = """
from airflow.sdk import DAG
from airflow_consent.operators.consent import ConsentGateOperator

with DAG(dag_id="ledger_gate", schedule=None, catchup=False) as dag:
    ConsentGateOperator(task_id="consent_gate", datasets=[{data!r}], purpose="face_recognition_training")
"""


def test_the_report_carries_the_digest_of_the_input_sent_to_opa(tmp_path, opa_binary):
    data = generate_profile_photos(tmp_path, sources=("studio_optin",))
    request = GateRequest(purpose="face_recognition_training", evaluated_at=datetime(2026, 11, 26, tzinfo=UTC))

    report = evaluate_gate(request, [DatasetSpec(uri=str(data))], LocalOpaEngine(opa_binary=opa_binary))

    sent = {
        "request": request.model_dump(mode="json"),
        "partitions": [p.model_dump(mode="json") for p in collect_partitions([DatasetSpec(uri=str(data))])],
    }
    assert report.input_digest == input_digest(sent)


def test_a_gate_run_records_each_partition_decision(airflow_db, tmp_path, monkeypatch):
    data = generate_profile_photos(tmp_path / "data")
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "ledger_gate.py").write_text(textwrap.dedent(DAG_FILE.format(data=str(data))))

    states, dag_run = run_dag(tmp_path / "dags", "ledger_gate")

    assert states == {"consent_gate": "failed"}  # okcupid and stock are denied
    report = xcom(dag_run, "consent_gate", key="gate_report")
    with Ledger(url) as ledger:
        records = ledger.records(dag_id="ledger_gate", run_id=dag_run.run_id)
        assert ledger.verify().ok
        assert ledger.allowed_fingerprints("ledger_gate", dag_run.run_id) == {
            p["id"]: p["fingerprint"] for p in report["partitions"] if p["allow"]
        }
    assert [(r.partition_id, r.fingerprint, r.allow) for r in records] == [
        (p["id"], p["fingerprint"], p["allow"]) for p in report["partitions"]
    ]
    assert len(records) == 5 and not all(r.allow for r in records)
    for record in records:
        assert record.decision_id == report["decision_id"]
        assert record.input_digest == report["input_digest"]
        assert (record.task_id, record.purpose, record.mode) == ("consent_gate", "face_recognition_training", "deny")
        assert record.opa_version == report["opa_version"] and record.policy_revision == report["policy_revision"]


def test_a_gate_that_cannot_record_fails_closed_and_is_retried(tmp_path, monkeypatch):
    data = generate_profile_photos(tmp_path, sources=("studio_optin",))
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", "postgresql://nobody@127.0.0.1:1/none")
    gate = ConsentGateOperator(task_id="consent_gate", datasets=[str(data)], purpose="face_recognition_training")
    pushed = []

    class TaskInstance:
        def xcom_push(self, key, value):
            pushed.append(key)

    with pytest.raises(LedgerError, match="could not append") as raised:
        gate.execute({"run_id": "run-1", "ti": TaskInstance(), "outlet_events": {}})
    assert not isinstance(raised.value, AirflowFailException)  # an ordinary error: Airflow retries it
    assert pushed == []  # nothing was published: no report, no approval
