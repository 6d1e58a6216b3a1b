"""``approved_dataset``: training reads exactly the partitions the gates approved in this run.

Unit level: the real gate (local OPA, shipped policies) writes a real ledger over real Parquet files,
then the reader is called as a training callable would call it. End to end: DAG files through a
DagBag and ``dag.test()``, the clearance installed by the cluster policy.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dag_runs import run_dag, xcom
from test_clearance import (
    STUDIO_2024,
    STUDIO_2025,
    STUDIO_2026,
    add_partition,
    approved_training_task,
    context,
    run_gate,
    training_dag,
    triggered_by,
)

from airflow_consent.clearance import ClearanceDenied
from airflow_consent.discovery import discover_partitions
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.ledger import Ledger
from airflow_consent.reader import approved_dataset, approved_table
from airflow_consent.sample_data import generate_profile_photos


def rows_of(dataset_dir: Path, *partition_ids: str) -> list[str]:
    """The photo ids in the data files of the named partitions, read straight from disk."""
    partitions = [p for p in discover_partitions(str(dataset_dir)) if p.id in partition_ids]
    assert len(partitions) == len(partition_ids)
    return sorted(row for p in partitions for f in p.files for row in pq.read_table(f.path)["photo_id"].to_pylist())


@pytest.fixture
def gated(tmp_path, monkeypatch, opa_binary):
    """An exclude-mode gate run over okcupid (denied), studio_optin 2024 and 2025 (allowed) and stock
    (denied); yields (training task, dataset dir, ledger)."""
    dataset = generate_profile_photos(tmp_path / "data")
    task = training_dag(dataset, on_violation="exclude").task_dict["train"]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert [p["id"] for p in run_gate(task, url, monkeypatch)] == [STUDIO_2024, STUDIO_2025]
    with Ledger(url) as ledger:
        yield task, dataset, ledger


def test_the_dataset_holds_exactly_the_approved_partitions_rows(gated):
    task, dataset, ledger = gated

    photos = approved_dataset(context(task), ledger=ledger)

    table = photos.to_table()
    assert sorted(table.column("photo_id").to_pylist()) == rows_of(dataset, STUDIO_2024, STUDIO_2025)
    assert set(zip(table.column("source").to_pylist(), table.column("year").to_pylist(), strict=False)) == {
        ("studio_optin", 2024),
        ("studio_optin", 2025),
    }  # hive partition keys are columns
    assert sorted(photos.files) == sorted(str(p) for p in dataset.glob("source=studio_optin/year=*/part-0.parquet"))


def test_a_partition_changed_after_the_gate_is_refused(gated):
    task, dataset, ledger = gated
    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    pq.write_table(pq.read_table(data_file).slice(0, 10), data_file)  # re-delivered after the check

    with pytest.raises(ClearanceDenied) as caught:
        approved_dataset(context(task), ledger=ledger)

    assert [(p.kind, p.partition_id) for p in caught.value.problems] == [("changed", STUDIO_2024)]


def test_approved_table_holds_the_same_rows_as_the_dataset(gated):
    task, dataset, ledger = gated

    table = approved_table(context(task), ledger=ledger, columns=["photo_id"])

    assert sorted(table.column("photo_id").to_pylist()) == rows_of(dataset, STUDIO_2024, STUDIO_2025)
    assert set(zip(table.column("source").to_pylist(), table.column("year").to_pylist(), strict=False)) == {
        ("studio_optin", "2024"),
        ("studio_optin", "2025"),
    }


def test_data_swapped_after_the_clearance_is_caught_by_approved_table_only(gated, monkeypatch):
    """The window between the check and the read: approved_table fingerprints the bytes it parses."""
    import airflow_consent.clearance as clearance

    task, dataset, ledger = gated
    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    original, real_clearance = data_file.read_bytes(), clearance.enforce_clearance

    def clearance_then_swap(*args, **kwargs):
        cleared = real_clearance(*args, **kwargs)
        pq.write_table(pq.read_table(data_file).slice(0, 10), data_file)  # swapped once cleared
        return cleared

    monkeypatch.setattr(clearance, "enforce_clearance", clearance_then_swap)
    with pytest.raises(ClearanceDenied, match="changed while being read for training") as caught:
        approved_table(context(task), ledger=ledger)
    assert [(p.kind, p.partition_id) for p in caught.value.problems] == [("changed", STUDIO_2024)]

    data_file.write_bytes(original)
    swapped_rows = approved_dataset(context(task), ledger=ledger).to_table().num_rows  # the known gap
    assert swapped_rows == len(rows_of(dataset, STUDIO_2024, STUDIO_2025)) - len(rows_of(dataset, STUDIO_2024)) + 10


def test_a_partition_added_after_the_gate_is_refused_not_read(gated):
    task, dataset, ledger = gated
    add_partition(dataset, 2026)

    with pytest.raises(ClearanceDenied) as caught:
        approved_dataset(context(task), ledger=ledger)

    assert [(p.kind, p.partition_id) for p in caught.value.problems] == [("not_allowed", STUDIO_2026)]


def test_a_dag_scheduled_on_an_approved_asset_reads_the_partitions_the_event_approves(tmp_path, opa_binary):
    from datetime import datetime

    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.gate import DatasetSpec, evaluate_gate
    from airflow_consent.models import GateRequest

    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin", "stock"))
    request = GateRequest(
        purpose="face_recognition_training",
        dag_id="approve",
        run_id="r1",
        task_id="consent_gate",
        evaluated_at=datetime.now(UTC),
    )
    report = evaluate_gate(request, [DatasetSpec(uri=str(dataset))], LocalOpaEngine())
    extra = {
        "decision_id": report.decision_id,
        "approved_partitions": [{"id": p.id, "uri": p.uri, "fingerprint": p.fingerprint} for p in report.passed],
    }
    assert [p["id"] for p in extra["approved_partitions"]] == [STUDIO_2024, STUDIO_2025]  # stock: license
    task = approved_training_task()
    add_partition(dataset, 2026)  # after the approval: the event does not name it
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.record(report, request, mode="deny", input_digest=report.input_digest)

        photos = approved_dataset(triggered_by(task, extra), ledger=ledger)

    assert sorted(photos.to_table().column("photo_id").to_pylist()) == rows_of(dataset, STUDIO_2024, STUDIO_2025)


def test_with_several_datasets_the_caller_names_one(tmp_path, monkeypatch, opa_binary):
    from evidence_data import DATASET as FACES
    from evidence_data import rows, write_partition

    photos_dir = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    write_partition(tmp_path / "data", "a", rows(["s1", "s2", "s3"]))
    faces_dir = tmp_path / "data" / FACES
    task = training_dag(photos_dir).task_dict["train"]
    task.dag.task_dict["consent_gate"].datasets = [str(photos_dir), str(faces_dir)]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    run_gate(task, url, monkeypatch)
    with Ledger(url) as ledger:
        with pytest.raises(ConsentConfigurationError, match="cleared for partitions of 2 datasets .*pass dataset="):
            approved_dataset(context(task), ledger=ledger)
        faces = approved_dataset(context(task), dataset=FACES, ledger=ledger).to_table()
        by_uri = approved_dataset(context(task), dataset=str(photos_dir), ledger=ledger)
        with pytest.raises(ConsentConfigurationError, match="matches none"):
            approved_dataset(context(task), dataset="no_such_dataset", ledger=ledger)
    assert faces.column("subject_id").to_pylist() == ["s1", "s2", "s3"]
    assert faces.column("shard").to_pylist() == ["a"] * 3
    assert sorted(by_uri.to_table().column("photo_id").to_pylist()) == rows_of(photos_dir, STUDIO_2024, STUDIO_2025)


def test_importing_the_reader_does_not_import_pyarrow():
    code = "import sys; import airflow_consent.reader; print('PYARROW=' + str('pyarrow' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "PYARROW=False" in done.stdout


# --- end to end: DagBag and dag.test() ------------------------------------------------------------

TRAINING_DAG = """
import shutil
from pathlib import Path

