"""Ledger signatures: only a holder of the deployment's ledger key appends records clearance accepts.

Each forgery here is one the hash chain alone lets through (the forger recomputes every hash and
moves the head forward); before records were signed, clearance cleared the training task on it.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from airflow_consent.clearance import check_clearance
from airflow_consent.cli import app
from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import ClearanceRefused, ConsentConfigurationError, LedgerError, LedgerTampered
from airflow_consent.ledger import Ledger
from airflow_consent.ledger.keys import KEY_FILE, LedgerKey, deployment_key
from airflow_consent.ledger.records import record_hash
from airflow_consent.models import DecidedPartition, GateReport, GateRequest
from airflow_consent.policies import policy_dir
from airflow_consent.sample_data import generate_profile_photos

PURPOSE = "face_recognition_training"
RUN = "manual__2026-01-01T00:00:00+00:00"
ENTRYPOINT = "consent/main/decision"
OTHER_KEY = LedgerKey(b"another deployment's secret", "test")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_profile_photos(tmp_path_factory.mktemp("signatures"), sources=("studio_optin",))


@pytest.fixture
def on_disk(dataset) -> dict[str, str]:
    return {p.id: fingerprint(p) for p in discover_partitions(str(dataset))}


def training_task(dataset, **gate_kwargs):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent.operators.consent import ConsentGateOperator

    with DAG(dag_id="train_faces", schedule=None, tags=["training"]) as dag:
        gate = ConsentGateOperator(task_id="consent_gate", datasets=[str(dataset)], purpose=PURPOSE, **gate_kwargs)
        gate >> EmptyOperator(task_id="train")
    return dag.task_dict["train"]


def context(task) -> dict:
    return {"run_id": RUN, "task": task, "params": task.dag.params}


def record(
    ledger: Ledger,
    verdicts: dict[str, tuple[bool, str]],
    *,
    purpose: str = PURPOSE,
    engine: str | None = None,
    entrypoint: str = ENTRYPOINT,
) -> None:
    """What the gate ``consent_gate`` of run RUN records: partition id -> (allow, fingerprint)."""
    now = datetime.now(UTC)
    request = GateRequest(purpose=purpose, dag_id="train_faces", run_id=RUN, task_id="consent_gate", evaluated_at=now)
    report = GateReport(
        decision_id=str(uuid.uuid4()),
        allow=all(a for a, _ in verdicts.values()),
        purpose=purpose,
        entrypoint=entrypoint,
        engine=engine or LocalOpaEngine().name,
        opa_version="1.22.3",
        policy_revision="sha256:0",
        evaluated_at=now,
        duration_ms=1.0,
        partitions=[
            DecidedPartition(id=pid, uri=f"file:///{pid}", fingerprint=fp, allow=allow, violations=[])
            for pid, (allow, fp) in verdicts.items()
        ],
    )
    ledger.record(report, request, mode="deny", input_digest="sha256:" + "0" * 64)


def insert_allows(db_file: Path, signature: str | LedgerKey | None) -> None:
    """As someone with write access to the database: copy each partition's latest record as a new
    allow, with every hash recomputed and the head moved, signed with ``signature`` (a key, a copied
    signature, or none)."""
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        seq, prev = db.execute("SELECT last_seq, last_hash FROM consent_ledger_head").fetchone()
        decision_id = str(uuid.uuid4())
        for last in db.execute("SELECT * FROM consent_ledger ORDER BY seq").fetchall():
            seq += 1
            row = {**dict(last), "seq": seq, "decision_id": decision_id, "allow": True, "prev_hash": prev}
            row["record_hash"] = prev = record_hash(row)
            row["signature"] = signature.sign(prev) if isinstance(signature, LedgerKey) else signature
            db.execute(
                f"INSERT INTO consent_ledger ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        db.execute("UPDATE consent_ledger_head SET last_seq = ?, last_hash = ?", (seq, prev))


# --- forged rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signed_with", "problem"),
    [
        (None, "seq 3 is unsigned: not appended by a consent gate"),
        ("copied", "seq 3: its signature does not match its content: forged"),
        (OTHER_KEY, f"seq 3: signed with key {OTHER_KEY.id}, not this deployment's key"),
    ],
)
def test_clearance_refuses_an_allow_written_into_the_database_without_the_key(
    tmp_path, dataset, on_disk, signed_with, problem
):
    task = training_task(dataset)
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record(ledger, {pid: (False, fp) for pid, fp in on_disk.items()})
        copied = ledger.records()[0].signature
        insert_allows(tmp_path / "ledger.db", copied if signed_with == "copied" else signed_with)

        assert ledger.verify().ok is False
        with pytest.raises(ClearanceRefused) as raised:
            check_clearance(task, context(task), ledger=ledger)
    assert [p.kind for p in raised.value.problems] == ["tampered"]
    assert problem in raised.value.problems[0].message
    assert "were not all appended by a consent gate of this deployment" in raised.value.problems[0].message


def test_the_same_forgery_signed_with_the_deployments_key_clears(tmp_path, dataset, on_disk):
    """The control: what the forgeries above lack is the signature, nothing else."""
    task = training_task(dataset)
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record(ledger, {pid: (False, fp) for pid, fp in on_disk.items()})
        insert_allows(tmp_path / "ledger.db", deployment_key(None, create=False))

        assert ledger.verify().ok
        assert {p.id for p in check_clearance(task, context(task), ledger=ledger)} == set(on_disk)


def test_verify_names_unsigned_and_mistyped_rows_and_which_key_checked_them(tmp_path, dataset, on_disk):
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger(url) as ledger:
        record(ledger, {pid: (True, fp) for pid, fp in on_disk.items()})
    insert_allows(tmp_path / "ledger.db", None)
    with sqlite3.connect(tmp_path / "ledger.db") as db:  # and one signed row whose allow is text, hashed as text
        db.row_factory = sqlite3.Row
        last = dict(db.execute("SELECT * FROM consent_ledger ORDER BY seq DESC LIMIT 1").fetchone())
        row = {
            **last,
            "seq": last["seq"] + 1,
            "decision_id": "typed",
            "allow": "true",
            "prev_hash": last["record_hash"],
        }
        row["record_hash"] = record_hash(row)
        row["signature"] = deployment_key(None, create=False).sign(row["record_hash"])
        db.execute(
            f"INSERT INTO consent_ledger ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
        )
        db.execute("UPDATE consent_ledger_head SET last_seq = ?, last_hash = ?", (row["seq"], row["record_hash"]))

    done = CliRunner().invoke(app, ["ledger", "verify", "--url", url])

    assert done.exit_code == 1, done.output
    assert "  seq 3: unsigned: not appended by a consent gate" in done.output
    assert "  seq 4: unsigned: not appended by a consent gate" in done.output
    assert "  consent ledger seq 5: not a record a gate writes: allow is 'true'" in done.output
    assert f"signatures: checked with key {deployment_key(None, create=False).id}" in done.output


def test_a_ledger_from_before_signatures_is_refused_with_what_to_do(tmp_path):
    db_file = tmp_path / "old.db"
    with Ledger(f"sqlite:///{db_file}") as ledger:
        ledger.head()  # nothing created by reading
        record(ledger, {"ds/a": (True, "sha256:a")})
    with sqlite3.connect(db_file) as db:
        db.execute("ALTER TABLE consent_ledger DROP COLUMN signature")
    with Ledger(f"sqlite:///{db_file}") as ledger:
        with pytest.raises(LedgerError, match="created before ledger records were signed.*new database"):
            ledger.latest_decisions("train_faces", RUN)
        with pytest.raises(LedgerError, match="created before ledger records were signed"):
            record(ledger, {"ds/a": (True, "sha256:a")})


# --- what the records are bound to -----------------------------------------------------------------


@pytest.mark.parametrize("forged", ["purpose", "engine", "entrypoint"])
def test_an_allow_for_another_purpose_engine_or_entrypoint_does_not_clear_the_gate(tmp_path, dataset, on_disk, forged):
    """Signed and under the gate's task id, but not what the gate asks: recorded by something else."""
    task = training_task(dataset)
    other = {
        "purpose": {"purpose": "ad_targeting"},
        "engine": {"engine": f"local opa ({tmp_path / 'permissive-copy'})"},
        "entrypoint": {"entrypoint": "consent/permissive/decision"},
    }[forged]
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record(ledger, {pid: (True, fp) for pid, fp in on_disk.items()}, **other)
        with pytest.raises(ClearanceRefused) as raised:
            check_clearance(task, context(task), ledger=ledger)

        record(ledger, {pid: (True, fp) for pid, fp in on_disk.items()})  # the gate, as it asks
        assert {p.id for p in check_clearance(task, context(task), ledger=ledger)} == set(on_disk)
    assert {p.kind for p in raised.value.problems} == {"not_bound"}
    assert f"gate 'consent_gate' asks for purpose {PURPOSE!r} of {LocalOpaEngine().name} at {ENTRYPOINT}" in str(
        raised.value
    )


