"""Run-time clearance, unit level: real files and fingerprints, a ledger faked at its interface.

What the ledger itself stores is tested with the ledger; under a real scheduler the clearance is
exercised by ``test_bypass.py``, and through DagBag + dag.test() by ``test_example_dag.py``.
"""

from __future__ import annotations

import shutil
from datetime import UTC
from pathlib import Path

import pytest

from airflow_consent.clearance import ClearanceDenied, ClearanceRefused, check_clearance, enforce_clearance
from airflow_consent.cluster_policy import CLEARANCE_MARKER, install_clearance
from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import LedgerTampered
from airflow_consent.ledger.store import LatestDecision
from airflow_consent.sample_data import generate_profile_photos

RUN = "manual__2026-01-01T00:00:00+00:00"
PURPOSE = "face_recognition_training"
STUDIO_2024 = "profile_photos/source=studio_optin/year=2024"
STUDIO_2025 = "profile_photos/source=studio_optin/year=2025"
ENGINE = LocalOpaEngine().name  # what the gates below ask: the shipped policies, locally
ENTRYPOINT = "consent/main/decision"


class FakeLedger:
    """``latest_decisions`` as the ledger answers it, for one run: what the gate ``consent_gate`` allowed
    and denied (partition id -> fingerprint)."""

    def __init__(self, allowed: dict[str, str] | Exception, denied: dict[str, str] | None = None):
        self.allowed = allowed
        self.denied = denied or {}
        self.asked: list[tuple[str, str, str | None]] = []

    def latest_decisions(self, dag_id=None, run_id=None, *, task_id=None, decision_id=None) -> dict:
        self.asked.append((dag_id, run_id, task_id))
        if isinstance(self.allowed, Exception):
            raise self.allowed
        if run_id != RUN or task_id not in (None, "consent_gate"):
            return {}
        return {
            **{pid: LatestDecision(fp, False, PURPOSE, ENGINE, ENTRYPOINT) for pid, fp in self.denied.items()},
            **{pid: LatestDecision(fp, True, PURPOSE, ENGINE, ENTRYPOINT) for pid, fp in self.allowed.items()},
        }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clearance")
    generate_profile_photos(root, sources=("studio_optin",))
    return root / "profile_photos"


@pytest.fixture
def on_disk(dataset) -> dict[str, str]:
    return {p.id: fingerprint(p) for p in discover_partitions(str(dataset))}


def training_dag(dataset, *, gate: bool = True, **gate_kwargs):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent.operators.consent import ConsentGateOperator

    with DAG(dag_id="train_faces", schedule=None, tags=["training"], params={"root": str(dataset.parent)}) as dag:
        train = EmptyOperator(task_id="train")
        if gate:
            arguments = {"datasets": [str(dataset)], "purpose": PURPOSE, **gate_kwargs}
            ConsentGateOperator(task_id="consent_gate", **arguments) >> train
    return dag


def context(task) -> dict:
    return {"run_id": RUN, "task": task, "params": task.dag.params}


def refused(task, ledger) -> ClearanceRefused:
    with pytest.raises(ClearanceRefused) as caught:
        check_clearance(task, context(task), ledger=ledger)
    return caught.value


def test_cleared_when_every_partition_is_allowed_with_its_current_fingerprint(dataset, on_disk):
    task = training_dag(dataset).task_dict["train"]
    ledger = FakeLedger(on_disk)

    cleared = check_clearance(task, context(task), ledger=ledger)

    assert {p.id: p.fingerprint for p in cleared} == on_disk
    assert {p.gate for p in cleared} == {"consent_gate"}
    assert ledger.asked == [("train_faces", RUN, "consent_gate")]
    assert all(p.partition.uri.endswith(p.id.removeprefix("profile_photos")) for p in cleared)


