"""Purge with a deletion certificate: revoked subjects' rows removed from real Parquet files, the
certificate in the ledger's signed ``consent_purge`` chain, and the re-audit reading it.

Real parts throughout: the real gate (local OPA, shipped policies, the example's evidence
configuration) over the sample Parquet dataset, the clearance writing usage records, a real SQLite
ledger, ``airflow-consent purge``, ``ledger verify`` and ``audit`` through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_audit import refused_by_the_database
from test_clearance import RUN, STUDIO_2024, STUDIO_2025, context, run_gate, training_dag
from typer.testing import CliRunner

from airflow_consent.audit import audit_ledger
from airflow_consent.clearance import enforce_clearance
from airflow_consent.cli import app
from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.ledger import Ledger
from airflow_consent.ledger.usage import PURGE
from airflow_consent.purge import purge_partitions, subject_digest
from airflow_consent.sample_data import REVOKED_SUBJECTS, generate_profile_photos, remove_subjects

REPO = Path(__file__).resolve().parent.parent
MODEL_OUTLET = "model://face-embedder/"


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def subjects(path: Path) -> list[str]:
    return pq.read_table(path, columns=["subject_id"]).column(0).to_pylist()


def revoke(datasets: Path, *subject_ids: str) -> None:
    with (datasets / "revoked_subjects.csv").open("a", encoding="utf-8") as out:
        for subject in subject_ids:
            out.write(f"{subject},2026-11-27T09:00:00Z,erasure request\n")


def current_fingerprint(dataset: Path, partition_id: str) -> str:
    (partition,) = [p for p in discover_partitions(str(dataset)) if p.id == partition_id]
    return fingerprint(partition)


@pytest.fixture
def used(tmp_path, monkeypatch, opa_binary):
    """The example's gate allowed studio_optin 2024 and 2025 and a training task with a model outlet was
    cleared on them (a usage record); then two subjects with rows in 2025 only withdrew. Yields (dataset dir,
    configuration dir, ledger URL, the withdrawn subjects)."""
    from airflow.sdk import Asset

    datasets = tmp_path / "datasets"
    shutil.copytree(REPO / "dags" / "datasets", datasets)
    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    remove_subjects(dataset, REVOKED_SUBJECTS)  # re-delivered without them: the gate allows both years
    dag = training_dag(dataset, dataset_config_path=str(datasets), model="face-embedder-v1")
    task = dag.task_dict["train"]
    task.outlets = [Asset("face_model", uri="model://face-embedder")]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert [p["id"] for p in run_gate(task, url, monkeypatch)] == [STUDIO_2024, STUDIO_2025]
    enforce_clearance(task, context(task))
    studio = dataset / "source=studio_optin"
    only_2025 = sorted(
        set(subjects(studio / "year=2025" / "part-0.parquet")) - set(subjects(studio / "year=2024" / "part-0.parquet"))
    )
    withdrawn = (only_2025[0], only_2025[-1])  # subjects sit for several years: these only in 2025
    revoke(datasets, *withdrawn)
    yield dataset, datasets, url, withdrawn


def test_purge_removes_exactly_the_revoked_rows_and_certifies_it(used):
    dataset, datasets, url, withdrawn = used
    data_file = dataset / "source=studio_optin" / "year=2025" / "part-0.parquet"
    before_rows = subjects(data_file)
    before_schema = pq.read_schema(data_file)
    before_fingerprint = current_fingerprint(dataset, STUDIO_2025)
    untouched = (dataset / "source=studio_optin" / "year=2024" / "part-0.parquet").read_bytes()
    expected_removed = sum(s in withdrawn for s in before_rows)
    assert expected_removed >= 2

    result = invoke(
        "purge", str(dataset), "--partition", STUDIO_2025, "--dataset-config-path", str(datasets), "--url", url
    )

    assert result.exit_code == 0, result.output
    after_rows = subjects(data_file)
    assert len(after_rows) == len(before_rows) - expected_removed
    assert sorted(after_rows) == sorted(s for s in before_rows if s not in withdrawn)  # every other row kept
    assert pq.read_schema(data_file).equals(before_schema)
    after_fingerprint = current_fingerprint(dataset, STUDIO_2025)
    assert after_fingerprint != before_fingerprint
    assert (dataset / "source=studio_optin" / "year=2024" / "part-0.parquet").read_bytes() == untouched
    assert not [p for p in data_file.parent.iterdir() if ".purge-" in p.name]  # no temporary file left
    lines = result.output.splitlines()
    assert lines[0].startswith(
        f"Consent purge of profile_photos: {expected_removed} row(s) removed from 1 partition(s)"
    )
    assert (
        f"  PURGED     {STUDIO_2025}: {expected_removed} of {len(before_rows)} row(s), 2 subject(s); fingerprint "
        f"{before_fingerprint} -> {after_fingerprint}" in lines
    )
    assert f"  retrain: run train_faces/{RUN}, task train_faces.train used {STUDIO_2025}" in result.output

    with Ledger(url) as ledger:
        (certificate,) = ledger.purge_records()
    assert (certificate.seq, certificate.dataset, certificate.rows_removed) == (1, "profile_photos", expected_removed)
    assert certificate.requested_by == "cli:airflow-consent purge"
    assert certificate.revocation_list == str(datasets / "revoked_subjects.csv")
    (partition,) = certificate.partitions
    assert (partition.id, partition.files, partition.rows_before, partition.rows_removed) == (
        STUDIO_2025,
        ["part-0.parquet"],
        len(before_rows),
        expected_removed,
    )
    assert (partition.fingerprint_before, partition.fingerprint_after) == (before_fingerprint, after_fingerprint)
    assert (
        partition.subjects
        == sorted("sha256:" + hashlib.sha256(s.encode()).hexdigest() for s in withdrawn)
        == sorted(map(subject_digest, withdrawn))
    )
    assert [(u.partition_id, u.fingerprint, u.dag_id, u.run_id, u.task_id, u.outlets) for u in certificate.retrain] == [
        (STUDIO_2025, before_fingerprint, "train_faces", RUN, "train", [MODEL_OUTLET])
    ]
    assert certificate.signature.startswith("hmac-sha256:")

    ledger_bytes = Path(url.removeprefix("sqlite:///")).read_bytes()
    wal = Path(url.removeprefix("sqlite:///") + "-wal")
    stored = ledger_bytes + (wal.read_bytes() if wal.exists() else b"")
    for subject in withdrawn:
        assert subject.encode() not in stored  # only the hashes
        assert subject_digest(subject).encode() in stored

    verified = invoke("ledger", "verify", "--url", url)
    assert verified.exit_code == 0, verified.output


def test_the_parquet_key_value_metadata_survives_a_purge(tmp_path):
    datasets = tmp_path / "datasets"
    shutil.copytree(REPO / "dags" / "datasets", datasets)
    partition = tmp_path / "data" / "profile_photos" / "source=studio_optin" / "year=2025"
    partition.mkdir(parents=True)
    claims = json.dumps({"consent": {"basis": "consent"}})
    table = pa.table(
        {"subject_id": ["keep-1", REVOKED_SUBJECTS[0], "keep-2", None], "width": [320, 480, 640, 320]}
    ).replace_schema_metadata({"airflow_consent.manifest": claims, "producer.note": "studio export"})
    pq.write_table(table, partition / "part-0.parquet", compression="zstd")

    report = purge_partitions(
        str(tmp_path / "data" / "profile_photos"),
        ["source=studio_optin/year=2025"],  # the id without the dataset's name works too
        dataset_config_path=str(datasets),
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )

    assert [(p.id, p.rows_removed) for p in report.purged] == [(STUDIO_2025, 1)]
    assert report.retrain == []  # nothing trained on it
    written = pq.ParquetFile(partition / "part-0.parquet")
    metadata = written.metadata.metadata
    assert metadata[b"airflow_consent.manifest"] == claims.encode()
    assert metadata[b"producer.note"] == b"studio export"
    assert written.schema_arrow.equals(table.schema)
    assert written.metadata.row_group(0).column(0).compression == "ZSTD"
    assert written.read().column("subject_id").to_pylist() == ["keep-1", "keep-2", None]  # a null subject stays


def test_a_partition_with_nothing_to_remove_is_left_byte_identical_and_uncertified(used):
    dataset, datasets, url, _ = used
    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    before, stat = data_file.read_bytes(), data_file.stat()

    result = invoke(
        "purge", str(dataset), "--partition", STUDIO_2024, "--dataset-config-path", str(datasets), "--url", url
    )

    assert result.exit_code == 0, result.output
    assert f"  UNCHANGED  {STUDIO_2024}: no row of a revoked subject" in result.output
    assert data_file.read_bytes() == before and data_file.stat().st_ino == stat.st_ino
    arguments = ["--partition", STUDIO_2024, "--dataset-config-path", str(datasets), "--url", url, "--json"]
    as_json = invoke("purge", str(dataset), *arguments)
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert (report["purged"], report["unchanged"], report["recorded_seq"]) == ([], [STUDIO_2024], None)
    with Ledger(url) as ledger:
        assert ledger.purge_records() == []  # nothing removed: no certificate


@pytest.mark.parametrize("broken", ["no revocation list", "list file missing", "no subject column"])
def test_a_dataset_without_a_revocation_list_or_subject_column_is_an_error_that_touches_nothing(used, broken):
    dataset, datasets, url, _ = used
    config = datasets / "profile_photos.json"
    settings = json.loads(config.read_text())
    if broken == "no revocation list":
        del settings["revocations"]
        expected = "names no revocation list"
    elif broken == "list file missing":
        (datasets / "revoked_subjects.csv").unlink()
        expected = "revoked_subjects.csv"
    else:
        settings["columns"]["subject_id"] = "person"
        expected = "no subject column 'person'"
    config.write_text(json.dumps(settings))
    files = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}

    result = invoke(
        "purge", str(dataset), "--partition", STUDIO_2025, "--dataset-config-path", str(datasets), "--url", url
    )

    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and expected in result.output
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == files
    with Ledger(url) as ledger:
        assert ledger.purge_records() == []


def test_an_unknown_partition_is_an_error_that_touches_nothing(used):
    dataset, datasets, url, _ = used
    files = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}

    result = invoke(
        "purge",
        str(dataset),
        "--partition",
        STUDIO_2025,
        "--partition",
        "profile_photos/source=studio_optin/year=1999",
        "--dataset-config-path",
        str(datasets),
        "--url",
        url,
    )

    assert result.exit_code == 2 and "no partition 'profile_photos/source=studio_optin/year=1999'" in result.output
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == files


def test_a_tampered_certificate_is_reported_by_ledger_verify(used):
    dataset, datasets, url, _ = used
    purge_partitions(str(dataset), [STUDIO_2025], dataset_config_path=str(datasets), ledger_url=url)
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE consent_purge SET retrain = '[]'")
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER consent_purge_no_update")
        db.execute("UPDATE consent_purge SET retrain = '[]'")  # hide the model to retrain

    verified = invoke("ledger", "verify", "--url", url)

    assert verified.exit_code == 1, verified.output
    assert f"  {PURGE.name} seq 1: edited (its content no longer matches its record_hash)" in verified.output
    assert invoke("audit", "--url", url).exit_code == 2  # the audit reads certificates only from a verified chain


def test_the_audit_reports_a_purged_partition_as_purged_not_changed(used):
    dataset, datasets, url, _ = used
    before = invoke("audit", "--url", url)
    assert before.exit_code == 1 and f"  REVOKED  {STUDIO_2025}" in before.output

    report = purge_partitions(str(dataset), [STUDIO_2025], dataset_config_path=str(datasets), ledger_url=url)
    result = invoke("audit", "--url", url)

    assert result.exit_code == 0, result.output  # purged findings alone do not fail the audit
    lines = result.output.splitlines()
    assert lines[0] == (
        "Consent audit CLEAN: 0 affected and 0 unverifiable of 2 used partition(s) in 1 usage record(s); "
        "1 DAG run(s), 1 training task(s), 2 model(s) flagged; 1 purged since use (retrain)"
    )
    assert any(line.startswith(f"  PURGED   {STUDIO_2025} for 'face_recognition_training'") for line in lines)
    assert f"deletion certificate(s) {report.purge_id} (consent_purge seq 1, " in result.output
    assert f"      used by run train_faces/{RUN}, task train_faces.train (model face-embedder-v1, outlet " in (
        result.output
    )
    with Ledger(url) as ledger:
        audited = audit_ledger(ledger)
    (purged,) = audited.purged
    assert (purged.partition_id, purged.purge_ids, purged.revoked_subjects) == (STUDIO_2025, [report.purge_id], [])
    assert purged.fingerprint == report.purged[0].fingerprint_before
    assert purged.fingerprint_now == report.purged[0].fingerprint_after
    assert {f.partition_id: f.status for f in audited.findings} == {STUDIO_2024: "ok", STUDIO_2025: "purged"}


def test_a_partition_changed_after_its_purge_is_changed_again(used):
    dataset, datasets, url, _ = used
    purge_partitions(str(dataset), [STUDIO_2025], dataset_config_path=str(datasets), ledger_url=url)
    data_file = dataset / "source=studio_optin" / "year=2025" / "part-0.parquet"
    table = pq.read_table(data_file)
    pq.write_table(table.slice(1), data_file)  # re-delivered by someone else, no certificate

    with Ledger(url) as ledger:
        audited = audit_ledger(ledger)

    assert {f.partition_id: f.status for f in audited.findings} == {STUDIO_2024: "ok", STUDIO_2025: "changed"}
    assert audited.outcome == "unverifiable"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_purge_chain_is_appended_signed_verified_and_refuses_edits_on_each_backend(backend, tmp_path, request):

    url = f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    partition = {
        "id": STUDIO_2025,
        "uri": "file:///lake/profile_photos/source=studio_optin/year=2025",
        "files": ["part-0.parquet"],
        "rows_before": 10,
        "rows_removed": 2,
        "subjects": [subject_digest("s-1")],
        "fingerprint_before": "sha256:" + "1" * 64,
        "fingerprint_after": "sha256:" + "2" * 64,
    }
    content = {
        "requested_by": "cli:test",
        "dataset": "profile_photos",
        "root": "file:///lake/profile_photos",
        "revocation_list": "revoked.csv",
        "rows_removed": 2,
        "partitions": [partition],
        "retrain": [],
    }
    with Ledger(url) as ledger:
        ledger.record_purge({**content, "purge_id": "p-1"})
        ledger.record_purge({**content, "purge_id": "p-2"})
        first, second = ledger.purge_records()  # read back through the whole chain's verification
    assert (first.seq, first.purge_id, second.seq, second.prev_hash) == (1, "p-1", 2, first.record_hash)
    assert first.partitions[0].model_dump() == partition
    refused_by_the_database(
        url,
        "UPDATE consent_purge SET retrain = '[]'",
        "DELETE FROM consent_purge WHERE seq = 2",
        "UPDATE consent_purge_head SET last_seq = 1",
        "DELETE FROM consent_purge_head",
        *(["TRUNCATE consent_purge"] if backend == "postgresql" else []),
    )


def test_a_file_changed_while_it_is_purged_is_not_overwritten(used, monkeypatch):
    import airflow_consent.purge as purge

    dataset, datasets, url, _ = used
    data_file = dataset / "source=studio_optin" / "year=2025" / "part-0.parquet"
    certify = purge._certify
    delivered: list[bytes] = []

    def delivered_meanwhile(*args, **kwargs):
        seq = certify(*args, **kwargs)
        pq.write_table(pq.read_table(data_file).slice(1), data_file)  # a provider re-delivers it meanwhile
        delivered.append(data_file.read_bytes())
        return seq

    monkeypatch.setattr(purge, "_certify", delivered_meanwhile)
    with pytest.raises(purge.PurgeFailed, match="changed since the purge read it; left as it is"):
        purge_partitions(str(dataset), [STUDIO_2025], dataset_config_path=str(datasets), ledger_url=url)

    assert [data_file.read_bytes()] == delivered  # the re-delivery is kept, not overwritten
    assert set(subjects(data_file)) & set(_revoked(datasets))
    with Ledger(url) as ledger:
        audited = audit_ledger(ledger)
    assert {f.partition_id: f.status for f in audited.findings}[STUDIO_2025] == "changed"


def _revoked(datasets: Path) -> list[str]:
    return [line.split(",")[0] for line in (datasets / "revoked_subjects.csv").read_text().splitlines()[1:]]
