"""ConsentPolicySensor and its trigger: not yet versus never, poke / reschedule / deferrable, soft_fail,
on real Parquet data and the real local OPA."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import free_port
from dag_runs import run_dag, xcom

from airflow_consent.ledger import Ledger
from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.sample_data import generate_profile_photos
from airflow_consent.triggers.consent import ConsentPolicyTrigger

PURPOSE = "face_recognition_training"


def studio_without_manifest(root: Path) -> tuple[Path, Path, bytes]:
    """Studio data whose 2024 manifest is not there yet; returns (dataset, sidecar path, its content)."""
    dataset = generate_profile_photos(root, sources=("studio_optin",))
    sidecar = dataset / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    content = sidecar.read_bytes()
    sidecar.unlink()
    return dataset, sidecar, content


def trigger(dataset: Path, **overrides) -> ConsentPolicyTrigger:
    kwargs = {
        "request": {
            "purpose": PURPOSE,
            "dag_id": "d",
            "run_id": "r",
            "task_id": "t",
            "evaluated_at": "2026-11-26T00:00:00Z",
        },
        "datasets": [{"uri": str(dataset), "name": None}],
        "arguments": {},
        "on_violation": "fail",
        "poke_interval": 0.2,
    }
    return ConsentPolicyTrigger(**{**kwargs, **overrides})


def first_event(trig: ConsentPolicyTrigger, timeout: float = 60) -> dict:
    async def run():
        return await asyncio.wait_for(anext(trig.run()), timeout)

    return asyncio.run(run()).payload


# --- the trigger ---------------------------------------------------------------------------------


def test_trigger_serializes_to_its_class_and_json_kwargs(tmp_path):
    original = trigger(
        tmp_path,
        arguments={"opa_conn_id": "opa_prod", "enforcement": "warn"},
        partition_filter=[["source", "=", "studio_optin"]],
    )
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_consent.triggers.consent.ConsentPolicyTrigger"
    rebuilt = ConsentPolicyTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_trigger_kwargs_carry_no_secret(tmp_path, monkeypatch, opa_binary):
    """The sensor resolves only the connection id; the token stays in the connection."""
    from airflow_consent.sensors.consent import ConsentPolicySensor

    conn = {"conn_type": "opa", "host": "127.0.0.1", "port": 1, "password": "s3cret-token"}
    monkeypatch.setenv("AIRFLOW_CONN_OPA_PROD", json.dumps(conn))
    sensor = ConsentPolicySensor(task_id="wait", datasets=[str(tmp_path)], purpose=PURPOSE, opa_conn_id="opa_prod")
    _, kwargs = sensor._trigger({"run_id": "r"}).serialize()
    assert kwargs["arguments"]["opa_conn_id"] == "opa_prod"
    assert "s3cret-token" not in json.dumps(kwargs)


def test_trigger_fires_passed_for_compliant_data(tmp_path, opa_binary):
    dataset = generate_profile_photos(tmp_path, sources=("studio_optin",))
    event = first_event(trigger(dataset))
    assert event["status"] == "passed"
    assert event["report"]["allow"] is True


def test_trigger_fires_never_for_a_non_recoverable_violation(tmp_path, opa_binary):
    dataset = generate_profile_photos(tmp_path, sources=("stock",))  # CC-BY-NC-4.0: recoverable false
    event = first_event(trigger(dataset))
    assert event["status"] == "never"
    assert {v["rule_id"] for p in event["report"]["partitions"] for v in p["violations"]} == {"PROV-003"}


def test_trigger_keeps_waiting_until_the_manifest_arrives(tmp_path, opa_binary):
    dataset, sidecar, content = studio_without_manifest(tmp_path)
    timer = threading.Timer(1.5, sidecar.write_bytes, args=(content,))
    timer.start()
    try:
        event = first_event(trigger(dataset))
    finally:
        timer.cancel()
    assert event["status"] == "passed"


def test_trigger_waits_for_partitions_that_do_not_exist_yet(tmp_path, opa_binary):
    staging = generate_profile_photos(tmp_path / "staging", sources=("studio_optin",))
    landing = tmp_path / "landing" / "profile_photos"
    timer = threading.Timer(1.5, shutil.copytree, args=(staging, landing))
    timer.start()
    try:
        event = first_event(trigger(landing))
    finally:
        timer.cancel()
    assert event["status"] == "passed"


def test_trigger_reports_an_unreachable_engine(tmp_path, monkeypatch, opa_binary):
    dataset = generate_profile_photos(tmp_path, sources=("studio_optin",))
    conn = {"conn_type": "opa", "host": "127.0.0.1", "port": free_port(), "extra": {"retries": 0, "timeout": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_OPA_DOWN", json.dumps(conn))
    event = first_event(trigger(dataset, arguments={"opa_conn_id": "opa_down"}))
    assert event["status"] == "error"
    assert "policy engine unreachable" in event["message"]


# --- the sensor in DAG runs ----------------------------------------------------------------------

SENSOR_DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_consent.sensors.consent import ConsentPolicySensor

with DAG(dag_id={dag_id!r}, schedule=None):
    ConsentPolicySensor(task_id="wait_for_consent", datasets=[{dataset!r}], purpose="face_recognition_training",
                        poke_interval=0.5, timeout={timeout}, {extra}) >> EmptyOperator(task_id="train")
"""