def test_a_partition_without_an_allow_in_this_run_is_refused(dataset, on_disk):
    task = training_dag(dataset).task_dict["train"]

    error = refused(task, FakeLedger({STUDIO_2025: on_disk[STUDIO_2025]}))

    assert [(p.kind, p.partition_id, p.gate) for p in error.problems] == [("not_allowed", STUDIO_2024, "consent_gate")]
    assert str(error) == (
        f"Consent clearance refused: training task 'train' of DAG 'train_faces' may not start in run {RUN!r}: "
        f"1 problem(s)\n  - {STUDIO_2024}: no allow decision in the consent ledger for run {RUN!r} (gate "
        "'consent_gate' did not allow it in this run: was the gate marked success by hand, or did it not run?)"
    )


def test_a_partition_changed_since_its_allow_names_both_fingerprints(dataset, on_disk):
    task = training_dag(dataset).task_dict["train"]
    stale = "sha256:" + "0" * 64

    error = refused(task, FakeLedger({**on_disk, STUDIO_2024: stale}))

    (problem,) = error.problems
    assert (problem.kind, problem.partition_id) == ("changed", STUDIO_2024)
    assert (problem.allowed_fingerprint, problem.current_fingerprint) == (stale, on_disk[STUDIO_2024])
    assert (
        f"{STUDIO_2024}: changed after its check: allowed with fingerprint {stale}, on disk now "
        f"{on_disk[STUDIO_2024]}" in str(error)
    )


def test_an_allow_of_another_run_does_not_count(dataset, on_disk):
    task = training_dag(dataset).task_dict["train"]
    ctx = {**context(task), "run_id": "manual__another"}

    with pytest.raises(ClearanceRefused) as caught:
        check_clearance(task, ctx, ledger=FakeLedger(on_disk))

    assert {p.kind for p in caught.value.problems} == {"not_allowed"}


@pytest.mark.parametrize(
    ("allowed", "says"),
    [
        ({}, "the ledger holds no allow decision for this run either"),
        ({STUDIO_2024: "sha256:x"}, "the ledger's 1 allow decision(s) for this run cannot be tied to this task"),
    ],
)
def test_no_gate_upstream_is_refused(dataset, allowed, says):
    task = training_dag(dataset, gate=False).task_dict["train"]

    error = refused(task, FakeLedger(allowed))

    assert [p.kind for p in error.problems] == ["no_gate"]
    assert "no consent gate is upstream of 'train' in the DAG as it is now (was the gate removed after" in str(error)
    assert says in str(error)


def test_templated_gate_arguments_are_rendered_for_the_run(dataset, on_disk):
    dag = training_dag(dataset, partition_filter=[("year", "=", "{{ 2020 + 4 }}")])
    dag.task_dict["consent_gate"].datasets = ["{{ params.root }}/profile_photos"]
    task = dag.task_dict["train"]

    cleared = check_clearance(task, context(task), ledger=FakeLedger({STUDIO_2024: on_disk[STUDIO_2024]}))

    assert [p.id for p in cleared] == [STUDIO_2024]


def test_an_exclude_gate_clears_only_what_it_allowed_and_at_least_one(dataset, on_disk):
    task = training_dag(dataset, on_violation="exclude").task_dict["train"]

    ledger = FakeLedger({STUDIO_2025: on_disk[STUDIO_2025]}, denied={STUDIO_2024: on_disk[STUDIO_2024]})
    cleared = check_clearance(task, context(task), ledger=ledger)
    assert [p.id for p in cleared] == [STUDIO_2025]

    error = refused(task, FakeLedger({}, denied=on_disk))
    assert [p.message for p in error.problems] == ["no input partition is allowed in this run"]


def test_an_exclude_gate_does_not_skip_a_partition_it_never_decided(dataset, on_disk):
    task = training_dag(dataset, on_violation="exclude").task_dict["train"]

    error = refused(task, FakeLedger({STUDIO_2025: on_disk[STUDIO_2025]}))  # 2024: no record at all

    assert [(p.kind, p.partition_id, p.gate) for p in error.problems] == [("not_allowed", STUDIO_2024, "consent_gate")]
    assert f"{STUDIO_2024}: gate 'consent_gate' never decided it in run {RUN!r} (added after the gate ran" in str(error)
    assert [p.kind for p in refused(task, FakeLedger({})).problems] == ["not_allowed", "not_allowed"]