def test_the_gates_engine_is_the_one_the_deployment_settings_give_it(tmp_path, dataset, on_disk, monkeypatch):
    """With ``[consent] policy_path`` set, a record by the shipped policies is another engine's."""
    shutil.copytree(policy_dir(), tmp_path / "org-policies")
    monkeypatch.setenv("AIRFLOW__CONSENT__POLICY_PATH", str(tmp_path / "org-policies"))
    task = training_task(dataset)
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record(ledger, {pid: (True, fp) for pid, fp in on_disk.items()})
        with pytest.raises(ClearanceRefused, match=r"of local opa \(.*org-policies\)"):
            check_clearance(task, context(task), ledger=ledger)
        record(
            ledger,
            {pid: (True, fp) for pid, fp in on_disk.items()},
            engine=LocalOpaEngine(policy_path=tmp_path / "org-policies").name,
        )
        assert {p.id for p in check_clearance(task, context(task), ledger=ledger)} == set(on_disk)


# --- the key -----------------------------------------------------------------------------------------


def test_without_a_secret_one_key_file_is_created_once_readable_by_its_owner_only(tmp_path, monkeypatch):
    import airflow.configuration

    monkeypatch.setattr(airflow.configuration, "AIRFLOW_HOME", str(tmp_path))
    assert deployment_key(None, create=False) is None  # reading never creates a key

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: deployment_key(None, create=True), range(16)))

    assert len({key.secret for key in keys}) == 1
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]  # no drafts left behind
    assert deployment_key(None, create=False).id == keys[0].id
    assert keys[0].source == str(tmp_path / KEY_FILE) and keys[0].secret.decode() not in repr(keys[0])


