"""Usage records and the re-audit: which runs, training tasks and models used data now revoked or denied.

Real parts throughout: the real gate (local OPA, shipped policies, the example's evidence
configuration and Great Expectations suite) over real Parquet files, a real SQLite ledger, the
clearance writing usage records as a training task starts; end to end, the shipped example DAG
through a DagBag and ``dag.test()``, then ``airflow-consent audit`` and ``ConsentAuditOperator``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dag_runs import run_dag, xcom
from test_clearance import (
    APPROVED,
    RUN,
    STUDIO_2024,
    STUDIO_2025,
    approval,
    approved_training_task,
    context,
    run_gate,
    training_dag,
    triggered_by,
)
from typer.testing import CliRunner

from airflow_consent.audit import audit_ledger, parse_since
from airflow_consent.clearance import ClearanceDenied, enforce_clearance
from airflow_consent.cli import app
from airflow_consent.errors import ConsentConfigurationError, LedgerError, LedgerTampered
from airflow_consent.ledger import Ledger
from airflow_consent.sample_data import REVOKED_SUBJECTS, generate_profile_photos, remove_subjects

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "train_face_recognition"
PURPOSE = "face_recognition_training"
MODEL_OUTLET = "model://face-embedder/"  # as Airflow normalises Asset(uri="model://face-embedder")


def revoke(datasets: Path, subject: str) -> None:
    """Add ``subject`` to the revocation list of the evidence configuration in ``datasets``."""
    with (datasets / "revoked_subjects.csv").open("a", encoding="utf-8") as out:
        out.write(f"{subject},2026-11-27T09:00:00Z,consent withdrawn\n")


def subjects_of(partition_dir: Path) -> set[str]:
    return set(pq.read_table(partition_dir / "part-0.parquet", columns=["subject_id"]).column(0).to_pylist())


def a_subject_of(partition_dir: Path, *, not_in: Path | None = None) -> str:
    """A subject with rows in ``partition_dir`` (and none in ``not_in``)."""
    return min(subjects_of(partition_dir) - (subjects_of(not_in) if not_in else set()))


def audit(*arguments: str):
    return CliRunner().invoke(app, ["audit", *arguments])


# --- the example, end to end ---------------------------------------------------------------------

AUDIT_DAG = """
from airflow.sdk import DAG
from airflow_consent.operators.audit import ConsentAuditOperator

with DAG(dag_id="consent_audit", schedule="@daily", catchup=False):
    ConsentAuditOperator(task_id="audit", purpose="face_recognition_training", retries=0)
