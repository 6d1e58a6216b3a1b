"""``airflow-consent check``: the gate from a terminal, with exit codes a script can branch on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airflow_consent.cli import EXIT_BROKEN, EXIT_DENIED, app
from airflow_consent.sample_data import generate_profile_photos


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return generate_profile_photos(tmp_path_factory.mktemp("cli"))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_check_denies_the_sample_and_names_the_rules(sample, opa_binary):
    result = invoke("check", str(sample), "--purpose", "face_recognition_training")
    assert result.exit_code == EXIT_DENIED
    assert "DENIED 3 of 5 partition(s)" in result.output
    assert "[PROV-003 high] License forbids purpose" in result.output


def test_check_allows_with_a_filter_and_prints_json(sample, opa_binary):
    result = invoke(
        "check", str(sample), "--purpose", "face_recognition_training", "--where", "source=studio_optin", "--json"
    )
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["allow"] is True and len(report["partitions"]) == 2


def test_check_reports_configuration_errors(tmp_path, opa_binary):
    result = invoke("check", str(tmp_path / "nowhere"), "--purpose", "face_recognition_training")
    assert result.exit_code == EXIT_BROKEN
    assert "nowhere" in result.output


def test_where_must_be_key_equals_value(sample):
    result = invoke("check", str(sample), "--purpose", "face_recognition_training", "--where", "source")
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output


def test_check_measures_evidence_with_a_dataset_configuration(sample, opa_binary):
    configs = Path(__file__).resolve().parent.parent / "dags" / "datasets"
    result = invoke(
        "check",
        str(sample),
        "--purpose",
        "face_recognition_training",
        "--where",
        "source=studio_optin",
        "--dataset-config-path",
        str(configs),
    )
    assert result.exit_code == EXIT_DENIED
    assert "DENY  profile_photos/source=studio_optin/year=2025" in result.output
    assert "EVIDENCE-002" in result.output


def test_sample_data_command_writes_only_the_sources_asked_for_without_revoked_rows(tmp_path, capsys):
    import pyarrow.dataset as ds

    from airflow_consent.sample_data import REVOKED_SUBJECTS, main

    assert main([str(tmp_path), "--sources", "studio_optin", "--without-revoked"]) == 0
    dataset = Path(capsys.readouterr().out.strip())
    assert sorted(p.name for p in dataset.iterdir()) == ["source=studio_optin"]
    subjects = set(
        ds.dataset(dataset, format="parquet", partitioning="hive")
        .to_table(columns=["subject_id"])
        .column("subject_id")
        .to_pylist()
    )
    assert subjects and not subjects & set(REVOKED_SUBJECTS)


def test_check_json_is_the_only_thing_on_stdout(sample, opa_binary, tmp_path):
    """As a script runs it (`airflow-consent check … --json | jq`): Airflow's log lines must not reach stdout."""
    import os
    import subprocess
    import sys

    command = [
        str(Path(sys.executable).parent / "airflow-consent"),
        "check",
        str(sample),
        "--purpose",
        "face_recognition_training",
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}  # a user's shell, not the tests'
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env, "AIRFLOW_HOME": str(tmp_path)}
    )
    assert done.returncode == EXIT_DENIED, done.stderr
    assert done.stdout.startswith("{"), done.stdout[:2000]
    report = json.loads(done.stdout)
    assert len(report["partitions"]) == 5
