"""How a gate finds the datasets' evidence configuration: the operator argument, else [consent] dataset_config_path."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Asset

from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.provider_info import get_provider_info


def gate(**overrides) -> ConsentGateOperator:
    return ConsentGateOperator(
        task_id="gate",
        datasets=["/data/a", Asset("b", uri="file:///data/b")],
        purpose="face_recognition_training",
        **overrides,
    )


def specs(task: ConsentGateOperator):
    """The dataset specs a run of ``task`` evaluates."""
    return task._settings().specs(task._datasets())


def test_the_argument_reaches_every_dataset(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__DATASET_CONFIG_PATH", "/etc/consent/datasets")
    found = specs(gate(dataset_config_path=Path("/opt/airflow/dags/datasets")))
    assert [(s.uri, s.name, s.dataset_config_path) for s in found] == [
        ("/data/a", None, "/opt/airflow/dags/datasets"),
        ("file:///data/b", "b", "/opt/airflow/dags/datasets"),
    ]


def test_the_setting_applies_when_the_task_names_none(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__DATASET_CONFIG_PATH", "/etc/consent/datasets")
    assert {s.dataset_config_path for s in specs(gate())} == {"/etc/consent/datasets"}
    monkeypatch.delenv("AIRFLOW__CONSENT__DATASET_CONFIG_PATH")
    assert {s.dataset_config_path for s in specs(gate())} == {None}


def test_the_setting_is_declared_in_provider_info():
    option = get_provider_info()["config"]["consent"]["options"]["dataset_config_path"]
    assert option["default"] == "" and option["type"] == "string"
