"""An engine's answer is obeyed only when it is exactly the contract: a JSON boolean ``allow``, strings
where strings go, lists where lists go. ``"true"``, ``"yes"`` or ``1`` is not an allow, wherever it
comes from: the gate's check, a real ``opa eval`` running a policy that answers it, a REST server at
the network edge (sync and async), the deferrable sensor's trigger, a report read back from an event,
or a ledger row stored as ``'true'``. Answers of the wrong shape altogether are ``MalformedDecision``,
never a ``KeyError``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_clearance import RUN, context, training_dag
from test_engines import fake_opa, opa_hook

from airflow_consent.clearance import check_clearance
from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import ClearanceRefused, LedgerTampered, MalformedDecision, PolicyError, UndefinedDecision
from airflow_consent.gate import DatasetSpec, _check_decision, aevaluate_gate, collect_partitions, evaluate_gate
from airflow_consent.ledger import Ledger
from airflow_consent.ledger.keys import deployment_key
from airflow_consent.ledger.records import record_hash
from airflow_consent.models import DecidedPartition, GateReport, GateRequest
from airflow_consent.sample_data import generate_profile_photos
from airflow_consent.triggers.consent import ConsentPolicyTrigger

PURPOSE = "face_recognition_training"
STUDIO_2024 = "profile_photos/source=studio_optin/year=2024"
STUDIO_2025 = "profile_photos/source=studio_optin/year=2025"  # the partition every bad verdict is about

NON_BOOLEANS = ["true", "yes", 1, 0, "false", None, [], {}]
ALLOWED = {"allow": True, "violations": []}
VIOLATION = {
    "rule_id": "CONSENT-001",
    "title": "Purpose not consented",
    "severity": "critical",
    "message": "m",
    "remediation": "r",
    "regulation": ["GDPR Art. 6(1)(a)"],
}
# A denied verdict with one field of the wrong type, and the field the error must name.
WRONG_TYPES = {
    "violations as a string": ({"allow": False, "violations": "CONSENT-001"}, "violations"),
    "a violation as a string": ({"allow": False, "violations": ["CONSENT-001"]}, "violations.0"),
    "rule_id as a number": ({"allow": False, "violations": [{**VIOLATION, "rule_id": 1}]}, "violations.0.rule_id"),
    "an unknown severity": (
        {"allow": False, "violations": [{**VIOLATION, "severity": "urgent"}]},
        "violations.0.severity",
    ),
    "severity as a number": ({"allow": False, "violations": [{**VIOLATION, "severity": 1}]}, "violations.0.severity"),
    "regulation as a string": (
        {"allow": False, "violations": [{**VIOLATION, "regulation": "GDPR"}]},
        "violations.0.regulation",
    ),
    "message as a list": ({"allow": False, "violations": [{**VIOLATION, "message": ["m"]}]}, "violations.0.message"),
    "recoverable as a string": (
        {"allow": False, "violations": [{**VIOLATION, "recoverable": "no"}]},
        "violations.0.recoverable",
    ),
    "recoverable as a number": (
        {"allow": False, "violations": [{**VIOLATION, "recoverable": 0}]},
        "violations.0.recoverable",
    ),
}


def answer(verdict: dict = ALLOWED, overall: object = True) -> dict:
    """The entrypoint's answer for the studio partitions: 2024 allowed, 2025 given ``verdict``."""
    return {"allow": overall, "partitions": [{"id": STUDIO_2024, **ALLOWED}, {"id": STUDIO_2025, **verdict}]}


def request() -> GateRequest:
    return GateRequest(purpose=PURPOSE, evaluated_at=datetime(2026, 11, 26, tzinfo=UTC))


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Path:
    """Two partitions with valid manifests and no evidence configured: a lax policy would allow both."""
    return generate_profile_photos(tmp_path_factory.mktemp("studio"), sources=("studio_optin",))


@pytest.fixture(scope="module")
def inputs(studio):
    return collect_partitions([DatasetSpec(uri=str(studio))])


def assert_names_partition(raised: pytest.ExceptionInfo, field: str) -> None:
    assert f"partition {STUDIO_2025!r}: partitions.1.{field}:" in str(raised.value)


