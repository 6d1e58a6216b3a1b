"""The decision ledger on SQLite and on a real PostgreSQL: records, clearance lookups, and tampering
of each kind detected by ``verify`` (and what only an anchor kept elsewhere can detect)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from airflow_consent.errors import ConsentConfigurationError, LedgerError, LedgerTampered
from airflow_consent.ledger import GENESIS, Head, Ledger, input_digest
from airflow_consent.ledger.keys import LedgerKey, deployment_key
from airflow_consent.ledger.records import record_hash
from airflow_consent.ledger.store import normalize_url
from airflow_consent.models import DecidedPartition, GateReport, GateRequest, Requester, Violation

DIGEST = input_digest({"request": {}, "partitions": []})
VIOLATION = Violation(
    rule_id="CONSENT-001",
    title="Purpose not consented",
    severity="critical",
    message="face_recognition_training is not among the consented purposes",
    remediation="collect consent",
    regulation=["GDPR Art. 6(1)(a)"],
)


def request(dag_id: str = "train", run_id: str = "run-1") -> GateRequest:
    return GateRequest(
        purpose="face_recognition_training",
        model="face-v2",
        dag_id=dag_id,
        run_id=run_id,
        task_id="consent_gate",
        requested_by=Requester(kind="dag", id=dag_id),
        evaluated_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    )


def report(*partitions: tuple[str, bool, str]) -> GateReport:
    """A gate report of (partition id, allow, fingerprint)."""
    decided = [
        DecidedPartition(
            id=pid, uri=f"/data/{pid}", fingerprint=fp, allow=allow, violations=[] if allow else [VIOLATION]
        )
        for pid, allow, fp in partitions
    ]
    return GateReport(
        decision_id=str(uuid.uuid4()),
        allow=all(p.allow for p in decided),
        purpose="face_recognition_training",
        entrypoint="consent/main/decision",
        engine="local opa",
        opa_version="1.22.3",
        policy_revision="sha256:" + "ab" * 32,
        evaluated_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        duration_ms=3.5,
        partitions=decided,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url) -> Ledger:
    with Ledger(ledger_url) as opened:
        yield opened


def six_records(ledger: Ledger) -> None:
    """seq 1..6: three evaluations of partitions a (allowed) and b (denied)."""
    for n in range(3):
        ledger.record(
            report(("ds/a", True, f"sha256:a{n}"), ("ds/b", False, "sha256:b")),
            request(),
            mode="deny",
            input_digest=DIGEST,
        )


def tamper(url: str, *statements: str | Callable) -> None:
    """Change the database as someone with DDL rights would: triggers off, then raw SQL (or a callable)."""
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for name in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars().all():
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            conn.exec_driver_sql("ALTER TABLE consent_ledger DISABLE TRIGGER USER")
            conn.exec_driver_sql("ALTER TABLE consent_ledger_head DISABLE TRIGGER USER")
        for statement in statements:
            statement(conn) if callable(statement) else conn.execute(text(statement))
    engine.dispose()


def row(conn, seq: int) -> dict:
    found = dict(conn.execute(text("SELECT * FROM consent_ledger WHERE seq = :s"), {"s": seq}).one()._mapping)
    return {**found, "allow": bool(found["allow"])}  # raw SQL on SQLite gives 0/1


def rehash(conn, seq: int, *, key: LedgerKey | None = None, **changes) -> str:
    """Rewrite record ``seq`` with ``changes`` and a record_hash that matches them, signed with ``key``
    when the forger holds it; return the new hash."""
    values = {**row(conn, seq), **changes}
    values["record_hash"] = record_hash(values)
    if key is not None:
        values["signature"] = key.sign(values["record_hash"])
    sets = ", ".join(f"{k} = :{k}" for k in values if k != "seq")
    conn.execute(text(f"UPDATE consent_ledger SET {sets} WHERE seq = :seq"), values)
    return values["record_hash"]


# --- recording and reading -----------------------------------------------------------------------


def test_records_one_chained_record_per_partition_with_every_field(ledger):
    gate_report = report(("ds/a", True, "sha256:aa"), ("ds/b", False, "sha256:bb"))

    appended = ledger.record(gate_report, request(), mode="deny", input_digest=DIGEST)

    assert appended == ledger.records()
    first, second = appended
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.record_hash
    key = deployment_key(None, create=False)
    assert [key.problem(r.record_hash, r.signature) for r in appended] == [None, None]
    assert second.model_dump(exclude={"seq", "recorded_at", "prev_hash", "record_hash", "signature"}) == {
        "decision_id": gate_report.decision_id,
        "evaluated_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        "dag_id": "train",
        "run_id": "run-1",
        "task_id": "consent_gate",
        "purpose": "face_recognition_training",
        "model": "face-v2",
        "requested_by": "dag:train",
        "partition_id": "ds/b",
        "partition_uri": "/data/ds/b",
        "fingerprint": "sha256:bb",
        "engine": "local opa",
        "entrypoint": "consent/main/decision",
        "opa_version": "1.22.3",
        "policy_revision": "sha256:" + "ab" * 32,
        "input_digest": DIGEST,
        "mode": "deny",
        "allow": False,
        "violations": [VIOLATION.model_dump(mode="json")],
    }
    assert second.recorded_at.tzinfo is not None
    assert ledger.verify().ok and ledger.head() == Head(2, second.record_hash)


def test_allowed_fingerprints_follow_the_latest_decision_of_the_run(ledger):
    ledger.record(
        report(("ds/a", True, "sha256:a1"), ("ds/b", True, "sha256:b1"), ("ds/c", False, "sha256:c1")),
        request(),
        mode="deny",
        input_digest=DIGEST,
    )
    ledger.record(
        report(("ds/a", True, "sha256:a2"), ("ds/b", False, "sha256:b2"), ("ds/c", True, "sha256:c2")),
        request(),
        mode="deny",
        input_digest=DIGEST,
    )
    ledger.record(report(("ds/d", True, "sha256:d")), request(run_id="run-2"), mode="deny", input_digest=DIGEST)

    assert ledger.allowed_fingerprints("train", "run-1") == {"ds/a": "sha256:a2", "ds/c": "sha256:c2"}
    assert ledger.allowed_fingerprints("train", "run-2") == {"ds/d": "sha256:d"}
    assert ledger.allowed_fingerprints("train", "no-such-run") == {}
    assert ledger.allowed_fingerprints("other", "run-1") == {}


def test_records_filter_and_limit_keep_chain_order(ledger):
    six_records(ledger)
    ledger.record(
        report(("ds/z", True, "sha256:z")), request(dag_id="other", run_id="run-9"), mode="warn", input_digest=DIGEST
    )

    assert [r.seq for r in ledger.records(limit=3)] == [5, 6, 7]
    assert [r.seq for r in ledger.records(dag_id="train", limit=2)] == [5, 6]
    assert [r.seq for r in ledger.records(dag_id="other")] == [7]
    assert [r.seq for r in ledger.records(run_id="run-1")] == [1, 2, 3, 4, 5, 6]
    assert [r.seq for r in ledger.iter_records()] == list(range(1, 8))


def test_an_absent_ledger_reads_as_empty_but_does_not_verify(ledger):
    """Nothing to read is nothing allowed; but "verified OK" of a mistyped URL would hide a lost ledger."""
    assert ledger.records() == []
    assert ledger.allowed_fingerprints("train", "run-1") == {}
    assert ledger.head() == Head(0, GENESIS)
    with pytest.raises(LedgerError, match="there is no consent ledger at .*: nothing was verified"):
        ledger.verify()


def test_a_report_without_partitions_appends_nothing(ledger):
    assert ledger.record(report(), request(), mode="deny", input_digest=DIGEST) == []
    assert ledger.verify().checked == 0


def test_the_same_decision_cannot_be_recorded_twice(ledger):
    gate_report = report(("ds/a", True, "sha256:a"))
    ledger.record(gate_report, request(), mode="deny", input_digest=DIGEST)
    with pytest.raises(LedgerError, match="could not append"):
        ledger.record(gate_report, request(), mode="deny", input_digest=DIGEST)
    assert ledger.verify().ok and ledger.verify().checked == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "", "input_digest": DIGEST}, "mode"),
        ({"mode": "deny", "input_digest": ""}, "input_digest"),
        ({"mode": "deny", "input_digest": "md5:00"}, "input_digest"),
    ],
)
def test_bad_record_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Ledger(f"sqlite:///{tmp_path}/l.db").record(report(("ds/a", True, "sha256:a")), request(), **kwargs)


def test_input_digest_is_canonical():
    assert input_digest({"b": [1, {"y": "é", "x": None}], "a": True}) == input_digest(
        {"a": True, "b": [1, {"x": None, "y": "é"}]}
    )
    assert input_digest({"a": 1}) != input_digest({"a": 2})
    assert input_digest({}).startswith("sha256:") and len(input_digest({})) == len(GENESIS)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_urls_are_configuration_errors(url):
    with pytest.raises(ConsentConfigurationError, match="ledger_url"):
        Ledger(url)


def test_postgres_urls_use_psycopg_3():
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_an_unreachable_database_is_a_ledger_error():
    with pytest.raises(LedgerError, match="could not append"):
        Ledger("postgresql://nobody@127.0.0.1:1/none").record(
            report(("ds/a", True, "sha256:a")), request(), mode="deny", input_digest=DIGEST
        )


def test_default_url_is_a_sqlite_file_in_airflow_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__CONSENT__LEDGER_URL", raising=False)
    from airflow.configuration import AIRFLOW_HOME

    assert Ledger().url == f"sqlite:///{AIRFLOW_HOME}/consent_ledger.db"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", f"sqlite:///{tmp_path}/x.db")
    assert Ledger().url == f"sqlite:///{tmp_path}/x.db"


# --- the database refuses edits ------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_ledger SET allow = true WHERE seq = 2",
        "DELETE FROM consent_ledger WHERE seq = 6",
        "UPDATE consent_ledger_head SET last_seq = 5",
        "DELETE FROM consent_ledger_head",
    ],
)
def test_triggers_refuse_updates_and_deletes(ledger, ledger_url, statement):
    six_records(ledger)
    engine = create_engine(normalize_url(ledger_url))
    with pytest.raises(DBAPIError, match="append-only|only moves forward|cannot be deleted"), engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()
    assert ledger.verify().ok


def test_postgres_refuses_truncate(postgres_url):
    with Ledger(postgres_url) as ledger:
        six_records(ledger)
    engine = create_engine(normalize_url(postgres_url))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("TRUNCATE consent_ledger"))
    engine.dispose()


# --- tampering, each kind ------------------------------------------------------------------------


def _swap_3_and_4(conn):
    for old, new in ((3, -3), (4, 3), (-3, 4)):
        conn.execute(text("UPDATE consent_ledger SET seq = :new WHERE seq = :old"), {"old": old, "new": new})


def _delete_3_and_renumber(conn):
    conn.execute(text("DELETE FROM consent_ledger WHERE seq = 3"))
    for seq in (4, 5, 6):
        conn.execute(text("UPDATE consent_ledger SET seq = :new WHERE seq = :old"), {"old": seq, "new": seq - 1})


def _insert_forged_4(conn):
    for seq in (6, 5, 4):
        conn.execute(text("UPDATE consent_ledger SET seq = :new WHERE seq = :old"), {"old": seq, "new": seq + 1})
    forged = {
        **row(conn, 3),
        "seq": 4,
        "decision_id": "forged",
        "allow": True,
        "violations": "[]",
        "prev_hash": row(conn, 3)["record_hash"],
    }
    forged["record_hash"] = record_hash(forged)
    columns = ", ".join(forged)
    conn.execute(text(f"INSERT INTO consent_ledger ({columns}) VALUES ({', '.join(':' + c for c in forged)})"), forged)
    last = row(conn, 7)
    conn.execute(text("UPDATE consent_ledger_head SET last_seq = 7, last_hash = :h"), {"h": last["record_hash"]})


def _append_forged_7(conn):
    forged = {**row(conn, 6), "seq": 7, "decision_id": "forged", "prev_hash": row(conn, 6)["record_hash"]}
    forged["record_hash"] = record_hash(forged)
    columns = ", ".join(forged)
    conn.execute(text(f"INSERT INTO consent_ledger ({columns}) VALUES ({', '.join(':' + c for c in forged)})"), forged)


FORGED = "its signature does not match its content: forged"  # a forger without the deployment's ledger key
TAMPERING = {
    "edited": (
        ["UPDATE consent_ledger SET allow = true, violations = '[]' WHERE seq = 4"],
        ["seq 4: edited (its content no longer matches its record_hash)"],
    ),
    "edited-and-rehashed": (
        [lambda conn: rehash(conn, 4, allow=True, violations="[]")],
        [
            f"seq 4: {FORGED}",
            "seq 5: chain broken: the record it was appended after is gone (seq 4 was edited and "
            "re-hashed, or a record was deleted and the rest renumbered)",
        ],
    ),
    "last-edited-and-rehashed": (
        [lambda conn: rehash(conn, 6, allow=True, violations="[]")],
        [f"seq 6: {FORGED}", "seq 6: edited and re-hashed (it no longer matches the ledger head)"],
    ),
    "deleted": (
        ["DELETE FROM consent_ledger WHERE seq = 3"],
        ["seq 3: deleted (missing from the sequence before seq 4)"],
    ),
    "deleted-last": (
        ["DELETE FROM consent_ledger WHERE seq = 6"],
        ["seq 6: deleted (the records end at seq 5 but the head is seq 6: truncated)"],
    ),
    "deleted-first": (
        ["DELETE FROM consent_ledger WHERE seq = 1"],
        ["seq 1: deleted (missing from the sequence before seq 2)"],
    ),
    "deleted-and-renumbered": (
        [_delete_3_and_renumber],
        [
            "seq 3: chain broken: the record it was appended after is gone (seq 2 was edited "
            "and re-hashed, or a record was deleted and the rest renumbered)",
            "seq 6: deleted (the records end at seq 5 but the head is seq 6: truncated)",
        ],
    ),
    "reordered": (
        [_swap_3_and_4],
        [
            "seq 3: reordered (it was appended after seq 4, which now comes later)",
            "seq 4: reordered (it was appended right after seq 2, not after seq 3)",
            "seq 5: reordered (it was appended right after seq 3, not after seq 4)",
        ],
    ),
    "inserted": ([_insert_forged_4], [f"seq 4: {FORGED}", "seq 4: inserted (seq 5 was appended right after seq 3)"]),
    "inserted-after-head": (
        [_append_forged_7],
        [f"seq 7: {FORGED}", "seq 7: inserted after the head (the head is seq 6)"],
    ),
    "head-deleted": (
        ["DELETE FROM consent_ledger_head"],
        ["the ledger head is missing (deleted); the records end at seq 6"],
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_detected_and_named_by_seq(ledger, ledger_url, kind):
    statements, problems = TAMPERING[kind]
    six_records(ledger)
    assert ledger.verify().ok

    tamper(ledger_url, *statements)

    result = ledger.verify()
    assert not result.ok
    assert result.problems == problems


@pytest.mark.parametrize("kind", ["edited", "edited-and-rehashed", "last-edited-and-rehashed", "deleted-last"])
def test_clearance_lookups_refuse_a_tampered_run(ledger, ledger_url, kind):
    six_records(ledger)
    tamper(ledger_url, *TAMPERING[kind][0])
    with pytest.raises(LedgerTampered, match="do not verify"):
        ledger.allowed_fingerprints("train", "run-1")


@pytest.mark.parametrize("kind", ["deleted-last", "inserted-after-head", "head-deleted"])
def test_appending_to_a_ledger_whose_tail_was_tampered_is_refused(ledger, ledger_url, kind):
    six_records(ledger)
    tamper(ledger_url, *TAMPERING[kind][0])
    with pytest.raises(LedgerTampered, match="refusing to append"):
        ledger.record(report(("ds/a", True, "sha256:a")), request(), mode="deny", input_digest=DIGEST)


def test_truncation_with_the_head_moved_back_is_caught_only_by_an_anchor(ledger, ledger_url):
    six_records(ledger)
    anchor = ledger.head()
    tamper(
        ledger_url,
        "DELETE FROM consent_ledger WHERE seq = 6",
        lambda conn: conn.execute(
            text("UPDATE consent_ledger_head SET last_seq = 5, last_hash = :h"), {"h": row(conn, 5)["record_hash"]}
        ),
    )

    assert ledger.verify().ok  # consistent in itself: undetectable from inside the database
    assert ledger.verify(anchor=anchor).problems == [
        f"seq 6: missing, but the anchor {anchor} says it existed (deleted or truncated)"
    ]


def test_a_tail_rewritten_by_a_holder_of_the_key_is_caught_only_by_an_anchor(ledger, ledger_url):
    six_records(ledger)
    anchor = Head(4, ledger.records()[3].record_hash)
    key = deployment_key(None, create=False)

    def rewrite_from_4(conn):
        previous = row(conn, 3)["record_hash"]
        for seq in (4, 5, 6):
            previous = rehash(conn, seq, key=key, allow=True, violations="[]", prev_hash=previous)
        conn.execute(text("UPDATE consent_ledger_head SET last_hash = :h"), {"h": previous})

    tamper(ledger_url, rewrite_from_4)

    assert ledger.verify().ok
    assert ledger.verify(anchor=anchor).problems == [
        f"seq 4: does not match the anchor {anchor} (the ledger was rewritten since)"
    ]