def sensor_dag(folder: Path, dag_id: str, dataset: Path, timeout: float = 60, extra: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"{dag_id}.py").write_text(
        textwrap.dedent(SENSOR_DAG.format(dag_id=dag_id, dataset=str(dataset), timeout=timeout, extra=extra))
    )
    return folder


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_sensor_passes_once_the_manifest_arrives(airflow_db, tmp_path, mode):
    dataset, sidecar, content = studio_without_manifest(tmp_path / "data")
    dags = sensor_dag(tmp_path / "dags", f"sensor_{mode}", dataset, extra=f"mode={mode!r}")
    timer = threading.Timer(1.5, sidecar.write_bytes, args=(content,))
    timer.start()
    try:
        states, dag_run = run_dag(dags, f"sensor_{mode}")
    finally:
        timer.cancel()
    assert states == {"wait_for_consent": "success", "train": "success"}
    assert {p["id"] for p in xcom(dag_run, "wait_for_consent")} == {
        "profile_photos/source=studio_optin/year=2024",
        "profile_photos/source=studio_optin/year=2025",
    }


def test_deferred_sensor_passes_under_dag_test(airflow_db, tmp_path):
    dataset, sidecar, content = studio_without_manifest(tmp_path / "data")
    dags = sensor_dag(tmp_path / "dags", "sensor_deferrable", dataset, extra="deferrable=True")
    timer = threading.Timer(2.0, sidecar.write_bytes, args=(content,))
    timer.start()
    try:
        states, dag_run = run_dag(dags, "sensor_deferrable")
    finally:
        timer.cancel()
    assert states == {"wait_for_consent": "success", "train": "success"}
    approved = xcom(dag_run, "wait_for_consent")
    assert len(approved) == 2
    with Ledger() as ledger:  # the triggerer's decision is recorded when the task resumes
        assert ledger.allowed_fingerprints("sensor_deferrable", dag_run.run_id) == {
            p["id"]: p["fingerprint"] for p in approved
        }


@pytest.mark.parametrize("deferrable", [False, True])
def test_never_fails_at_once_despite_a_long_timeout(airflow_db, tmp_path, deferrable):
    dataset = generate_profile_photos(tmp_path / "data", sources=("stock",))
    dag_id = f"sensor_never_{deferrable}"
    dags = sensor_dag(tmp_path / "dags", dag_id, dataset, timeout=3600, extra=f"deferrable={deferrable}")
    states, dag_run = run_dag(dags, dag_id)
    assert states == {"wait_for_consent": "failed", "train": "upstream_failed"}
    report = xcom(dag_run, "wait_for_consent", key="gate_report")
    assert [v["rule_id"] for p in report["partitions"] for v in p["violations"]] == ["PROV-003"]


