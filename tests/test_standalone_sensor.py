"""Under a real scheduler, LocalExecutor and triggerer (``airflow standalone``): a deferred consent
sensor waits in the triggerer until a partition's manifest is fixed, then training runs; and a gate's
approved-asset event schedules the training DAG that consumes it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from airflow_standalone import standalone_fixture

from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.sample_data import generate_profile_photos

pytestmark = [pytest.mark.integration, pytest.mark.standalone]

REPO = Path(__file__).resolve().parent.parent
BROKEN_MANIFEST = '{"manifest_version": "1", "consent": '

SENSOR_DAG = """
from airflow.sdk import DAG, task
from airflow_consent.sensors.consent import ConsentPolicySensor

with DAG(dag_id="wait_then_train", schedule=None, tags=["consent"]):
    @task
    def train():
        return "trained"

    ConsentPolicySensor(task_id="wait_for_consent", datasets=[{dataset!r}], purpose="face_recognition_training",
                        deferrable=True, poke_interval=2, timeout=600) >> train()
"""


def write_dags(root: Path) -> Path:
    dags = root / "dags"
    dags.mkdir()
    waiting = generate_profile_photos(root / "waiting", sources=("studio_optin",))
    sidecar = waiting / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    (root / "good_manifest.json").write_bytes(sidecar.read_bytes())
    sidecar.write_text(BROKEN_MANIFEST)  # PROV-006, recoverable: the sensor waits
    (dags / "wait_then_train.py").write_text(textwrap.dedent(SENSOR_DAG.format(dataset=str(waiting))))
    generate_profile_photos(root / "sample")
    shutil.copy(REPO / "dags" / "train_on_approved_partitions.py", dags)
    shutil.copytree(REPO / "dags" / "datasets", dags / "datasets")  # the sample's evidence configuration
    return dags


airflow = standalone_fixture(
    scope="module",
    dags=write_dags,
    env=lambda root: {
        "AIRFLOW_CONSENT_SAMPLE_DATA": str(root / "sample"),
        # Every task here is expected to succeed: two retries (3 s apart) ride out a worker's HTTP
        # timeout on a loaded machine. A denial is AirflowFailException, never retried anyway.
        "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "2",
    },
)


def test_deferred_sensor_waits_in_the_triggerer_until_the_manifest_is_fixed(airflow):
    root = airflow.home.parent
    airflow.wait_for_dag("wait_then_train")
    airflow.unpause("wait_then_train")
    run_id = airflow.trigger("wait_then_train")

    assert airflow.wait_for_task("wait_then_train", run_id, "wait_for_consent", states={"deferred"}) == "deferred"
    assert airflow.task_states("wait_then_train", run_id)["train"] in {None, "none", "scheduled"}

    sidecar = root / "waiting" / "profile_photos" / "source=studio_optin" / "year=2024" / SIDECAR_NAME
    sidecar.write_bytes((root / "good_manifest.json").read_bytes())

    assert airflow.wait_for_run("wait_then_train", run_id, timeout=180) == "success"
    assert airflow.task_states("wait_then_train", run_id) == {"wait_for_consent": "success", "train": "success"}


def test_approved_asset_schedules_training_on_the_approved_partitions(airflow):
    airflow.wait_for_dag("approve_profile_photos")
    airflow.wait_for_dag("train_on_approved_profile_photos")
    airflow.unpause("train_on_approved_profile_photos")
    airflow.unpause("approve_profile_photos")
    run_id = airflow.trigger("approve_profile_photos")
    assert airflow.wait_for_run("approve_profile_photos", run_id) == "success"

    runs = airflow._wait(
        "a run of train_on_approved_profile_photos",
        lambda: airflow.request("GET", "/api/v2/dags/train_on_approved_profile_photos/dagRuns").json()["dag_runs"],
        timeout=120,
    )
    consumer_run = runs[0]["dag_run_id"]
    assert airflow.wait_for_run("train_on_approved_profile_photos", consumer_run) == "success"
    log = airflow.task_log("train_on_approved_profile_photos", consumer_run, "train")
    assert "Consent clearance: train may start on 1 partition(s)" in log  # studio 2024: 2025 holds revoked subjects
    assert "'partitions': 1" in log