def test_unreadable_gate_inputs_and_a_tampered_ledger_are_refused(dataset, tmp_path, on_disk):
    gone = tmp_path / "gone"
    shutil.copytree(dataset, gone)
    task = training_dag(gone).task_dict["train"]
    shutil.rmtree(gone)
    assert [p.kind for p in refused(task, FakeLedger(on_disk)).problems] == ["unreadable"]

    task = training_dag(dataset).task_dict["train"]
    error = refused(task, FakeLedger(LedgerTampered("record 7 does not match its hash")))
    assert [p.kind for p in error.problems] == ["tampered"]
    assert "the consent ledger fails verification: record 7 does not match its hash" in str(error)


def test_enforce_clearance_fails_the_task_without_retries(dataset):
    from airflow.sdk.exceptions import AirflowFailException

    task = training_dag(dataset).task_dict["train"]

    with pytest.raises(ClearanceDenied) as caught:
        enforce_clearance(task, context(task), ledger=FakeLedger({}))

    assert isinstance(caught.value, AirflowFailException)
    assert {p.kind for p in caught.value.problems} == {"not_allowed"}


def test_the_wrapper_checks_every_time_then_runs_the_tasks_own_pre_execute(dataset, monkeypatch, on_disk):
    from airflow_consent import clearance

    calls = []
    monkeypatch.setattr(clearance, "enforce_clearance", lambda task, ctx, **_: calls.append(("clearance", task)))
    task = training_dag(dataset).task_dict["train"]

    def own_pre_execute(self, ctx):
        calls.append(("own", self))

    monkeypatch.setattr(type(task), "pre_execute", own_pre_execute)
    install_clearance(task)
    install_clearance(task)  # idempotent
    running_copy = task.prepare_for_execution()  # what the task runner executes
    for _ in range(2):  # first start, and again when a deferred task resumes
        running_copy.pre_execute(context(running_copy))

    assert getattr(task.pre_execute, CLEARANCE_MARKER)
    assert calls == [("clearance", running_copy), ("own", running_copy)] * 2


def test_a_mapped_training_task_is_cleared_through_its_unmapped_copy(dataset, monkeypatch):
    from airflow.providers.standard.operators.python import PythonOperator

    from airflow_consent import clearance

    dag = training_dag(dataset)
    with dag:
        mapped = PythonOperator.partial(task_id="train_each", python_callable=print).expand(op_args=[[1], [2]])
        dag.task_dict["consent_gate"] >> mapped
    checked = []
    monkeypatch.setattr(clearance, "enforce_clearance", lambda task, ctx, **_: checked.append(task))

    install_clearance(mapped)
    unmapped = mapped.unmap({"op_args": [1]})
    unmapped._pre_execute_hook({**context(unmapped), "task": unmapped})

    assert checked == [unmapped]


def test_with_the_real_ledger_unenforced_violations_pass_and_enforced_ones_do_not(dataset, tmp_path, on_disk):
    from datetime import datetime

    from airflow_consent.ledger import Ledger
    from airflow_consent.models import DecidedPartition, GateReport, GateRequest, Violation

    def violation(enforcement: str) -> Violation:
        return Violation(
            rule_id="PROV-004",
            title="Chain of custody missing",
            severity="medium",
            message="m",
            remediation="r",
            regulation=[],
            enforcement=enforcement,
        )

    now = datetime.now(UTC)
    request = GateRequest(purpose=PURPOSE, dag_id="train_faces", run_id=RUN, task_id="consent_gate", evaluated_at=now)
    report = GateReport(
        decision_id="d-1",
        allow=False,
        purpose=PURPOSE,
        entrypoint="consent/main/decision",
        engine=ENGINE,
        opa_version="1.22.3",
        policy_revision="sha256:0",
        evaluated_at=now,
        duration_ms=1.0,
        partitions=[
            DecidedPartition(
                id=STUDIO_2024,
                uri="file:///x",
                fingerprint=on_disk[STUDIO_2024],
                allow=False,
                violations=[violation("warn")],
            ),
            DecidedPartition(
                id=STUDIO_2025,
                uri="file:///y",
                fingerprint=on_disk[STUDIO_2025],
                allow=False,
                violations=[violation("deny")],
            ),
        ],
    )
    task = training_dag(dataset).task_dict["train"]
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.record(report, request, mode="deny", input_digest="sha256:" + "0" * 64)

        error = refused(task, ledger)
        assert [(p.kind, p.partition_id) for p in error.problems] == [("not_allowed", STUDIO_2025)]

        task.dag.task_dict["consent_gate"].partition_filter = [("year", "=", "2024")]
        (cleared,) = check_clearance(task, context(task), ledger=ledger)
    assert cleared.id == STUDIO_2024


