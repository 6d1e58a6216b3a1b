"""ConsentGateOperator: mistakes caught when the DAG is parsed, and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException
from test_discovery import ACCEPTED_FILTERS, REFUSED_FILTERS

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.operators.consent import ConsentGateOperator


def gate(**overrides) -> ConsentGateOperator:
    arguments = {"task_id": "gate", "datasets": ["/data/profile_photos"], "purpose": "face_recognition_training"}
    return ConsentGateOperator(**{**arguments, **overrides})


def test_accepts_uris_and_assets():
    op = gate(datasets=["/data/a", Asset("b", uri="file:///data/b")])
    assert op._datasets() == [("/data/a", None), ("file:///data/b", "b")]


def test_a_single_dataset_need_not_be_a_list():
    assert gate(datasets="/data/a").datasets == ["/data/a"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"purpose": "dating_profile_enrichment"},
            "unknown purpose 'dating_profile_enrichment'.*face_recognition_training",
        ),
        ({"datasets": []}, "datasets is empty"),
        ({"datasets": [42]}, "must be a URI or an Asset"),
        ({"entrypoint": "data.consent.main"}, "entrypoint 'data.consent.main' must be a policy path"),
        ({"partition_filter": [("source", "~", "x")]}, r"gate: partition_filter term \('source', '~', 'x'\)"),
        ({"partition_filter": [["source", "in"]]}, "must be \\(key, op, value\\)"),
    ],
)
def test_bad_arguments_fail_at_parse_time(overrides, message):
    with pytest.raises(ConsentConfigurationError, match=message):
        gate(**overrides)


def test_templated_purpose_is_checked_at_run_time_not_parse_time():
    assert gate(purpose="{{ params.purpose }}").purpose == "{{ params.purpose }}"


# --- partition filters: the parser discovery uses, at parse time and once rendered ----------------


@pytest.mark.parametrize(("partition_filter", "message"), REFUSED_FILTERS)
def test_a_filter_discovery_would_refuse_fails_at_parse_time(partition_filter, message):
    with pytest.raises(ConsentConfigurationError, match=f"gate: {message}"):
        gate(partition_filter=partition_filter)


@pytest.mark.parametrize(("partition_filter", "message"), REFUSED_FILTERS)
def test_a_filter_discovery_would_refuse_fails_at_run_time(partition_filter, message):
    """Set as a rendered template (or a change after parsing) would set it: the run fails, never retried."""
    operator = gate()
    operator.partition_filter = partition_filter

    with pytest.raises(AirflowFailException, match=f"consent gate misconfigured: gate: {message}"):
        operator.execute({})


@pytest.mark.parametrize(("partition_filter", "_"), ACCEPTED_FILTERS)
def test_a_filter_discovery_accepts_passes_at_parse_and_run_time(partition_filter, _):
    operator = gate(partition_filter=partition_filter)
    assert operator.partition_filter == partition_filter
    operator._check_filter()  # what _evaluate checks before discovering


def test_a_templated_filter_is_checked_once_rendered():
    operator = gate(partition_filter=[("year", "in", "{{ params.years }}")])  # a string once rendered
    operator.render_template_fields({"params": {"years": "2024"}})

    assert operator.partition_filter == [("year", "in", "2024")]
    with pytest.raises(AirflowFailException, match=r"gate: partition_filter term \('year', 'in', '2024'\)"):
        operator.execute({})


def test_a_templated_filter_that_renders_well_passes():
    operator = gate(partition_filter=[("year", "in", ["{{ params.year }}"])])
    operator.render_template_fields({"params": {"year": "2024"}})
    operator._check_filter()


@pytest.mark.parametrize("module", ["airflow_consent.operators.consent", "airflow_consent.sensors.consent"])
def test_importing_the_gate_does_not_import_heavy_libraries(module):
    code = (
        f"import sys; import {module}; "
        "heavy = [m for m in ('pyarrow', 'great_expectations', 'opa_client', 'requests') if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in done.stdout


def test_checking_a_filter_at_parse_time_does_not_import_heavy_libraries():
    code = (
        "import sys; from airflow_consent.operators.consent import ConsentGateOperator; "
        "ConsentGateOperator(task_id='gate', datasets=['/data/a'], purpose='face_recognition_training', "
        "partition_filter=[('year', 'in', ['2024'])]); "
        "print('HEAVY=' + ','.join(m for m in ('pyarrow', 'great_expectations') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in done.stdout


@pytest.mark.parametrize("argument", ["opa_conn_id", "policy_path", "entrypoint", "enforcement", "dataset_config_path"])
def test_a_pinned_argument_set_on_the_task_fails_at_parse_time(monkeypatch, argument):
    value = {"entrypoint": "consent/lenient/decision", "enforcement": "dryrun"}.get(argument, "/elsewhere")
    monkeypatch.setenv("AIRFLOW__CONSENT__PINNED_TASK_ARGUMENTS", f"{argument}, entrypoint")

    with pytest.raises(ConsentConfigurationError, match=f"gate: {argument}.* set on the task, but the platform pins"):
        gate(**{argument: value})
    assert gate().enforcement is None  # not setting it is fine


def test_a_pinned_argument_is_checked_again_at_run_time(monkeypatch):
    """A gate built before the pin (or whose attribute was changed after parsing) still fails when it runs."""
    from airflow_consent.sensors.consent import ConsentPolicySensor

    operator = gate(enforcement="dryrun")
    sensor = ConsentPolicySensor(
        task_id="wait", datasets=["/data/a"], purpose="face_recognition_training", enforcement="dryrun"
    )
    monkeypatch.setenv("AIRFLOW__CONSENT__PINNED_TASK_ARGUMENTS", "enforcement")

    with pytest.raises(ConsentConfigurationError, match="enforcement set on the task"):
        operator._evaluate({})
    with pytest.raises(ConsentConfigurationError, match="enforcement set on the task"):
        sensor._trigger({})


def test_pinning_an_unknown_argument_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__PINNED_TASK_ARGUMENTS", "purpose")

    with pytest.raises(ConsentConfigurationError, match=r"pinned_task_arguments names \['purpose'\]"):
        gate()
