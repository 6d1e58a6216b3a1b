"""The shipped example, end to end: DagBag → dag.test() → the real local OPA over the shipped policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from dag_runs import parse, run_dag, xcom
from typer.testing import CliRunner

from airflow_consent.cli import app
from airflow_consent.sample_data import REVOKED_SUBJECTS, generate_profile_photos, remove_subjects

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "train_face_recognition"
# purpose not consented, biometric without opt-in, source not approved, license forbids purpose
# and, measured in the data, no row with consent to the purpose
OKCUPID_RULES = {"CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003", "EVIDENCE-001"}


def gate_report(dag_run) -> dict:
    return xcom(dag_run, "consent_gate", key="gate_report")


def test_every_example_dag_loads_without_import_errors():
    assert DAG_ID in parse(REPO / "dags")


def test_example_denies_okcupid_and_stock_and_never_trains(airflow_db, tmp_path, monkeypatch, capfd):
    generate_profile_photos(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONSENT_SAMPLE_DATA", str(tmp_path))

    states, dag_run = run_dag(REPO / "dags", DAG_ID)

    assert states == {"consent_gate": "failed", "train": "upstream_failed"}
    report = gate_report(dag_run)
    verdicts = {p["id"]: {v["rule_id"] for v in p["violations"]} for p in report["partitions"]}
    assert verdicts == {
        "profile_photos/source=okcupid/year=2013": OKCUPID_RULES,
        "profile_photos/source=okcupid/year=2014": OKCUPID_RULES,
        "profile_photos/source=stock/year=2022": {"PROV-003"},  # CC-BY-NC-4.0 vs commercial training
        "profile_photos/source=studio_optin/year=2024": set(),
        "profile_photos/source=studio_optin/year=2025": {"EVIDENCE-002"},  # revoked subjects in the data
    }
    (revoked,) = [p["violations"][0] for p in report["partitions"] if p["id"].endswith("year=2025")]
    assert revoked["message"] == (
        f"4 row(s) of 3 subject(s) on the revocation list {REPO / 'dags' / 'datasets' / 'revoked_subjects.csv'}, "
        f"e.g. {', '.join(REVOKED_SUBJECTS)}"
    )
    assert report["opa_version"] == "1.22.3"
    output = capfd.readouterr()
    log = output.out + output.err
    assert "Consent gate denied 4 of 5 partition(s) for purpose 'face_recognition_training'" in log
    assert "fix: " in log

    shown = CliRunner().invoke(app, ["report", DAG_ID, "--run-id", dag_run.run_id])
    assert shown.exit_code == 0
    assert shown.output.startswith("Consent gate DENIED 4 of 5 partition(s)")


def test_example_trains_on_studio_partitions_once_the_revoked_subjects_are_removed(airflow_db, tmp_path, monkeypatch):
    dataset = generate_profile_photos(tmp_path, sources=("studio_optin",))
    assert remove_subjects(dataset, REVOKED_SUBJECTS) == {"profile_photos/source=studio_optin/year=2025": 4}
    monkeypatch.setenv("AIRFLOW_CONSENT_SAMPLE_DATA", str(tmp_path))

    states, dag_run = run_dag(REPO / "dags", DAG_ID)

    assert states == {"consent_gate": "success", "train": "success"}
    report = gate_report(dag_run)
    assert report["allow"] is True
    assert len(report["partitions"]) == 2


ENGINE_DOWN_DAG = """
from airflow.sdk import DAG
from airflow_consent.operators.consent import ConsentGateOperator
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="gate_engine_down", schedule=None):
    ConsentGateOperator(task_id="consent_gate", datasets=[{dataset!r}], purpose="face_recognition_training",
                        opa_conn_id="opa_down", retries=0) >> EmptyOperator(task_id="train")
"""


def test_gate_blocks_when_the_opa_server_is_down(airflow_db, tmp_path, monkeypatch, capfd, opa_binary):
    from conftest import free_port

    generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "engine_down.py").write_text(
        textwrap.dedent(ENGINE_DOWN_DAG.format(dataset=str(tmp_path / "data" / "profile_photos")))
    )
    port = free_port()  # nothing listens here: the server is stopped
    conn = {"conn_type": "opa", "host": "127.0.0.1", "port": port, "extra": {"retries": 0, "timeout": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_OPA_DOWN", json.dumps(conn))

    states, _ = run_dag(dags, "gate_engine_down")

    assert states == {"consent_gate": "failed", "train": "upstream_failed"}
    output = capfd.readouterr()
    assert (
        f"policy engine unreachable (OPA server (connection 'opa_down')): cannot connect to http://127.0.0.1:{port}"
        in (output.out + output.err)
    )