# --- a training DAG scheduled on a gate's approved asset ------------------------------------------

APPROVED = "consent://approved/profile_photos"


def approved_training_task():
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset

    with DAG("train_on_approved", schedule=[Asset("approved", uri=APPROVED)], tags=["training"]) as dag:
        EmptyOperator(task_id="train")
    return dag.task_dict["train"]


def approval(dataset, ledger, *, sources_filter="studio_optin") -> dict:
    """Run the real gate over ``dataset``, record it, and return the extra its approved-asset event carries."""
    from datetime import datetime

    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.gate import DatasetSpec, evaluate_gate
    from airflow_consent.models import GateRequest

    request = GateRequest(
        purpose=PURPOSE, dag_id="approve", run_id="r1", task_id="consent_gate", evaluated_at=datetime.now(UTC)
    )
    report = evaluate_gate(
        request, [DatasetSpec(uri=str(dataset))], LocalOpaEngine(), partition_filter=[("year", "=", "2024")]
    )
    ledger.record(report, request, mode="deny", input_digest=report.input_digest)
    return {
        "decision_id": report.decision_id,
        "approved_partitions": [{"id": p.id, "uri": p.uri, "fingerprint": p.fingerprint} for p in report.passed],
    }


def triggered_by(task, extra: dict | None) -> dict:
    from types import SimpleNamespace

    from airflow.sdk import Asset

    events = {} if extra is None else {Asset("approved", uri=APPROVED): [SimpleNamespace(extra=extra)]}
    return {**context(task), "triggering_asset_events": events}


def test_a_dag_scheduled_on_an_approved_asset_is_gated_and_cleared_by_its_decision(tmp_path, opa_binary):
    from airflow_consent.cluster_policy import ungated_training_tasks
    from airflow_consent.config import enforcement_settings
    from airflow_consent.ledger import Ledger

    dataset = generate_profile_photos(tmp_path / "data", sources=("studio_optin",))
    task = approved_training_task()
    assert ungated_training_tasks(task.dag, enforcement_settings()) == {}
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        extra = approval(dataset, ledger)
        (cleared,) = check_clearance(task, triggered_by(task, extra), ledger=ledger)
        assert cleared.id == STUDIO_2024

        forged = {**extra, "decision_id": "not-a-decision"}
        assert [p.kind for p in refused_with(task, triggered_by(task, forged), ledger).problems] == ["not_allowed"]
        assert "triggered by hand" in str(refused_with(task, triggered_by(task, None), ledger))

        sidecar_free = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
        sidecar_free.write_bytes(sidecar_free.read_bytes() + b"\0")
        (problem,) = refused_with(task, triggered_by(task, extra), ledger).problems
        assert (
            problem.kind == "changed" and problem.allowed_fingerprint == extra["approved_partitions"][0]["fingerprint"]
        )


def refused_with(task, ctx, ledger) -> ClearanceRefused:
    with pytest.raises(ClearanceRefused) as raised:
        check_clearance(task, ctx, ledger=ledger)
    return raised.value


# --- exclude mode against what the gate really decided, and records tied to the gate task ----------

STUDIO_2026 = "profile_photos/source=studio_optin/year=2026"


def run_gate(task, ledger_url: str, monkeypatch) -> list[dict]:
    """Run the real gate upstream of ``task`` (local OPA, shipped policies) in run RUN, recording its
    decisions to ``ledger_url``; return what it approved (its XCom return value)."""

    class TaskInstance:
        def xcom_push(self, key, value):
            pass

    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", ledger_url)
    gate = task.dag.task_dict["consent_gate"]
    return gate.execute({"run_id": RUN, "ti": TaskInstance(), "outlet_events": {}})


