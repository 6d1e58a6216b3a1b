"""Enforcement modes × outcomes, on_violation="exclude", per-rule modes from [consent], and the
approved-asset event — through DagBag and dag.test() with the real local OPA."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import free_port
from dag_runs import run_dag, xcom

from airflow_consent.enforcement import Enforcement, parse_rule_modes
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.ledger import Ledger
from airflow_consent.sample_data import generate_profile_photos

GATE_DAG = """
from airflow.sdk import DAG, Asset
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_consent.operators.consent import ConsentGateOperator

with DAG(dag_id={dag_id!r}, schedule=None):
    ConsentGateOperator(task_id="consent_gate", datasets=[{dataset!r}], purpose="face_recognition_training",
                        retries=0, {extra}) >> EmptyOperator(task_id="train")
"""

DATA = {"allowed": ("studio_optin",), "denied": ("stock",), "engine down": ("studio_optin",)}


def gate_dag(root: Path, dag_id: str, sources: tuple[str, ...], extra: str = "") -> Path:
    dataset = generate_profile_photos(root / "data", sources=sources)
    dags = root / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(
        textwrap.dedent(GATE_DAG.format(dag_id=dag_id, dataset=str(dataset), extra=extra))
    )
    return dags


EXPECTED = {
    ("deny", "allowed"): "success",
    ("deny", "denied"): "failed",
    ("deny", "engine down"): "failed",
    ("warn", "allowed"): "success",
    ("warn", "denied"): "success",
    ("warn", "engine down"): "failed",
    ("dryrun", "allowed"): "success",
    ("dryrun", "denied"): "success",
    ("dryrun", "engine down"): "failed",
}


@pytest.mark.parametrize(("mode", "situation"), list(EXPECTED))
def test_mode_by_outcome(airflow_db, tmp_path, monkeypatch, capfd, mode, situation):
    extra = f"enforcement={mode!r}"
    if situation == "engine down":
        conn = {"conn_type": "opa", "host": "127.0.0.1", "port": free_port(), "extra": {"retries": 0, "timeout": 2}}
        monkeypatch.setenv("AIRFLOW_CONN_OPA_DOWN", json.dumps(conn))
        extra += ", opa_conn_id='opa_down'"
    dag_id = f"gate_{mode}_{situation.replace(' ', '_')}"

    states, dag_run = run_dag(gate_dag(tmp_path, dag_id, DATA[situation], extra), dag_id)

    expected = EXPECTED[(mode, situation)]
    assert states["consent_gate"] == expected
    assert states["train"] == ("success" if expected == "success" else "upstream_failed")
    log = "".join(capfd.readouterr())
    if situation == "engine down":
        assert "policy engine unreachable" in log
        return
    report = xcom(dag_run, "consent_gate", key="gate_report")
    violations = [v for p in report["partitions"] for v in p["violations"]]
    if situation == "denied":  # the violation is in the report whatever the mode
        assert [(v["rule_id"], v["enforcement"]) for v in violations] == [("PROV-003", mode)]
        assert ("violations not enforced (warn/dryrun): profile_photos/source=stock/year=2022" in log) == (
            mode != "deny"
        )
        with Ledger() as ledger:  # what run-time clearance will let training read
            cleared = ledger.allowed_fingerprints(dag_id, dag_run.run_id)
        assert list(cleared) == ([] if mode == "deny" else ["profile_photos/source=stock/year=2022"])
    else:
        assert violations == []


def test_platform_rule_mode_wins_over_the_task_default(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__RULE_ENFORCEMENT", "PROV-003=dryrun")
    dags = gate_dag(tmp_path, "gate_rule_dryrun", ("stock",), "enforcement='deny'")
    states, dag_run = run_dag(dags, "gate_rule_dryrun")
    assert states == {"consent_gate": "success", "train": "success"}
    report = xcom(dag_run, "consent_gate", key="gate_report")
    assert [v["enforcement"] for p in report["partitions"] for v in p["violations"]] == ["dryrun"]


def test_org_wide_default_mode_applies_when_the_task_sets_none(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCEMENT", "warn")
    states, _ = run_dag(gate_dag(tmp_path, "gate_org_warn", ("stock",)), "gate_org_warn")
    assert states == {"consent_gate": "success", "train": "success"}


def test_exclude_passes_only_the_allowed_partitions(airflow_db, tmp_path, capfd):
    dags = gate_dag(tmp_path, "gate_exclude", ("okcupid", "studio_optin", "stock"), "on_violation='exclude'")
    states, dag_run = run_dag(dags, "gate_exclude")
    assert states == {"consent_gate": "success", "train": "success"}
    approved = xcom(dag_run, "consent_gate")
    assert [p["id"] for p in approved] == [
        "profile_photos/source=studio_optin/year=2024",
        "profile_photos/source=studio_optin/year=2025",
    ]
    assert all(p["fingerprint"].startswith("sha256:") for p in approved)
    log = "".join(capfd.readouterr())
    assert "Excluded profile_photos/source=stock/year=2022: PROV-003" in log
    assert "Excluded profile_photos/source=okcupid/year=2013: CONSENT-001" in log


def test_exclude_fails_when_nothing_is_left(airflow_db, tmp_path):
    dags = gate_dag(tmp_path, "gate_exclude_all", ("okcupid", "stock"), "on_violation='exclude'")
    states, _ = run_dag(dags, "gate_exclude_all")
    assert states == {"consent_gate": "failed", "train": "upstream_failed"}


def test_approved_asset_event_carries_the_decision(airflow_db, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import select

    extra = "approved_asset=Asset('approved_profile_photos', uri='consent://approved/profile_photos')"
    dags = gate_dag(tmp_path, "gate_asset", ("studio_optin", "stock"), extra + ", on_violation='exclude'")
    states, dag_run = run_dag(dags, "gate_asset")
    assert states["consent_gate"] == "success"
    report = xcom(dag_run, "consent_gate", key="gate_report")
    with Session() as session:
        event = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "approved_profile_photos", AssetEvent.source_run_id == dag_run.run_id)
        ).one()
        extra_json = event.extra
    assert extra_json["decision_id"] == report["decision_id"]
    assert extra_json["purpose"] == "face_recognition_training"
    assert extra_json["policy_revision"] == report["policy_revision"]
    assert [p["id"] for p in extra_json["approved_partitions"]] == [
        "profile_photos/source=studio_optin/year=2024",
        "profile_photos/source=studio_optin/year=2025",
    ]
    assert extra_json["excluded_partitions"] == ["profile_photos/source=stock/year=2022"]


def test_no_asset_event_when_the_gate_fails(airflow_db, tmp_path):
    from airflow.models.asset import AssetEvent
    from airflow.settings import Session
    from sqlalchemy import select

    extra = "approved_asset=Asset('approved_stock', uri='consent://approved/stock')"
    states, dag_run = run_dag(gate_dag(tmp_path, "gate_asset_denied", ("stock",), extra), "gate_asset_denied")
    assert states["consent_gate"] == "failed"
    with Session() as session:
        assert session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == dag_run.run_id)).all() == []


def test_rule_modes_parse_and_reject_typos():
    assert parse_rule_modes("PROV-004=warn, EVIDENCE-001 = dryrun\n") == {"PROV-004": "warn", "EVIDENCE-001": "dryrun"}
    assert Enforcement(default="warn", per_rule={"PROV-004": "deny"}).mode_for("PROV-004") == "deny"
    with pytest.raises(ConsentConfigurationError, match="'block' is not an enforcement mode"):
        parse_rule_modes("PROV-004=block")
    with pytest.raises(ConsentConfigurationError, match="is not RULE_ID=MODE"):
        parse_rule_modes("PROV-004")
