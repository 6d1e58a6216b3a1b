"""Bypass attempts under a real scheduler and LocalExecutor (``airflow standalone``), each blocked.

One standalone instance serves the whole module: a control run that trains, a failed gate marked
"success" by hand, a gate removed from the DAG file after the DAG was parsed, a partition modified
after its check, and an ungated training DAG that never imports. Training tasks are held in
``scheduled`` by a pool with no slots while a test tampers, then released.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from airflow_standalone import StandaloneAirflow, airflow_standalone

from airflow_consent.sample_data import generate_profile_photos

pytestmark = [pytest.mark.integration, pytest.mark.standalone]

PURPOSE = "face_recognition_training"

HEADER = """
from datetime import timedelta

from airflow.sdk import DAG, task
from airflow_consent.operators.consent import ConsentGateOperator


@task(retries=2)
def train():
    return "trained"
"""

GATED = (
    HEADER
    + """
with DAG(dag_id={dag_id!r}, schedule=None, tags=["training"]):
    gate = ConsentGateOperator(task_id="consent_gate", datasets=[{dataset!r}], purpose={purpose!r},
                               retries=2, retry_delay=timedelta(seconds=3))  # a denial is never retried
    gate >> train.override(pool={pool!r})()
"""
)

GATE_REMOVED = (
    HEADER
    + """
with DAG(dag_id={dag_id!r}, schedule=None, tags=["training"]):
    train.override(pool={pool!r})()
"""
)

UNGATED = (
    HEADER
    + """
with DAG(dag_id="ungated_training", schedule=None, tags=["training"]):
    train()
"""
)

SCENARIOS = {  # dag id -> (dataset, pool holding the training task)
    "bypass_control": ("studio", "default_pool"),
    "bypass_manual_success": ("mixed", "default_pool"),
    "bypass_gate_removed": ("studio", "hold_gate_removed"),
    "bypass_modified": ("modified", "hold_modified"),
}


def dag_file(folder: Path, dag_id: str) -> Path:
    return folder / f"{dag_id}.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory, opa_binary):
    """The data, the DAG files and a running Airflow with every scenario's run triggered."""
    root = tmp_path_factory.mktemp("bypass")
    generate_profile_photos(root / "data" / "studio", sources=("studio_optin",))
    generate_profile_photos(root / "data" / "modified", sources=("studio_optin",))
    generate_profile_photos(root / "data" / "mixed")
    dags = root / "dags"
    dags.mkdir()
    for dag_id, (data, pool) in SCENARIOS.items():
        dataset = str(root / "data" / data / "profile_photos")
        dag_file(dags, dag_id).write_text(GATED.format(dag_id=dag_id, dataset=dataset, purpose=PURPOSE, pool=pool))
    (dags / "ungated_training.py").write_text(UNGATED)

    with airflow_standalone(dags, home=root / "airflow_home") as airflow:
        print(f"airflow standalone ready in {airflow.started_in:.1f} s at {airflow.url}")
        airflow.set_pool("hold_gate_removed", 0)
        airflow.set_pool("hold_modified", 0)
        runs = {}
        for dag_id in SCENARIOS:
            airflow.wait_for_dag(dag_id)
            airflow.unpause(dag_id)
            runs[dag_id] = airflow.trigger(dag_id)
        yield airflow, root, runs


def refusal(airflow: StandaloneAirflow, dag_id: str, run_id: str) -> str:
    """The training task's log, after checking it failed on its first try (no retries)."""
    assert airflow.wait_for_task(dag_id, run_id, "train", timeout=120) == "failed"
    (train,) = [ti for ti in airflow.task_instances(dag_id, run_id) if ti["task_id"] == "train"]
    assert train["try_number"] == 1, "a refused clearance must not be retried"
    log = airflow.task_log(dag_id, run_id, "train")
    assert "Consent clearance refused: training task 'train' of DAG " + repr(dag_id) in log, log[-3000:]
    print(log[log.index("Consent clearance refused") :][:2000])  # shown with -s, or when a test fails
    return log


def test_control_run_trains_and_the_gate_has_a_consent_report_link(world):
    airflow, _, runs = world
    run_id = runs["bypass_control"]

    assert airflow.wait_for_run("bypass_control", run_id, timeout=120) == "success"
    assert airflow.task_states("bypass_control", run_id) == {"consent_gate": "success", "train": "success"}
    assert "Consent clearance: train may start on 2 partition(s) allowed in run" in airflow.task_log(
        "bypass_control", run_id, "train"
    )
    links = airflow.request(
        "GET", f"/api/v2/dags/bypass_control/dagRuns/{run_id}/taskInstances/consent_gate/links"
    ).json()
    assert links["extra_links"]["Consent report"].endswith("/plugin/consent_decisions")  # the run's decisions tab