# --- the gate's check ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_a_partition_allow_that_is_not_a_json_boolean_is_malformed(inputs, value):
    with pytest.raises(MalformedDecision) as raised:
        _check_decision(answer({"allow": value, "violations": []}), inputs, "engine")
    assert_names_partition(raised, "allow")
    assert f"got {value!r}" in str(raised.value)


@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_an_overall_allow_that_is_not_a_json_boolean_is_malformed(inputs, value):
    with pytest.raises(MalformedDecision, match="contract") as raised:
        _check_decision(answer(overall=value), inputs, "engine")
    assert f"allow: Input should be a valid boolean, got {value!r}" in str(raised.value)


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_a_verdict_field_of_the_wrong_type_is_malformed(inputs, case):
    verdict, field = WRONG_TYPES[case]
    with pytest.raises(MalformedDecision) as raised:
        _check_decision(answer(verdict, overall=False), inputs, "engine")
    assert_names_partition(raised, field)


# --- a real opa eval running a policy that answers so --------------------------------------------

REGO = """package bad

decision := {{"allow": {overall}, "partitions": [_verdict(p.id) | some p in input.partitions]}}

_verdict(id) := object.union({{"id": id}}, {verdict}) if endswith(id, "year=2025")
else := {{"id": id, "allow": true, "violations": []}}
"""


def policies(root: Path, verdict: dict = ALLOWED, overall: object = True) -> Path:
    """A real Rego policy answering ``answer(verdict, overall)`` (JSON is Rego)."""
    root.mkdir()
    (root / "bad.rego").write_text(REGO.format(overall=json.dumps(overall), verdict=json.dumps(verdict)))
    return root


def evaluate_locally(studio: Path, policy_path: Path, opa_binary: Path):
    engine = LocalOpaEngine(policy_path=policy_path, opa_binary=opa_binary)
    return evaluate_gate(request(), [DatasetSpec(uri=str(studio))], engine, entrypoint="bad/decision")


@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_local_opa_answering_a_non_boolean_partition_allow_fails_closed(studio, opa_binary, tmp_path, value):
    policy_path = policies(tmp_path / "policies", {"allow": value, "violations": []})
    with pytest.raises(MalformedDecision) as raised:
        evaluate_locally(studio, policy_path, opa_binary)
    assert_names_partition(raised, "allow")
    assert f"got {value!r}" in str(raised.value)


@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_local_opa_answering_a_non_boolean_overall_allow_fails_closed(studio, opa_binary, tmp_path, value):
    with pytest.raises(MalformedDecision) as raised:
        evaluate_locally(studio, policies(tmp_path / "policies", overall=value), opa_binary)
    assert f"allow: Input should be a valid boolean, got {value!r}" in str(raised.value)


@pytest.mark.parametrize("case", WRONG_TYPES)
def test_local_opa_answering_a_field_of_the_wrong_type_fails_closed(studio, opa_binary, tmp_path, case):
    verdict, field = WRONG_TYPES[case]
    with pytest.raises(MalformedDecision) as raised:
        evaluate_locally(studio, policies(tmp_path / "policies", verdict, overall=False), opa_binary)
    assert_names_partition(raised, field)


# --- a local "opa" that prints something else than opa eval's answer ------------------------------

OPA_EVAL_SHAPES = {
    "a list": "[]",
    "a string": '"allow"',
    "null": "null",
    "result empty": '{"result": []}',
    "result an object": '{"result": {"expressions": [{"value": true}]}}',
    "result a string": '{"result": "x"}',
    "result of a number": '{"result": [1]}',
    "result without expressions": '{"result": [{}]}',
    "expressions empty": '{"result": [{"expressions": []}]}',
    "expressions an object": '{"result": [{"expressions": {"value": true}}]}',
    "an expression without value": '{"result": [{"expressions": [{}]}]}',
    "an expression as a string": '{"result": [{"expressions": ["value"]}]}',
    "two results": '{"result": [{"expressions": [{"value": 1}]}, {"expressions": [{"value": 2}]}]}',
    "two expressions": '{"result": [{"expressions": [{"value": 1}, {"value": 2}]}]}',
    "not JSON": "Version: 1.22.3",
}