from airflow.sdk import DAG, Asset, task
from airflow_consent.operators.consent import ConsentGateOperator

DATASET = Path({dataset!r})

with DAG(dag_id={dag_id!r}, schedule=None):
    gate = ConsentGateOperator(task_id="consent_gate", datasets=[str(DATASET)], purpose="face_recognition_training",
                               on_violation="exclude", retries=0)

    @task
    def deliver_late():
        if {deliver_late!r}:
            studio = DATASET / "source=studio_optin"
            shutil.copytree(studio / "year=2024", studio / "year=2026")

    @task(outlets=[Asset("face_model", uri="model://face-embedder")], retries=0)  # a training task
    def train(**context):
        from airflow_consent.reader import approved_dataset, approved_table

        return sorted(approved_dataset(context).to_table(columns=["photo_id"]).column("photo_id").to_pylist())

    gate >> deliver_late() >> train()
"""


def training_dag_file(root: Path, dag_id: str, *, deliver_late: bool) -> tuple[Path, Path]:
    dataset = generate_profile_photos(root / "data")
    dags = root / "dags"
    dags.mkdir()
    source = TRAINING_DAG.format(dag_id=dag_id, dataset=str(dataset), deliver_late=deliver_late)
    (dags / f"{dag_id}.py").write_text(textwrap.dedent(source))
    return dags, dataset


def test_training_reads_only_what_the_exclude_gate_approved(airflow_db, tmp_path):
    dags, dataset = training_dag_file(tmp_path, "reader_exclude", deliver_late=False)

    states, dag_run = run_dag(dags, "reader_exclude")

    assert states == {"consent_gate": "success", "deliver_late": "success", "train": "success"}
    assert xcom(dag_run, "train") == rows_of(dataset, STUDIO_2024, STUDIO_2025)  # no okcupid, no stock row


def test_a_partition_delivered_after_the_exclude_gate_stops_training(airflow_db, tmp_path, capfd):
    dags, _ = training_dag_file(tmp_path, "reader_late_delivery", deliver_late=True)

    states, _ = run_dag(dags, "reader_late_delivery")

    assert states == {"consent_gate": "success", "deliver_late": "success", "train": "failed"}
    log = "".join(capfd.readouterr())
    assert f"{STUDIO_2026}: gate 'consent_gate' never decided it in run" in log