def test_a_failed_gate_marked_success_by_hand_does_not_clear_training(world):
    airflow, _, runs = world
    dag_id, run_id = "bypass_manual_success", runs["bypass_manual_success"]
    assert airflow.wait_for_run(dag_id, run_id, timeout=120) == "failed"
    assert airflow.task_states(dag_id, run_id) == {"consent_gate": "failed", "train": "upstream_failed"}

    airflow.set_task_state(dag_id, run_id, "consent_gate", "success", note="bypass attempt")
    airflow.clear_task(dag_id, run_id, "train")

    log = refusal(airflow, dag_id, run_id)
    for denied in ("source=okcupid/year=2013", "source=okcupid/year=2014", "source=stock/year=2022"):
        assert (
            f"profile_photos/{denied}: no allow decision in the consent ledger for run {run_id!r} (gate "
            "'consent_gate' did not allow it in this run: was the gate marked success by hand, or did it not run?)"
        ) in log
    assert "source=studio_optin/year=2024: no allow" not in log  # those the gate did allow are cleared


def test_a_gate_removed_after_the_dag_was_parsed_does_not_clear_training(world):
    airflow, root, runs = world
    dag_id, run_id = "bypass_gate_removed", runs["bypass_gate_removed"]
    assert airflow.wait_for_task(dag_id, run_id, "consent_gate", timeout=120) == "success"
    assert airflow.task_states(dag_id, run_id)["train"] == "scheduled"  # held by its pool

    dag_file(root / "dags", dag_id).write_text(GATE_REMOVED.format(dag_id=dag_id, pool="hold_gate_removed"))
    error = airflow.wait_for_import_error(f"{dag_id}.py")  # the dag-processor refuses the new version...
    assert "training task(s) 'train' (DAG tag 'training') have no consent gate upstream" in error["stack_trace"]
    airflow.set_pool("hold_gate_removed", 1)  # ...but the run goes on with the version it was created with

    log = refusal(airflow, dag_id, run_id)
    assert (
        "no consent gate is upstream of 'train' in the DAG as it is now (was the gate removed after the DAG was "
        "parsed?); the ledger's 2 allow decision(s) for this run cannot be tied to this task without its gate"
    ) in log


def test_a_partition_modified_after_its_check_does_not_clear_training(world):
    from airflow_consent.discovery import discover_partitions, fingerprint

    airflow, root, runs = world
    dag_id, run_id = "bypass_modified", runs["bypass_modified"]
    assert airflow.wait_for_task(dag_id, run_id, "consent_gate", timeout=120) == "success"
    assert airflow.task_states(dag_id, run_id)["train"] == "scheduled"
    dataset = root / "data" / "modified" / "profile_photos"
    partition = dataset / "source=studio_optin" / "year=2024"
    before = {p.id: fingerprint(p) for p in discover_partitions(str(dataset))}

    data_file = sorted(partition.glob("*.parquet"))[0]
    shutil.copy(data_file, partition / "added-after-the-check.parquet")  # photos slipped in after approval
    after = {p.id: fingerprint(p) for p in discover_partitions(str(dataset))}
    airflow.set_pool("hold_modified", 1)

    log = refusal(airflow, dag_id, run_id)
    changed = "profile_photos/source=studio_optin/year=2024"
    assert before[changed] != after[changed]
    assert (
        f"{changed}: changed after its check: allowed with fingerprint {before[changed]}, on disk now {after[changed]}"
    ) in log
    assert "year=2025: changed" not in log


def test_an_ungated_training_dag_is_an_import_error_in_the_api_and_the_cli(world):
    airflow, _root, _ = world

    error = airflow.wait_for_import_error("ungated_training.py")
    assert (
        "AirflowClusterPolicyViolation: airflow-consent: DAG 'ungated_training': training task(s) 'train'"
        in (error["stack_trace"])
    )
    result = airflow.run_command("airflow", "dags", "list-import-errors", "-o", "json")
    assert result.returncode == 1, result.stderr[-2000:]  # 1 when there are import errors
    listed = {e["filepath"]: e["error"] for e in json.loads(result.stdout[result.stdout.index("[{") :].splitlines()[0])}
    expected = "training task(s) 'train' (DAG tag 'training') have no consent gate upstream"
    assert expected in listed["ungated_training.py"]
    assert "ungated_training" not in {d["dag_id"] for d in airflow.request("GET", "/api/v2/dags").json()["dags"]}
