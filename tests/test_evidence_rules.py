"""Each evidence rule, end to end: real Parquet files → the gate's evidence → one query to the real OPA.

(The shared examples of every rule, good and bad, go through an OPA server in test_policies.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from evidence_data import DATASET, config, rows, utc, write_config, write_partition

from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.gate import DatasetSpec, evaluate_gate
from airflow_consent.models import GateRequest

SUITE = {
    "name": "faces",
    "expectations": [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "subject_id", "regex": "^s[0-9]+$"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "photo_id"}},
    ],
}


@pytest.fixture(scope="module")
def decided(tmp_path_factory, opa_binary) -> tuple[dict[str, list[tuple[str, str]]], Path, Path]:
    root = tmp_path_factory.mktemp("evidence_rules")
    data, conf = root / "data", root / "conf"
    write_partition(data, "good", rows(["s1", "s2", "s3"]))
    write_partition(
        data,
        "coverage",
        rows(["s1", "s2", "s3", "s4"], face=[True, False, None, True], model=[False, False, False, True]),
    )
    write_partition(data, "revoked", rows(["s1", "s666", "s666", "s777"]))
    write_partition(
        data,
        "after",
        rows(
            ["s1", "s2", "s3"],
            collected=[utc(2024, 5, 1), utc(2024, 3, 1), utc(2024, 3, 1)],
            withdrawn=[utc(2024, 4, 1), None, None],
            expires=[None, utc(2024, 2, 1), utc(2025, 1, 1)],
        ),
    )
    write_partition(data, "critical", rows(["s1", "bob@example.com"]))
    write_partition(data, "unmeasurable", rows(["s1", None]))
    write_config(
        conf,
        config(expectations={"critical": ["expect_column_values_to_match_regex"]}),
        revoked=["s666", "s777", "s999"],
        suite=SUITE,
    )
    request = GateRequest(purpose="face_recognition_training", evaluated_at=datetime(2026, 11, 26, tzinfo=UTC))
    report = evaluate_gate(
        request,
        [DatasetSpec(uri=str(data / DATASET), dataset_config_path=str(conf))],
        LocalOpaEngine(opa_binary=opa_binary),
    )
    verdicts = {p.id.rsplit("=", 1)[1]: [(v.rule_id, v.message) for v in p.violations] for p in report.partitions}
    assert {p.id.rsplit("=", 1)[1]: p.allow for p in report.partitions} == {
        shard: not v for shard, v in verdicts.items()
    }
    return verdicts, data, conf


def test_good_partition_is_allowed(decided):
    assert decided[0]["good"] == []


def test_coverage_below_threshold(decided):
    assert decided[0]["coverage"] == [
        (
            "EVIDENCE-001",
            '2 of 4 rows (50%) carry consent to "face_recognition_training" or an ancestor of it; '
            "the threshold for this purpose is 100%",
        )
    ]


def test_revoked_subjects_present(decided):
    _, _, conf = decided
    assert decided[0]["revoked"] == [
        ("EVIDENCE-002", f"3 row(s) of 2 subject(s) on the revocation list {conf / 'revoked.csv'}, e.g. s666, s777"),
    ]


def test_rows_collected_after_consent_ended(decided):
    assert decided[0]["after"] == [
        (
            "EVIDENCE-003",
            "1 row(s) collected at or after their subject's consent expired; "
            "1 row(s) collected at or after their subject's consent was withdrawn",
        )
    ]


def test_critical_expectation_failed(decided):
    _, _, conf = decided
    assert decided[0]["critical"] == [
        (
            "EVIDENCE-004",
            f'consent-critical expectation(s) of suite "faces" ({conf / f"{DATASET}.expectations.json"}) failed: '
            'expect_column_values_to_match_regex on column "subject_id" '
            '{"element_count": 2, "unexpected_count": 1, "unexpected_percent": 50.0}',
        )
    ]


def test_evidence_unmeasurable(decided):
    _, data, _ = decided
    assert decided[0]["unmeasurable"] == [
        (
            "EVIDENCE-005",
            f"the evidence could not be measured: {data / DATASET}/shard=unmeasurable/part-0.parquet: subject_id: "
            "1 row(s) have a null subject id: they cannot be checked against consent or revocations",
        )
    ]


def test_allowing_a_partition_whose_evidence_could_not_be_measured_fails_closed(decided, opa_binary, tmp_path):
    from airflow_consent.errors import MalformedDecision

    _, data, conf = decided
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "main.rego").write_text(
        'package lax\n\ndecision := {"allow": true, "partitions": '
        '[{"id": p.id, "allow": true, "violations": []} | some p in input.partitions]}\n'
    )
    request = GateRequest(purpose="face_recognition_training", evaluated_at=datetime(2026, 11, 26, tzinfo=UTC))
    with pytest.raises(
        MalformedDecision, match="shard=unmeasurable is allowed although its evidence could not be measured"
    ):
        evaluate_gate(
            request,
            [DatasetSpec(uri=str(data / DATASET), dataset_config_path=str(conf))],
            LocalOpaEngine(policy_path=policies, opa_binary=opa_binary),
            entrypoint="lax/decision",
            partition_filter=[("shard", "in", ["good", "unmeasurable"])],
        )