def test_never_with_soft_fail_skips(airflow_db, tmp_path):
    dataset = generate_profile_photos(tmp_path / "data", sources=("stock",))
    dags = sensor_dag(tmp_path / "dags", "sensor_soft", dataset, extra="soft_fail=True")
    states, _ = run_dag(dags, "sensor_soft")
    assert states == {"wait_for_consent": "skipped", "train": "skipped"}


@pytest.mark.parametrize(("extra", "expected"), [("", "failed"), ("soft_fail=True", "skipped")])
def test_not_yet_times_out(airflow_db, tmp_path, extra, expected):
    dataset, _, _ = studio_without_manifest(tmp_path / "data")
    dag_id = f"sensor_timeout_{expected}"
    dags = sensor_dag(tmp_path / "dags", dag_id, dataset, timeout=2, extra=extra)
    states, _ = run_dag(dags, dag_id)
    assert states["wait_for_consent"] == expected


def test_exponential_backoff_grows_the_trigger_interval(tmp_path):
    trig = trigger(tmp_path, poke_interval=2, exponential_backoff=True, max_wait=10)
    assert [trig._interval(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    assert trigger(tmp_path, poke_interval=2)._interval(5) == 2


def test_sensor_honours_enforcement_modes(airflow_db, tmp_path):
    dataset = generate_profile_photos(tmp_path / "data", sources=("stock",))  # PROV-003: never, under deny
    dags = sensor_dag(tmp_path / "dags", "sensor_warn", dataset, extra="enforcement='warn'")
    states, dag_run = run_dag(dags, "sensor_warn")
    assert states == {"wait_for_consent": "success", "train": "success"}
    report = xcom(dag_run, "wait_for_consent", key="gate_report")
    assert [v["enforcement"] for p in report["partitions"] for v in p["violations"]] == ["warn"]


@pytest.mark.parametrize(
    ("event", "error", "retried"),
    [
        ({"status": "error", "message": "policy engine unreachable (x): down"}, "policy engine unreachable", True),
        ({"status": "misconfigured", "message": "dataset root missing"}, "misconfigured: dataset root missing", False),
        ({"status": "surprise"}, "unexpected trigger event", True),
    ],
)
def test_sensor_resumes_from_failure_events_as_airflow_expects(tmp_path, event, error, retried):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from airflow_consent.sensors.consent import ConsentPolicySensor

    sensor = ConsentPolicySensor(task_id="wait", datasets=[str(tmp_path)], purpose=PURPOSE, deferrable=True)
    with pytest.raises(AirflowException, match=error) as raised:
        sensor.execute_complete({}, event)
    assert isinstance(raised.value, AirflowFailException) is not retried


def test_a_filter_refused_at_parse_time_or_once_rendered_fails_the_sensor_at_once(tmp_path):
    """Not "not yet": a dataset that is not there yet must not hide a filter that can never work."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_consent.errors import ConsentConfigurationError
    from airflow_consent.sensors.consent import ConsentPolicySensor

    missing = str(tmp_path / "not_there_yet")
    with pytest.raises(ConsentConfigurationError, match=r"wait: partition_filter term \(1, '=', 'x'\)"):
        ConsentPolicySensor(task_id="wait", datasets=[missing], purpose=PURPOSE, partition_filter=[(1, "=", "x")])
    sensor = ConsentPolicySensor(
        task_id="wait", datasets=[missing], purpose=PURPOSE, partition_filter=[("year", "in", "{{ params.years }}")]
    )
    sensor.render_template_fields({"params": {"years": "2024"}})
    with pytest.raises(AirflowFailException, match=r"sensor misconfigured: wait: partition_filter term \('year', 'in'"):
        sensor.poke({})