def fake_opa_binary(tmp_path: Path, stdout: str, exit_code: int = 0) -> Path:
    """An executable that reads its input like ``opa eval`` and prints ``stdout``."""
    script = tmp_path / "opa"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\nsys.stdout.write({stdout!r})\nsys.exit({exit_code})\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", OPA_EVAL_SHAPES)
def test_a_local_opa_printing_another_shape_is_malformed(tmp_path, shape, mode):
    engine = LocalOpaEngine(policy_path=tmp_path, opa_binary=fake_opa_binary(tmp_path, OPA_EVAL_SHAPES[shape]))
    with pytest.raises(MalformedDecision, match="opa eval"):
        if mode == "sync":
            engine.evaluate({}, "bad/decision")
        else:
            asyncio.run(engine.aevaluate({}, "bad/decision"))


def test_a_local_opa_printing_no_result_is_undefined(tmp_path):
    """What opa eval prints for an undefined query (kept: undefined, not malformed)."""
    engine = LocalOpaEngine(policy_path=tmp_path, opa_binary=fake_opa_binary(tmp_path, "{}"))
    with pytest.raises(UndefinedDecision, match="data.bad.decision is undefined"):
        engine.evaluate({}, "bad/decision")


@pytest.mark.parametrize("errors", ['"boom"', '["boom"]', '[{"message": "boom", "location": "here"}]'])
def test_a_failing_local_opa_with_errors_of_another_shape_is_a_policy_error(tmp_path, errors):
    stdout = f'{{"errors": {errors}}}'
    engine = LocalOpaEngine(policy_path=tmp_path, opa_binary=fake_opa_binary(tmp_path, stdout, exit_code=1))
    with pytest.raises(PolicyError, match="boom"):
        engine.evaluate({}, "bad/decision")


# --- an OPA server at the network edge -----------------------------------------------------------