def test_the_secret_wins_and_every_machine_with_it_checks_the_others_records(tmp_path, monkeypatch):
    secret = "0123456789abcdef-shared-by-every-worker"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_SECRET", secret)
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger(url) as ledger:
        record(ledger, {"ds/a": (True, "sha256:a")})
    assert not (tmp_path / KEY_FILE).exists()
    with Ledger(url, key=LedgerKey(secret.encode(), "another worker")) as elsewhere:
        assert elsewhere.latest_decisions("train_faces", RUN)["ds/a"].passed
    with Ledger(url, key=OTHER_KEY) as other_deployment:
        with pytest.raises(LedgerTampered, match=f"signed with key .*, not this deployment's key {OTHER_KEY.id}"):
            other_deployment.latest_decisions("train_faces", RUN)


def test_bad_keys_are_configuration_errors(tmp_path, monkeypatch):
    import airflow.configuration

    with pytest.raises(ConsentConfigurationError, match="ledger_secret is 5 characters; use at least 16"):
        deployment_key("short", create=True)
    monkeypatch.setattr(airflow.configuration, "AIRFLOW_HOME", str(tmp_path))
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(ConsentConfigurationError, match="is not a consent ledger key"):
        deployment_key(None, create=True)


def test_a_machine_without_the_key_cannot_clear_and_says_what_to_set(tmp_path, monkeypatch):
    import airflow.configuration

    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger(url) as ledger:
        record(ledger, {"ds/a": (True, "sha256:a")})
    monkeypatch.setattr(airflow.configuration, "AIRFLOW_HOME", str(tmp_path / "another-machine"))
    with Ledger(url) as ledger:
        with pytest.raises(ConsentConfigurationError, match="no consent ledger key.*set \\[consent\\] ledger_secret"):
            ledger.latest_decisions("train_faces", RUN)
        assert ledger.verify().signatures == "not checked (no key)"
