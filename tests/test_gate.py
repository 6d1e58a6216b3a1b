"""The gate's flow on real Parquet data and a real local OPA: decisions, bad input, and answers that
must fail closed (produced by small real Rego policies that misbehave on purpose)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import ConsentConfigurationError, MalformedDecision, NoPartitionsFound
from airflow_consent.gate import DatasetSpec, evaluate_gate
from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.models import GateRequest
from airflow_consent.sample_data import generate_profile_photos

STUDIO_2024 = "profile_photos/source=studio_optin/year=2024"
DATASET_CONFIG = str(Path(__file__).resolve().parent.parent / "dags" / "datasets")


def request(purpose: str = "face_recognition_training") -> GateRequest:
    return GateRequest(purpose=purpose, evaluated_at=datetime(2026, 11, 26, tzinfo=UTC))


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return generate_profile_photos(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def studio(tmp_path) -> Path:
    return generate_profile_photos(tmp_path, sources=("studio_optin",))


@pytest.fixture(scope="module")
def engine(opa_binary) -> LocalOpaEngine:
    return LocalOpaEngine(opa_binary=opa_binary)


def rules_by_partition(report) -> dict[str, set[str]]:
    return {p.id: {v.rule_id for v in p.violations} for p in report.partitions}


def test_sample_data_decision(sample, engine):
    report = evaluate_gate(request(), [DatasetSpec(uri=str(sample), dataset_config_path=DATASET_CONFIG)], engine)

    assert not report.allow
    okcupid = {"CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003", "EVIDENCE-001"}
    assert rules_by_partition(report) == {
        "profile_photos/source=okcupid/year=2013": okcupid,
        "profile_photos/source=okcupid/year=2014": okcupid,
        "profile_photos/source=stock/year=2022": {"PROV-003"},
        STUDIO_2024: set(),
        "profile_photos/source=studio_optin/year=2025": {"EVIDENCE-002"},
    }
    assert report.opa_version == "1.22.3"
    assert report.policy_revision.startswith("sha256:")
    for partition in report.partitions:
        assert partition.fingerprint.startswith("sha256:") and partition.uri.endswith(partition.id.split("/", 1)[1])


def test_filter_narrows_the_partitions(sample, engine):
    report = evaluate_gate(
        request(), [DatasetSpec(uri=str(sample))], engine, partition_filter=[("source", "=", "studio_optin")]
    )
    assert report.allow
    assert [p.id for p in report.partitions] == [STUDIO_2024, "profile_photos/source=studio_optin/year=2025"]


def manifest_violations(report) -> list:
    (partition,) = [p for p in report.partitions if p.id == STUDIO_2024]
    assert not partition.allow
    return partition.violations


def test_missing_manifest_is_a_violation_naming_the_file(studio, engine):
    sidecar = studio / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    sidecar.unlink()
    report = evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine)
    (violation,) = manifest_violations(report)
    assert str(sidecar) in violation.message or SIDECAR_NAME in violation.message


def test_malformed_manifest_json_is_a_violation(studio, engine):
    sidecar = studio / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    sidecar.write_text('{"manifest_version": "1", "consent": ')
    (violation,) = manifest_violations(evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine))
    assert SIDECAR_NAME in violation.message and "line 1" in violation.message


def test_wrong_field_type_is_a_violation_naming_the_field(studio, engine):
    sidecar = studio / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    manifest = json.loads(sidecar.read_text())
    manifest["consent"]["biometric_opt_in"] = "yes"
    sidecar.write_text(json.dumps(manifest))
    (violation,) = manifest_violations(evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine))
    assert "consent.biometric_opt_in" in violation.message


def test_unknown_purpose_is_denied_by_the_policies(studio, engine):
    report = evaluate_gate(request("dating_profile_enrichment"), [DatasetSpec(uri=str(studio))], engine)
    assert not report.allow
    assert all("dating_profile_enrichment" in v.message for p in report.partitions for v in p.violations)


def test_an_empty_dataset_is_no_partitions_found_not_a_configuration_error(tmp_path, engine):
    """A sensor waits on NoPartitionsFound; a handler of configuration errors must not catch it by accident."""
    (tmp_path / "empty").mkdir()
    assert not issubclass(NoPartitionsFound, ConsentConfigurationError)
    with pytest.raises(NoPartitionsFound, match="has no partitions"):
        evaluate_gate(request(), [DatasetSpec(uri=str(tmp_path / "empty"))], engine)


def test_partition_escaping_the_dataset_root_is_a_configuration_error(studio, tmp_path, engine):
    outside = tmp_path / "elsewhere" / "year=1999"
    outside.mkdir(parents=True)
    os.symlink(outside.parent, studio / "source=escape")
    with pytest.raises(ConsentConfigurationError, match="escapes the dataset root"):
        evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine)


def test_the_same_dataset_twice_is_a_configuration_error(studio, engine):
    with pytest.raises(ConsentConfigurationError, match="listed twice"):
        evaluate_gate(request(), [DatasetSpec(uri=str(studio)), DatasetSpec(uri=str(studio))], engine)


# --- answers that must fail closed ---------------------------------------------------------------

_PARTITIONS = '[{"id": p.id, "allow": true, "violations": []} | some p in input.partitions]'
MISBEHAVING = {
    "drops a partition": f'decision := {{"allow": true, "partitions": array.slice({_PARTITIONS}, 1, 100)}}',
    "invents a partition": f'decision := {{"allow": true, "partitions": array.concat({_PARTITIONS}, '
    '[{"id": "ghost", "allow": true, "violations": []}])}',
    "allows with violations": 'decision := {"allow": true, "partitions": [{"id": p.id, "allow": true, '
    '"violations": [{"rule_id": "X", "title": "t", "severity": "high", "message": "m", "remediation": "r", '
    '"regulation": []}]} | some p in input.partitions]}',
    "contradicts itself": f'decision := {{"allow": false, "partitions": {_PARTITIONS}}}',
    "answers another shape": 'decision := {"allowed": "yes"}',
}


@pytest.mark.parametrize("behaviour", MISBEHAVING)
def test_answers_outside_the_contract_fail_closed(behaviour, studio, opa_binary, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "main.rego").write_text(f"package bad\n\n{MISBEHAVING[behaviour]}\n")
    engine = LocalOpaEngine(policy_path=policies, opa_binary=opa_binary)
    with pytest.raises(MalformedDecision):
        evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine, entrypoint="bad/decision")


def test_allowing_a_partition_without_a_valid_manifest_fails_closed(studio, opa_binary, tmp_path):
    (studio / "source=studio_optin" / "year=2024" / SIDECAR_NAME).unlink()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "main.rego").write_text(f'package lax\n\ndecision := {{"allow": true, "partitions": {_PARTITIONS}}}\n')
    engine = LocalOpaEngine(policy_path=policies, opa_binary=opa_binary)
    with pytest.raises(MalformedDecision, match="manifest is missing or invalid"):
        evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine, entrypoint="lax/decision")
