"""ConsentGateOperator: mistakes caught when the DAG is parsed, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from airflow.sdk import Asset

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.operators.consent import ConsentGateOperator


def gate(**overrides) -> ConsentGateOperator:
    arguments = {"task_id": "gate", "datasets": ["/data/profile_photos"], "purpose": "face_recognition_training"}
    return ConsentGateOperator(**{**arguments, **overrides})


def test_accepts_uris_and_assets():
    op = gate(datasets=["/data/a", Asset("b", uri="file:///data/b")])
    assert [s.uri for s in op._dataset_specs()] == ["/data/a", "file:///data/b"]
    assert [s.name for s in op._dataset_specs()] == [None, "b"]


def test_a_single_dataset_need_not_be_a_list():
    assert gate(datasets="/data/a").datasets == ["/data/a"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"purpose": "dating_profile_enrichment"}, "unknown purpose 'dating_profile_enrichment'.*face_recognition_training"),
        ({"datasets": []}, "datasets is empty"),
        ({"datasets": [42]}, "must be a URI or an Asset"),
        ({"entrypoint": "data.consent.main"}, "entrypoint 'data.consent.main' must be a policy path"),
        ({"partition_filter": [("source", "~", "x")]}, r"partition_filter term \('source', '~', 'x'\)"),
        ({"partition_filter": [["source", "in"]]}, "must be \\(key, op, value\\)"),
    ],
)
def test_bad_arguments_fail_at_parse_time(overrides, message):
    with pytest.raises(ConsentConfigurationError, match=message):
        gate(**overrides)


def test_templated_purpose_is_checked_at_run_time_not_parse_time():
    assert gate(purpose="{{ params.purpose }}").purpose == "{{ params.purpose }}"


@pytest.mark.parametrize("module", ["airflow_consent.operators.consent", "airflow_consent.sensors.consent"])
def test_importing_the_gate_does_not_import_heavy_libraries(module):
    code = (
        f"import sys; import {module}; "
        "heavy = [m for m in ('pyarrow', 'great_expectations', 'opa_client', 'requests') if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in done.stdout
