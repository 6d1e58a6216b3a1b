"""The shipped example, end to end: DagBag → dag.test() → the real local OPA over the shipped policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from airflow_consent.sample_data import generate_profile_photos

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "train_face_recognition"
# purpose not consented, biometric without opt-in, source not approved, license forbids purpose
OKCUPID_RULES = {"CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003"}


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.resetdb(skip_init=False)


def load_dags(folder: Path) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.dags


def run(folder: Path, dag_id: str) -> tuple[dict[str, str], object]:
    """Parse ``folder`` as the dag processor would, run ``dag_id`` with dag.test(); return task states and the run."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs the serialized DAG
    dag_run = bag.dags[dag_id].test()
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}, dag_run


def gate_report(dag_run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=DAG_ID, task_ids="consent_gate", key="gate_report")
        ).one()
        value = XComModel.deserialize_value(row)
    return json.loads(value) if isinstance(value, str) else value


def test_every_example_dag_loads_without_import_errors():
    assert DAG_ID in load_dags(REPO / "dags")


def test_example_denies_okcupid_and_stock_and_never_trains(airflow_db, tmp_path, monkeypatch, capfd):
    generate_profile_photos(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONSENT_SAMPLE_DATA", str(tmp_path))

    states, dag_run = run(REPO / "dags", DAG_ID)

    assert states == {"consent_gate": "failed", "train": "upstream_failed"}
    report = gate_report(dag_run)
    verdicts = {p["id"]: {v["rule_id"] for v in p["violations"]} for p in report["partitions"]}
    assert verdicts == {
        "profile_photos/source=okcupid/year=2013": OKCUPID_RULES,
        "profile_photos/source=okcupid/year=2014": OKCUPID_RULES,
        "profile_photos/source=stock/year=2022": {"PROV-003"},  # CC-BY-NC-4.0 vs commercial training
        "profile_photos/source=studio_optin/year=2024": set(),
        "profile_photos/source=studio_optin/year=2025": set(),
    }
    assert report["opa_version"] == "1.22.3"
    output = capfd.readouterr()
    log = output.out + output.err
    assert "Consent gate denied 3 of 5 partition(s) for purpose 'face_recognition_training'" in log
    assert "fix: " in log


def test_example_trains_when_only_studio_partitions_are_present(airflow_db, tmp_path, monkeypatch):
    generate_profile_photos(tmp_path, sources=("studio_optin",))
    monkeypatch.setenv("AIRFLOW_CONSENT_SAMPLE_DATA", str(tmp_path))

    states, dag_run = run(REPO / "dags", DAG_ID)

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
    (dags / "engine_down.py").write_text(textwrap.dedent(ENGINE_DOWN_DAG.format(dataset=str(tmp_path / "data" / "profile_photos"))))
    port = free_port()  # nothing listens here: the server is stopped
    conn = {"conn_type": "opa", "host": "127.0.0.1", "port": port, "extra": {"retries": 0, "timeout": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_OPA_DOWN", json.dumps(conn))

    states, _ = run(dags, "gate_engine_down")

    assert states == {"consent_gate": "failed", "train": "upstream_failed"}
    output = capfd.readouterr()
    assert f"policy engine unreachable (OPA server (connection 'opa_down')): cannot connect to http://127.0.0.1:{port}" in (
        output.out + output.err
    )