def add_partition(dataset: Path, year: int) -> Path:
    """A partition delivered after the gate ran: a copy of studio_optin/year=2024 (manifest included)."""
    added = dataset / "source=studio_optin" / f"year={year}"
    shutil.copytree(dataset / "source=studio_optin" / "year=2024", added)
    return added


def test_exclude_mode_refuses_a_partition_added_after_the_gate_ran(tmp_path, monkeypatch, opa_binary):
    from airflow_consent.ledger import Ledger

    dataset = generate_profile_photos(tmp_path / "data", sources=("okcupid", "studio_optin"))
    task = training_dag(dataset, on_violation="exclude").task_dict["train"]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert [p["id"] for p in run_gate(task, url, monkeypatch)] == [STUDIO_2024, STUDIO_2025]  # okcupid denied
    with Ledger(url) as ledger:
        assert [p.id for p in check_clearance(task, context(task), ledger=ledger)] == [STUDIO_2024, STUDIO_2025]

        add_partition(dataset, 2026)
        error = refused(task, ledger)

    assert [(p.kind, p.partition_id, p.gate) for p in error.problems] == [("not_allowed", STUDIO_2026, "consent_gate")]
    assert f"{STUDIO_2026}: gate 'consent_gate' never decided it in run {RUN!r}" in str(error)


def record(ledger, task_id: str, verdicts: dict[str, bool], fingerprints: dict[str, str], run_id: str = RUN) -> None:
    """Append the decisions of one evaluation by ``task_id``: partition id -> allow."""
    from datetime import datetime

    from airflow_consent.models import DecidedPartition, GateReport, GateRequest, Violation

    denied = Violation(
        rule_id="PROV-001", title="Source not approved", severity="high", message="m", remediation="r", regulation=[]
    )
    now = datetime.now(UTC)
    request = GateRequest(purpose=PURPOSE, dag_id="train_faces", run_id=run_id, task_id=task_id, evaluated_at=now)
    report = GateReport(
        decision_id=f"{task_id}-{now.timestamp()}",
        allow=all(verdicts.values()),
        purpose=PURPOSE,
        entrypoint="consent/main/decision",
        engine=ENGINE,
        opa_version="1.22.3",
        policy_revision="sha256:0",
        evaluated_at=now,
        duration_ms=1.0,
        partitions=[
            DecidedPartition(
                id=pid,
                uri=f"file:///{pid}",
                fingerprint=fingerprints[pid],
                allow=allow,
                violations=[] if allow else [denied],
            )
            for pid, allow in verdicts.items()
        ],
    )
    ledger.record(report, request, mode="deny", input_digest="sha256:" + "0" * 64)


def test_an_allow_recorded_by_another_task_of_the_run_does_not_clear_the_gates_partitions(dataset, tmp_path, on_disk):
    from airflow_consent.ledger import Ledger

    both_allowed = {STUDIO_2024: True, STUDIO_2025: True}
    task = training_dag(dataset).task_dict["train"]
    excluding = training_dag(dataset, on_violation="exclude").task_dict["train"]
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        record(ledger, "consent_gate", {STUDIO_2024: False, STUDIO_2025: True}, on_disk)
        record(ledger, "not_a_gate", both_allowed, on_disk)  # later, in the same run

        assert [(p.kind, p.partition_id) for p in refused(task, ledger).problems] == [("not_allowed", STUDIO_2024)]
        assert [p.id for p in check_clearance(excluding, context(excluding), ledger=ledger)] == [STUDIO_2025]

        record(ledger, "not_a_gate", both_allowed, on_disk, run_id="manual__only_another_task")
        with pytest.raises(ClearanceRefused) as caught:
            check_clearance(task, {**context(task), "run_id": "manual__only_another_task"}, ledger=ledger)
    assert [(p.kind, p.partition_id) for p in caught.value.problems] == [
        ("not_allowed", STUDIO_2024),
        ("not_allowed", STUDIO_2025),
    ]