def evaluate_over_rest(monkeypatch, studio: Path, result: object, mode: str, **extra):
    body = json.dumps({"result": result, "provenance": {"version": "1.22.3"}, **extra}).encode()
    with fake_opa(lambda: (200, body)) as url:
        hook = opa_hook(monkeypatch, url)
        specs = [DatasetSpec(uri=str(studio))]
        if mode == "sync":
            return evaluate_gate(request(), specs, hook, entrypoint="bad/decision")
        return asyncio.run(aevaluate_gate(request(), specs, hook, entrypoint="bad/decision"))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_a_server_answering_a_non_boolean_partition_allow_fails_closed(monkeypatch, studio, value, mode):
    with pytest.raises(MalformedDecision) as raised:
        evaluate_over_rest(monkeypatch, studio, answer({"allow": value, "violations": []}), mode)
    assert_names_partition(raised, "allow")
    assert f"got {value!r}" in str(raised.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_a_server_answering_a_non_boolean_overall_allow_fails_closed(monkeypatch, studio, value, mode):
    with pytest.raises(MalformedDecision) as raised:
        evaluate_over_rest(monkeypatch, studio, answer(overall=value), mode)
    assert f"allow: Input should be a valid boolean, got {value!r}" in str(raised.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "provenance",
    [
        "1.22.3",
        [],
        {"version": 1},
        {"bundles": []},
        {"bundles": {"consent": "rev-1"}},
        {"bundles": {"consent": {"revision": 7}}},
    ],
)
def test_a_server_answering_a_provenance_of_another_shape_is_malformed(monkeypatch, studio, provenance, mode):
    with pytest.raises(MalformedDecision, match="provenance"):
        evaluate_over_rest(monkeypatch, studio, answer(), mode, provenance=provenance)


@pytest.mark.parametrize("errors", ["boom", ["boom"], [{"message": "boom", "location": "here"}]])
def test_a_server_error_with_errors_of_another_shape_is_a_policy_error(monkeypatch, errors):
    with fake_opa(lambda: (500, json.dumps({"errors": errors}).encode())) as url:
        with pytest.raises(PolicyError, match="boom"):
            opa_hook(monkeypatch, url).evaluate({}, "bad/decision")


# --- the deferrable sensor: its trigger, and the report its event carries ------------------------


def first_event(trigger: ConsentPolicyTrigger) -> dict:
    async def run():
        return await asyncio.wait_for(anext(trigger.run()), 60)

    return asyncio.run(run()).payload


@pytest.mark.parametrize("value", NON_BOOLEANS)
def test_the_trigger_reports_a_non_boolean_allow_as_an_engine_error(studio, opa_binary, tmp_path, value):
    trigger = ConsentPolicyTrigger(
        request={"purpose": PURPOSE, "dag_id": "d", "run_id": "r", "task_id": "t"},
        datasets=[{"uri": str(studio), "name": None}],
        on_violation="fail",
        poke_interval=0.2,
        arguments={
            "entrypoint": "bad/decision",
            "policy_path": str(policies(tmp_path / "policies", {"allow": value, "violations": []})),
        },
    )
    event = first_event(trigger)
    assert event["status"] == "error"
    assert "policy decision malformed" in event["message"] and f"partition {STUDIO_2025!r}" in event["message"]


@pytest.fixture(scope="module")
def report_json(studio, opa_binary) -> dict:
    """A real gate report as the trigger sends it: both partitions allowed."""
    report = evaluate_gate(request(), [DatasetSpec(uri=str(studio))], LocalOpaEngine(opa_binary=opa_binary))
    assert report.allow
    return report.model_dump(mode="json")


def test_a_report_read_back_from_json_is_the_same_report(report_json):
    assert GateReport.model_validate(report_json).model_dump(mode="json") == report_json


@pytest.mark.parametrize("value", NON_BOOLEANS)
@pytest.mark.parametrize("where", ["report", "partition"])
def test_a_report_read_back_with_a_non_boolean_allow_is_refused(report_json, where, value):
    tampered = json.loads(json.dumps(report_json))
    (tampered if where == "report" else tampered["partitions"][1])["allow"] = value
    with pytest.raises(ValidationError, match="allow"):
        GateReport.model_validate(tampered)


@pytest.mark.parametrize("value", ["true", 1])
def test_the_sensor_refuses_an_event_whose_report_allows_with_a_non_boolean(report_json, tmp_path, value):
    from airflow_consent.sensors.consent import ConsentPolicySensor

    tampered = json.loads(json.dumps(report_json))
    tampered["allow"] = tampered["partitions"][1]["allow"] = value
    sensor = ConsentPolicySensor(task_id="wait", datasets=[str(tmp_path)], purpose=PURPOSE, deferrable=True)
    with pytest.raises(ValidationError, match=r"partitions\.1\.allow"):
        sensor.execute_complete({}, {"status": "passed", "report": tampered})


def test_a_decided_partition_is_strict_too():
    with pytest.raises(ValidationError, match="allow"):
        DecidedPartition(id="a", uri="/a", fingerprint="sha256:a", allow="true", violations=[])


# --- the ledger: a row whose allow is not a boolean ------------------------------------------------

STORED_NON_BOOLEANS = ["true", "yes", "false", 2, -1, 0.5]  # SQLAlchemy's Boolean reads each as True


def forge_decision(db_file: Path, partition_ids: list[str], stored_allow: object, hashed_allow: object) -> None:
    """Append, as someone with write access to the database and the deployment's ledger key would, a new
    decision allowing ``partition_ids`` with ``allow`` stored as ``stored_allow`` and each record hashed
    over ``hashed_allow`` and signed, chained onto the head, which moves forward: every link, signature
    and the head check out."""
    key = deployment_key(None, create=False)
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        seq, prev = db.execute("SELECT last_seq, last_hash FROM consent_ledger_head").fetchone()
        decision_id = str(uuid.uuid4())
        for partition_id in partition_ids:
            last = db.execute(
                "SELECT * FROM consent_ledger WHERE partition_id = ? ORDER BY seq DESC LIMIT 1", (partition_id,)
            ).fetchone()
            seq += 1
            row = {
                **dict(last),
                "seq": seq,
                "decision_id": decision_id,
                "allow": hashed_allow,
                "violations": "[]",
                "prev_hash": prev,
            }
            row["record_hash"] = prev = record_hash(row)
            row["signature"] = key.sign(row["record_hash"])
            row["allow"] = stored_allow
            db.execute(
                f"INSERT INTO consent_ledger ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
        db.execute("UPDATE consent_ledger_head SET last_seq = ?, last_hash = ?", (seq, prev))


def denied_report(partitions: dict[str, str]) -> GateReport:
    decided = [
        DecidedPartition(id=pid, uri=f"/data/{pid}", fingerprint=fp, allow=False, violations=[VIOLATION])
        for pid, fp in partitions.items()
    ]
    return GateReport(
        decision_id=str(uuid.uuid4()),
        allow=False,
        purpose=PURPOSE,
        entrypoint="consent/main/decision",
        engine="local opa",
        opa_version="1.22.3",
        policy_revision=None,
        evaluated_at=datetime(2026, 11, 26, tzinfo=UTC),
        duration_ms=1.0,
        partitions=decided,
    )


def record_denied(ledger: Ledger, partitions: dict[str, str], run_id: str = "run-1") -> None:
    gate_request = request().model_copy(update={"dag_id": "train_faces", "run_id": run_id, "task_id": "consent_gate"})
    ledger.record(denied_report(partitions), gate_request, mode="deny", input_digest="sha256:" + "0" * 64)


@pytest.mark.parametrize("hashed_as", ["read back", "stored"])
@pytest.mark.parametrize("stored", STORED_NON_BOOLEANS)
def test_a_ledger_row_whose_allow_is_not_a_boolean_never_passes(tmp_path, stored, hashed_as):
    """Hashed over ``True`` (what SQLAlchemy's Boolean reads back) or over the stored value itself."""
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record_denied(ledger, {"ds/a": "sha256:a"})
        forge_decision(tmp_path / "ledger.db", ["ds/a"], stored, True if hashed_as == "read back" else stored)

        with pytest.raises(LedgerTampered, match="seq 2") as raised:
            ledger.allowed_fingerprints("train_faces", "run-1")
        with pytest.raises(LedgerTampered, match="seq 2"):
            ledger.latest_decisions("train_faces", "run-1")
        with pytest.raises(LedgerTampered, match="seq 2: not a record a gate writes: allow"):
            ledger.records()
        if hashed_as == "read back":
            assert "seq 2 was edited" in str(raised.value)
            assert ledger.verify().problems[0] == "seq 2: edited (its content no longer matches its record_hash)"
        else:
            assert "allow" in str(raised.value)
        assert ledger.verify().problems[-1].startswith("consent ledger seq 2: not a record a gate writes: allow is")


def test_ledger_rows_of_the_gate_still_read_as_booleans(tmp_path):
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record_denied(ledger, {"ds/a": "sha256:a"})
        forge_decision(tmp_path / "ledger.db", ["ds/a"], stored_allow=1, hashed_allow=True)  # as SQLite keeps True
        assert ledger.allowed_fingerprints("train_faces", "run-1") == {"ds/a": "sha256:a"}
        assert [r.allow for r in ledger.records()] == [False, True]
        assert ledger.verify().ok


@pytest.mark.parametrize("hashed_as", ["read back", "stored"])
@pytest.mark.parametrize("stored", ["true", 2])
def test_clearance_refuses_a_ledger_allow_that_is_not_a_boolean(tmp_path, stored, hashed_as):
    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    on_disk = {p.id: fingerprint(p) for p in discover_partitions(str(dataset))}
    task = training_dag(dataset).task_dict["train"]
    with Ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
        record_denied(ledger, on_disk, run_id=RUN)
        forge_decision(tmp_path / "ledger.db", list(on_disk), stored, True if hashed_as == "read back" else stored)

        with pytest.raises(ClearanceRefused) as raised:
            check_clearance(task, context(task), ledger=ledger)
    assert [p.kind for p in raised.value.problems] == ["tampered"]
    assert "seq 3" in raised.value.problems[0].message
