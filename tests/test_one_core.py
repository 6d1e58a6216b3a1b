"""One gate run everywhere: the operator, the sensor's trigger and ``airflow-consent check`` resolve
the same settings (task argument > ``[consent]`` > default, per-rule modes winning) and reach the same
verdict on the same data; parse-time checks use the policies the gate will use.

Each case here disagreed before ``airflow_consent.run``: the CLI ignored ``[consent]``, the trigger
ran on the worker's resolved values, parse-time validation used the shipped taxonomy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airflow_consent.cli import EXIT_DENIED, app
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.ledger import Ledger
from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.policies import policy_dir
from airflow_consent.run import GateArguments, resolve
from airflow_consent.sample_data import generate_profile_photos
from airflow_consent.triggers.consent import ConsentPolicyTrigger

PURPOSE = "face_recognition_training"


@pytest.fixture(scope="module")
def stock(tmp_path_factory) -> Path:
    """Partitions denied only by PROV-003 (a non-commercial license): not recoverable."""
    return generate_profile_photos(tmp_path_factory.mktemp("stock"), sources=("stock",))


def check(*args: str):
    return CliRunner().invoke(app, ["check", *args])


def trigger_event(dataset: Path, arguments: dict | None = None) -> dict:
    trigger = ConsentPolicyTrigger(
        request={"purpose": PURPOSE, "dag_id": "d", "run_id": "r", "task_id": "wait"},
        datasets=[{"uri": str(dataset), "name": None}],
        arguments=arguments or {},
        on_violation="fail",
        poke_interval=0.2,
    )

    async def first():
        return await asyncio.wait_for(anext(trigger.run()), 60)

    return asyncio.run(first()).payload


# --- settings resolution ---------------------------------------------------------------------------


def test_task_argument_then_consent_then_default_and_rule_modes_win(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCEMENT", "warn")
    monkeypatch.setenv("AIRFLOW__CONSENT__RULE_ENFORCEMENT", "PROV-003=deny")
    monkeypatch.setenv("AIRFLOW__CONSENT__POLICY_PATH", "/org/policies")

    assert resolve(GateArguments()).enforcement.default == "warn"
    assert resolve(GateArguments(enforcement="dryrun")).enforcement.mode_for("PROV-004") == "dryrun"
    assert resolve(GateArguments(enforcement="dryrun")).enforcement.mode_for("PROV-003") == "deny"
    assert resolve(GateArguments()).policy_path == "/org/policies"
    assert resolve(GateArguments(policy_path="/mine")).policy_path == "/mine"
    assert resolve(GateArguments()).entrypoint == "consent/main/decision"
    monkeypatch.setenv("AIRFLOW__CONSENT__PINNED_TASK_ARGUMENTS", "policy_path")
    with pytest.raises(ConsentConfigurationError, match="policy_path set on the task, but the platform pins"):
        resolve(GateArguments(policy_path="/mine"))


# --- the CLI is the gate ------------------------------------------------------------------------------


def test_check_applies_the_deployments_rule_modes_as_the_gate_does(stock, monkeypatch, opa_binary):
    assert check(str(stock), "--purpose", PURPOSE).exit_code == EXIT_DENIED
    monkeypatch.setenv("AIRFLOW__CONSENT__RULE_ENFORCEMENT", "PROV-003=dryrun")
    passed = check(str(stock), "--purpose", PURPOSE, "--json")
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.output)
    assert report["allow"] is False  # the policies still deny; the rule is not enforced
    assert {v["enforcement"] for p in report["partitions"] for v in p["violations"]} == {"dryrun"}


def test_check_takes_an_enforcement_flag_and_refuses_a_bad_one(stock, opa_binary):
    assert check(str(stock), "--purpose", PURPOSE, "--enforcement", "warn").exit_code == 0
    refused = check(str(stock), "--purpose", PURPOSE, "--enforcement", "loud")
    assert refused.exit_code == 2 and "'loud' is not an enforcement mode" in refused.output


def test_check_uses_the_deployments_policy_path(stock, tmp_path, monkeypatch, opa_binary):
    monkeypatch.setenv("AIRFLOW__CONSENT__POLICY_PATH", str(tmp_path / "missing-policies"))
    broken = check(str(stock), "--purpose", PURPOSE)
    assert broken.exit_code == 2 and "missing-policies" in broken.output


def test_check_records_nothing(stock, tmp_path, monkeypatch, opa_binary):
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", f"sqlite:///{tmp_path}/ledger.db")
    check(str(stock), "--purpose", PURPOSE)
    assert not (tmp_path / "ledger.db").exists()


# --- the trigger resolves in the triggerer, and records like a poke -----------------------------------


def test_the_trigger_resolves_the_triggerers_consent_settings(stock, monkeypatch, opa_binary):
    assert trigger_event(stock)["status"] == "never"
    monkeypatch.setenv("AIRFLOW__CONSENT__RULE_ENFORCEMENT", "PROV-003=warn")
    assert trigger_event(stock)["status"] == "passed"
    monkeypatch.setenv("AIRFLOW__CONSENT__PINNED_TASK_ARGUMENTS", "enforcement")
    event = trigger_event(stock, {"enforcement": "dryrun"})
    assert event["status"] == "misconfigured" and "enforcement set on the task" in event["message"]


def test_the_trigger_records_each_evaluation_in_the_ledger(stock, tmp_path, monkeypatch, opa_binary):
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)
    event = trigger_event(stock)
    with Ledger(url) as ledger:
        records = ledger.records(dag_id="d", run_id="r")
    assert {r.decision_id for r in records} == {event["report"]["decision_id"]}
    assert {(r.task_id, r.partition_id, r.allow) for r in records} == {
        ("wait", p["id"], False) for p in event["report"]["partitions"]
    }


def test_the_trigger_fails_when_the_ledger_cannot_be_written(stock, tmp_path, monkeypatch, opa_binary):
    (tmp_path / "ledger.db").mkdir()  # a directory where the database file should be
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", f"sqlite:///{tmp_path}/ledger.db")
    event = trigger_event(stock)
    assert event["status"] == "error" and "consent ledger" in event["message"]


# --- parse time uses the policies the gate will use ----------------------------------------------------


def org_policies_with_purpose(root: Path, purpose: str) -> Path:
    copy = shutil.copytree(policy_dir(), root / "org-policies")
    taxonomy = copy / "consent" / "reference" / "purposes" / "data.json"
    data = json.loads(taxonomy.read_text())
    data["purposes"][purpose] = {**data["purposes"][PURPOSE], "description": "the org's own purpose"}
    taxonomy.write_text(json.dumps(data))
    return copy


def test_a_purpose_of_the_deployments_policies_is_valid_at_parse_time(tmp_path, monkeypatch):
    with pytest.raises(ConsentConfigurationError, match="unknown purpose 'voice_cloning_training'"):
        ConsentGateOperator(task_id="gate", datasets=["/data/a"], purpose="voice_cloning_training")
    monkeypatch.setenv(
        "AIRFLOW__CONSENT__POLICY_PATH", str(org_policies_with_purpose(tmp_path, "voice_cloning_training"))
    )
    assert ConsentGateOperator(task_id="gate", datasets=["/data/a"], purpose="voice_cloning_training")


def test_with_an_org_opa_server_the_purpose_is_left_to_its_policies(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__OPA_CONN_ID", "opa_org")
    assert ConsentGateOperator(task_id="gate", datasets=["/data/a"], purpose="voice_cloning_training")