"""


def test_the_example_audit_names_the_run_task_and_model_that_used_a_subject_revoked_since(
    airflow_db, tmp_path, monkeypatch, opa_binary
):
    dags = tmp_path / "dags"  # the shipped example DAG and its evidence configuration, with a list of our own
    shutil.copytree(REPO / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    remove_subjects(dataset, REVOKED_SUBJECTS)
    monkeypatch.setenv("AIRFLOW_CONSENT_SAMPLE_DATA", str(tmp_path / "data"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)

    states, dag_run = run_dag(dags, DAG_ID)

    assert states == {"consent_gate": "success", "train": "success"}
    decision_id = xcom(dag_run, "consent_gate", key="gate_report")["decision_id"]
    with Ledger(url) as ledger:
        usages, head = ledger.usage_records()
    # the clearance before train started, and again when train read its data (approved_dataset)
    assert [(u.dag_id, u.run_id, u.task_id, u.map_index) for u in usages] == [(DAG_ID, dag_run.run_id, "train", -1)] * 2
    assert {(p.id, p.gate, tuple(p.decision_ids)) for p in usages[0].partitions} == {
        (STUDIO_2024, "consent_gate", (decision_id,)),
        (STUDIO_2025, "consent_gate", (decision_id,)),
    }
    assert usages[0].gates["consent_gate"]["dataset_config_path"] == str(dags / "datasets")
    assert head.seq == 2

    clean = audit()
    assert clean.exit_code == 0, clean.output
    assert clean.output.startswith("Consent audit CLEAN: 0 affected and 0 unverifiable of 2 used partition(s)")

    studio = dataset / "source=studio_optin"
    subject = a_subject_of(studio / "year=2024", not_in=studio / "year=2025")  # subjects sit for several years
    revoke(dags / "datasets", subject)
    affected = audit()

    assert affected.exit_code == 1, affected.output
    lines = affected.output.splitlines()
    assert lines[0] == (
        "Consent audit AFFECTED: 1 affected and 0 unverifiable of 2 used partition(s) in 2 usage "
        "record(s); 1 DAG run(s), 1 training task(s), 2 model(s) flagged"
    )
    assert lines[1].startswith(f"  REVOKED  {STUDIO_2024} for {PURPOSE!r}, used with fingerprint sha256:")
    assert (
        f"      used by run {DAG_ID}/{dag_run.run_id}, task {DAG_ID}.train (model face-embedder-v1, outlet "
        f"model://face-embedder-v1/; decision {decision_id})" in lines
    )
    assert any(line.startswith(f"  OK       {STUDIO_2025}") for line in lines)
    assert (
        f"  subject {subject}: in {STUDIO_2024}; runs {DAG_ID}/{dag_run.run_id}; tasks {DAG_ID}.train; models "
        "face-embedder-v1, model://face-embedder-v1/" in lines
    )

    report = json.loads(audit("--json").output)
    assert report["outcome"] == "affected"
    (revoked,) = [f for f in report["findings"] if f["status"] == "revoked"]
    assert (revoked["partition_id"], revoked["revoked_subjects"]) == (STUDIO_2024, [subject])
    assert revoked["revoked_rows"] >= 1
    assert {v["rule_id"] for v in revoked["today"]["violations"]} == {"EVIDENCE-002"}  # the gate agrees
    assert report["subjects"] == [
        {
            "subject_id": subject,
            "partitions": [STUDIO_2024],
            "runs": [f"{DAG_ID}/{dag_run.run_id}"],
            "tasks": [f"{DAG_ID}.train"],
            "models": ["face-embedder-v1", "model://face-embedder-v1/"],
        }
    ]

    audit_dags = tmp_path / "audit_dags"
    audit_dags.mkdir()
    (audit_dags / "consent_audit.py").write_text(textwrap.dedent(AUDIT_DAG))
    states, audit_run = run_dag(audit_dags, "consent_audit")

    assert states == {"audit": "failed"}  # an affected audit fails its task, for alerting
    pushed = xcom(audit_run, "audit", key="audit_report")
    assert pushed["outcome"] == "affected" and pushed["subjects"][0]["subject_id"] == subject
    with Ledger(url) as ledger:
        audits = ledger.audit_records()
        verified = ledger.verify()
    assert [(a.outcome, a.affected, a.purpose) for a in audits] == [
        ("clean", 0, None),
        ("affected", 1, None),
        ("affected", 1, None),
        ("affected", 1, PURPOSE),
    ]
    assert audits[-1].requested_by == "user:dag_test" and audits[-1].usage_head == str(head)  # dag.test() triggers
    assert audits[1].result["findings"][0]["revoked_subjects"] == [subject]
    assert verified.ok  # the decision chain is untouched by the usage and audit chains


# --- usage records -------------------------------------------------------------------------------


@pytest.fixture
def gated(tmp_path, monkeypatch, opa_binary):
    """A gate with the example's evidence configuration (a copy) allowed studio_optin 2024 and 2025 in
    run RUN; yields (training task with a model outlet, dataset dir, configuration dir, ledger URL)."""
    from airflow.sdk import Asset

    datasets = tmp_path / "datasets"
    shutil.copytree(REPO / "dags" / "datasets", datasets)
    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    remove_subjects(dataset, REVOKED_SUBJECTS)
    dag = training_dag(dataset, dataset_config_path=str(datasets), model="face-embedder-v1")
    task = dag.task_dict["train"]
    task.outlets = [Asset("face_model", uri="model://face-embedder")]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert [p["id"] for p in run_gate(task, url, monkeypatch)] == [STUDIO_2024, STUDIO_2025]
    yield task, dataset, datasets, url


def test_a_cleared_training_task_records_its_partitions_decisions_gates_and_models(gated):
    task, dataset, datasets, url = gated

    enforce_clearance(task, context(task))  # the [consent] ledger, as in a worker

    with Ledger(url) as ledger:
        (usage,), _ = ledger.usage_records()
        (decision_id,) = {r.decision_id for r in ledger.records()}
    assert (usage.dag_id, usage.run_id, usage.task_id, usage.map_index, usage.try_number) == (
        "train_faces",
        RUN,
        "train",
        -1,
        None,
    )
    assert usage.outlets == [MODEL_OUTLET]
    assert [(p.id, p.dataset, p.root, p.keys, p.decision_ids) for p in usage.partitions] == [
        (STUDIO_2024, "profile_photos", str(dataset), {"source": "studio_optin", "year": "2024"}, [decision_id]),
        (STUDIO_2025, "profile_photos", str(dataset), {"source": "studio_optin", "year": "2025"}, [decision_id]),
    ]
    assert usage.gates == {
        "consent_gate": {
            "opa_conn_id": None,
            "policy_path": None,
            "entrypoint": None,
            "enforcement": None,
            "dataset_config_path": str(datasets),
        }
    }
    assert usage.signature.startswith("hmac-sha256:")


def test_a_use_that_cannot_be_recorded_fails_the_training_task_closed(gated):
    task, _, _, url = gated
    enforce_clearance(task, context(task))  # creates the usage chain
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("CREATE TRIGGER full BEFORE INSERT ON consent_usage BEGIN SELECT RAISE(ABORT, 'disk full'); END")

    with pytest.raises(LedgerError, match="could not append to the consent_usage chain .*disk full") as caught:
        enforce_clearance(task, context(task))

    assert not isinstance(caught.value, ClearanceDenied)  # broken, not refused: the task is retried


def test_the_usage_chain_is_append_only_signed_and_verified_before_an_audit(gated):
    task, _, _, url = gated
    enforce_clearance(task, context(task))
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE consent_usage SET outlets = '[]'")
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER consent_usage_no_update")
        db.execute("UPDATE consent_usage SET outlets = '[]'")  # hide the model the task produced

    with Ledger(url) as ledger, pytest.raises(LedgerTampered, match="consent_usage seq 1: edited"):
        audit_ledger(ledger)
    broken = audit("--url", url)
    assert broken.exit_code == 2 and "consent_usage seq 1: edited" in broken.output
    verified = CliRunner().invoke(app, ["ledger", "verify", "--url", url])
    assert verified.exit_code == 1 and "  consent_usage seq 1: edited" in verified.output


def test_a_usage_row_written_by_anyone_but_the_clearance_is_refused(gated):
    from airflow_consent.ledger.usage import USAGE

    task, _, _, url = gated
    enforce_clearance(task, context(task))
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM consent_usage").fetchone())
        forged = {**row, "seq": 2, "run_id": "manual__forged", "prev_hash": row["record_hash"]}
        forged["record_hash"] = USAGE.record_hash(forged)  # a correct hash, the head moved: only the key is missing
        db.execute(
            f"INSERT INTO consent_usage ({', '.join(forged)}) VALUES ({', '.join('?' * len(forged))})",
            list(forged.values()),
        )
        db.execute("UPDATE consent_usage_head SET last_seq = 2, last_hash = ?", (forged["record_hash"],))

    with Ledger(url) as ledger, pytest.raises(LedgerTampered, match="seq 2: its signature does not match its content"):
        ledger.usage_records()


# --- what the audit finds -----------------------------------------------------------------------


def test_a_policy_verdict_changed_since_training_is_denied_without_the_bytes_changing(gated):
    task, dataset, _, url = gated
    enforce_clearance(task, context(task))
    manifest = dataset / "source=studio_optin" / "year=2025" / "_consent_manifest.json"
    claims = json.loads(manifest.read_text())
    claims["consent"]["withdrawn_at"] = "2026-01-01T00:00:00Z"  # the manifest is not fingerprinted: same bytes
    manifest.write_text(json.dumps(claims))

    with Ledger(url) as ledger:
        report = audit_ledger(ledger)

    assert report.outcome == "affected"
    statuses = {f.partition_id: f.status for f in report.findings}
    assert statuses == {STUDIO_2024: "ok", STUDIO_2025: "denied"}
    (denied,) = report.affected
    assert denied.fingerprint_now == denied.fingerprint
    assert "CONSENT-004" in {v.rule_id for v in denied.today.violations}
    assert [(u.task, u.models, u.outlets) for u in denied.uses] == [
        ("train_faces.train", ["face-embedder-v1"], [MODEL_OUTLET])
    ]


def test_a_partition_purged_or_deleted_since_its_use_cannot_be_rechecked(gated):
    task, dataset, _, url = gated
    enforce_clearance(task, context(task))
    remove_subjects(dataset, [a_subject_of(dataset / "source=studio_optin" / "year=2025")])  # re-delivered
    shutil.rmtree(dataset / "source=studio_optin" / "year=2024")

    result = audit("--url", url)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Consent audit UNVERIFIABLE: 0 affected and 2 unverifiable of 2 used partition(s)")
    assert f"  MISSING  {STUDIO_2024}" in result.output
    assert f"  CHANGED  {STUDIO_2025}" in result.output and ", on disk now sha256:" in result.output
    assert "re-delivered since it was used" in result.output


def test_the_purpose_and_since_filters_choose_the_uses_audited(gated):
    task, dataset, datasets, url = gated
    enforce_clearance(task, context(task))
    revoke(datasets, a_subject_of(dataset / "source=studio_optin" / "year=2024"))

    assert audit("--url", url, "--purpose", PURPOSE).exit_code == 1
    other = audit("--url", url, "--purpose", "ad_targeting")
    assert (
        other.exit_code == 0 and "of 0 used partition(s) in 0 usage record(s), purpose 'ad_targeting'" in other.output
    )
    later = audit("--url", url, "--since", "2999-01-01")
    assert later.exit_code == 0 and "in 0 usage record(s) since 2999-01-01T00:00:00+00:00" in later.output
    assert audit("--url", url, "--since", "yesterday").exit_code == 2


def test_a_task_cleared_by_an_approved_asset_event_is_audited_under_the_deployments_settings(tmp_path, opa_binary):
    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    task = approved_training_task()
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        extra = approval(dataset, ledger)
        enforce_clearance(task, triggered_by(task, extra), ledger=ledger)
        (usage,), _ = ledger.usage_records()
        report = audit_ledger(ledger)

    (used,) = usage.partitions
    assert (used.id, used.gate, used.decision_ids) == (STUDIO_2024, APPROVED, [extra["decision_id"]])
    assert usage.gates == {APPROVED: None}  # the gate is in another DAG: the audit asks with [consent] alone
    assert [(f.partition_id, f.status) for f in report.findings] == [(STUDIO_2024, "ok")]


def test_the_audit_operator_checks_its_since_when_the_dag_is_parsed():
    from airflow_consent.operators.audit import ConsentAuditOperator

    with pytest.raises(ConsentConfigurationError, match="audit: since: 'last week' is not an ISO 8601"):
        ConsentAuditOperator(task_id="audit", since="last week")
    assert ConsentAuditOperator(task_id="audit", since="{{ ds }}").since == "{{ ds }}"  # checked once rendered
    assert parse_since("2026-11-27").isoformat() == "2026-11-27T00:00:00+00:00"


# --- the chains on both backends ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_usage_and_audit_chains_are_appended_signed_and_refuse_edits_on_each_backend(backend, tmp_path, request):
    from airflow_consent.ledger.usage import UsedPartition

    url = f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    used = UsedPartition(
        id=STUDIO_2024,
        uri="file:///lake/profile_photos/source=studio_optin/year=2024",
        fingerprint="sha256:" + "1" * 64,
        dataset="profile_photos",
        root="file:///lake/profile_photos",
        keys={"source": "studio_optin", "year": "2024"},
        gate="consent_gate",
        decision_ids=["d-1"],
    )
    with Ledger(url) as ledger:
        for run in ("run-1", "run-2"):
            ledger.record_usage(
                dag_id="train_faces",
                run_id=run,
                task_id="train",
                map_index=3,
                try_number=1,
                partitions=[used],
                gates={"consent_gate": None},
                outlets=[MODEL_OUTLET],
            )
        ledger.record_audit(
            {
                "audit_id": "a-1",
                "requested_by": "cli:test",
                "purpose": None,
                "since": None,
                "usage_head": "2:sha256:" + "0" * 64,
                "outcome": "clean",
                "affected": 0,
                "result": {"findings": []},
            }
        )
        usages, head = ledger.usage_records()
        (recorded,) = ledger.audit_records()
        assert ledger.records() == []  # the decision chain is apart
    assert [(u.seq, u.run_id, u.map_index, u.partitions) for u in usages] == [
        (1, "run-1", 3, [used]),
        (2, "run-2", 3, [used]),
    ]
    assert head.seq == 2 and head.hash == usages[1].record_hash and usages[1].prev_hash == usages[0].record_hash
    assert (recorded.seq, recorded.audit_id, recorded.outcome, recorded.result) == (1, "a-1", "clean", {"findings": []})
    refused_by_the_database(
        url,
        "UPDATE consent_usage SET outlets = '[]'",
        "DELETE FROM consent_usage WHERE seq = 2",
        "UPDATE consent_usage_head SET last_seq = 1",
        "DELETE FROM consent_audit_head",
        "UPDATE consent_audit SET outcome = 'clean'",
        *(["TRUNCATE consent_usage"] if backend == "postgresql" else []),
    )


def refused_by_the_database(url: str, *statements: str) -> None:
    """Each statement, run on its own, is refused by the ledger's append-only triggers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    from airflow_consent.ledger.store import normalize_url

    engine = create_engine(normalize_url(url))
    for statement in statements:
        with (
            pytest.raises(DBAPIError, match="append-only|only moves forward|cannot be deleted"),
            engine.begin() as conn,
        ):
            conn.execute(text(statement))
    engine.dispose()


def test_the_usage_and_audit_chains_export_as_json_lines(gated):
    from typer.testing import CliRunner

    from airflow_consent.cli import app

    task, _, _, url = gated
    enforce_clearance(task, context(task))

    usage = CliRunner().invoke(app, ["ledger", "export", "--url", url, "--chain", "usage"])
    assert usage.exit_code == 0, usage.output
    (line,) = usage.output.splitlines()
    exported = json.loads(line)
    assert (exported["task_id"], exported["outlets"]) == ("train", [MODEL_OUTLET])
    assert [p["id"] for p in exported["partitions"]] == [STUDIO_2024, STUDIO_2025]
    assert CliRunner().invoke(app, ["ledger", "export", "--url", url, "--chain", "audit"]).output == ""
    assert CliRunner().invoke(app, ["ledger", "export", "--url", url, "--chain", "purge"]).output == ""
    refused = CliRunner().invoke(app, ["ledger", "export", "--url", url, "--chain", "usage", "--dag-id", "x"])
    assert refused.exit_code == 2 and "select decisions only" in refused.output
    assert CliRunner().invoke(app, ["ledger", "export", "--url", url, "--chain", "models"]).exit_code == 2
