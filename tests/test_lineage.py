"""OpenLineage from the gates: the real provider's listener under ``airflow dags test`` with the file
transport on the sample data, and the facet builders on reports too large to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import referencing
from openlineage.client.serde import Serde

from airflow_consent import lineage
from airflow_consent.enforcement import outcome
from airflow_consent.models import DecidedPartition, GateReport, Violation
from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.sample_data import REVOKED_SUBJECTS, generate_profile_photos

REPO = Path(__file__).resolve().parent.parent
PURPOSE = "face_recognition_training"
STUDIO_2024 = "profile_photos/source=studio_optin/year=2024"
DENIED = {
    "profile_photos/source=okcupid/year=2013": {"CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003", "EVIDENCE-001"},
    "profile_photos/source=okcupid/year=2014": {"CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003", "EVIDENCE-001"},
    "profile_photos/source=stock/year=2022": {"PROV-003"},
    "profile_photos/source=studio_optin/year=2025": {"EVIDENCE-002"},
}
OUR_FACETS = ("airflowConsentPartitions", "dataQualityAssertions", "subset")

GATES_DAG = """
from pathlib import Path

from airflow.sdk import DAG, Asset
from airflow_consent.operators.consent import ConsentGateOperator
from airflow_consent.sensors.consent import ConsentPolicySensor
{patch}
PHOTOS = Asset("profile_photos", uri=Path({data!r}).as_uri())
GATE = dict(datasets=[PHOTOS], purpose={purpose!r}, model="face-embedder-v1", dataset_config_path={config!r}, retries=0)

with DAG(dag_id="lineage_gates", schedule=None):
    ConsentGateOperator(task_id="deny_gate", **GATE)
    ConsentGateOperator(task_id="exclude_gate", on_violation="exclude", **GATE)
    ConsentPolicySensor(task_id="wait_for_consent", poke_interval=1, timeout=120,
                        partition_filter=[("source", "=", "studio_optin"), ("year", "=", "2024")], **GATE)
"""
BROKEN_BUILDER = """
import airflow_consent.lineage

def _broken(*args, **kwargs):
    raise RuntimeError("lineage builder broken on purpose")

airflow_consent.lineage.decision_run_facet = _broken
"""


@pytest.fixture(scope="module")
def airflow_cli(tmp_path_factory):
    """``airflow`` in a migrated AIRFLOW_HOME of its own (the OpenLineage provider reads its settings
    once per process, so every run with a transport is a process of its own)."""
    home = tmp_path_factory.mktemp("lineage-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    airflow = str(Path(sys.executable).parent / "airflow")

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [airflow, *args], capture_output=True, text=True, env={**env, **extra_env}, timeout=300, check=False
        )

    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return run


def dags_test(
    airflow_cli, tmp_path: Path, patch: str = "", evidence: bool = True
) -> tuple[str, dict[tuple[str, str], dict], Path]:
    """``airflow dags test lineage_gates`` on the sample data with the file transport, measuring the
    evidence the example configures (or only reading manifests): (output, events by (task id, event
    type), the dataset root)."""
    data = generate_profile_photos(tmp_path / "data")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "lineage_gates.py").write_text(
        textwrap.dedent(
            GATES_DAG.format(
                patch=patch,
                data=str(data),
                purpose=PURPOSE,
                config=str(REPO / "dags" / "datasets") if evidence else None,
            )
        )
    )
    events = tmp_path / "events.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    done = airflow_cli(
        "dags",
        "test",
        "lineage_gates",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(transport),
    )
    output = done.stdout + done.stderr
    parsed = [json.loads(line) for line in events.read_text().splitlines()]
    return output, {(e["job"]["name"].removeprefix("lineage_gates."), e["eventType"]): e for e in parsed}, data


@pytest.fixture(scope="module")
def gate_events(airflow_cli, tmp_path_factory):
    return dags_test(airflow_cli, tmp_path_factory.mktemp("lineage-run"))


def consent_input(event: dict) -> dict:
    (dataset,) = event["inputs"]
    return dataset


@pytest.mark.integration
def test_a_denying_gate_fails_with_its_decision_and_every_partition(gate_events):
    _, events, data = gate_events
    fail = events[("deny_gate", "FAIL")]
    decision = fail["run"]["facets"]["airflowConsentDecision"]

    assert {
        k: decision[k]
        for k in (
            "purpose",
            "model",
            "allow",
            "enforcement",
            "onViolation",
            "entrypoint",
            "opaVersion",
            "partitionsTotal",
            "partitionsAllowed",
            "partitionsDenied",
            "partitionsExcluded",
            "partitionsApproved",
        )
    } == {
        "purpose": PURPOSE,
        "model": "face-embedder-v1",
        "allow": False,
        "enforcement": "deny",
        "onViolation": "fail",
        "entrypoint": "consent/main/decision",
        "opaVersion": "1.22.3",
        "partitionsTotal": 5,
        "partitionsAllowed": 1,
        "partitionsDenied": 4,
        "partitionsExcluded": 0,
        "partitionsApproved": 0,
    }
    assert decision["ruleCounts"] == {
        "CONSENT-001": 2,
        "CONSENT-002": 2,
        "EVIDENCE-001": 2,
        "EVIDENCE-002": 1,
        "PROV-001": 2,
        "PROV-003": 3,
    }
    assert decision["policyRevision"].startswith("sha256:") and decision["inputDigest"].startswith("sha256:")
    assert decision["engine"].startswith("local opa")

    dataset = consent_input(fail)
    assert (dataset["namespace"], dataset["name"]) == ("file", str(data))  # as Airflow names the Asset
    facets = dataset["inputFacets"]
    assert "subset" not in facets  # a failed gate passed nothing on
    partitions = facets["airflowConsentPartitions"]
    assert partitions["decisionId"] == decision["decisionId"]
    assert (partitions["partitionsChecked"], partitions["partitionsAllowed"], partitions["truncated"]) == (5, 1, False)
    assert {p["id"]: {v["ruleId"] for v in p["violations"]} for p in partitions["partitions"]} == {
        **DENIED,
        STUDIO_2024: set(),
    }
    assert [p["id"] for p in partitions["partitions"]][-1] == STUDIO_2024  # denied first
    assert all(p["fingerprint"].startswith("sha256:") and not p["approved"] for p in partitions["partitions"])
    assertions = {a["assertion"]: a for a in facets["dataQualityAssertions"]["assertions"]}
    policy = assertions["consent_policy"]
    assert (policy["success"], policy["expected"], policy["actual"]) == (False, "5", "1")
    assert {rule: (a["success"], a["actual"]) for rule, a in assertions.items() if rule != "consent_policy"} == {
        rule: (False, str(n)) for rule, n in decision["ruleCounts"].items()
    }
    assert assertions["EVIDENCE-002"]["name"] == "Revoked subjects present"
    assert fail["run"]["facets"]["errorMessage"]["message"].startswith("Consent gate denied 4 of 5 partition(s)")


@pytest.mark.integration
def test_an_allowing_gate_completes_with_the_approved_partitions_as_its_subset(gate_events):
    _, events, _ = gate_events
    complete = events[("exclude_gate", "COMPLETE")]
    decision = complete["run"]["facets"]["airflowConsentDecision"]
    assert (
        decision["allow"],
        decision["onViolation"],
        decision["partitionsTotal"],
        decision["partitionsAllowed"],
        decision["partitionsExcluded"],
        decision["partitionsApproved"],
    ) == (False, "exclude", 5, 1, 4, 1)

    facets = consent_input(complete)["inputFacets"]
    assert facets["subset"]["inputCondition"] == {
        "type": "partition",
        "partitions": [{"identifier": STUDIO_2024, "dimensions": {"source": "studio_optin", "year": "2024"}}],
    }
    approved = [p for p in facets["airflowConsentPartitions"]["partitions"] if p["approved"]]
    assert [(p["id"], p["allow"]) for p in approved] == [(STUDIO_2024, True)]
    sensor = events[("wait_for_consent", "COMPLETE")]
    sensed = sensor["run"]["facets"]["airflowConsentDecision"]
    assert (sensed["allow"], sensed["partitionsTotal"], sensed["partitionsApproved"]) == (True, 1, 1)
    assert (
        consent_input(sensor)["inputFacets"]["subset"]["inputCondition"]["partitions"][0]["identifier"] == STUDIO_2024
    )
    assert (
        approved[0]["fingerprint"]
        == consent_input(sensor)["inputFacets"]["airflowConsentPartitions"]["partitions"][0]["fingerprint"]
    )


@pytest.mark.integration
def test_the_facets_match_their_schemas_and_carry_no_subject(gate_events):
    output, events, _ = gate_events
    assert any(subject in output for subject in REVOKED_SUBJECTS)  # the task log names them, for remediation
    for task, kind in [("deny_gate", "FAIL"), ("exclude_gate", "COMPLETE"), ("wait_for_consent", "COMPLETE")]:
        event = events[(task, kind)]
        ours = {
            "run": event["run"]["facets"]["airflowConsentDecision"],
            "inputs": [{k: d["inputFacets"][k] for k in OUR_FACETS if k in d["inputFacets"]} for d in event["inputs"]],
        }
        text = json.dumps(ours)
        assert "subject" not in text.replace("Revoked subjects present", ""), text
        assert not any(subject in text for subject in REVOKED_SUBJECTS)
        validate(ours["run"], "AirflowConsentDecisionRunFacet")
        for dataset in ours["inputs"]:
            validate(dataset["airflowConsentPartitions"], "AirflowConsentPartitionsInputDatasetFacet")


@pytest.mark.integration
def test_a_lineage_builder_that_raises_changes_no_verdict(airflow_cli, tmp_path):
    output, events, _ = dags_test(airflow_cli, tmp_path, patch=BROKEN_BUILDER, evidence=False)

    assert "DagRun failed" in output  # deny_gate failed, as without lineage
    assert "The consent gate's OpenLineage facets could not be built" in output
    assert "lineage builder broken on purpose" in output
    assert "OpenLineage method failed to extract data" not in output  # caught by the gate, not the extractor
    assert set(events) >= {("deny_gate", "FAIL"), ("exclude_gate", "COMPLETE"), ("wait_for_consent", "COMPLETE")}
    for event in (events[("deny_gate", "FAIL")], events[("exclude_gate", "COMPLETE")]):
        assert "airflowConsentDecision" not in event["run"]["facets"]
    assert events[("deny_gate", "FAIL")]["run"]["facets"]["errorMessage"]["message"].startswith("Consent gate denied")


# --- the builders, without a DAG run ----------------------------------------------------------------


def report(allowed: int, denied: int, *, message: str = "a message") -> GateReport:
    violation = Violation(
        rule_id="EVIDENCE-002",
        title="Revoked subjects present",
        severity="critical",
        message=message,
        remediation="remove them",
        regulation=["GDPR Art. 7(3)"],
    )
    partitions = [
        DecidedPartition(
            id=f"faces/n={n:07d}",
            uri=f"/lake/faces/n={n:07d}",
            fingerprint=f"sha256:{n:064x}",
            allow=n >= denied,
            violations=[] if n >= denied else [violation],
        )
        for n in range(allowed + denied)
    ]
    return GateReport(
        decision_id="decision-1",
        allow=denied == 0,
        purpose=PURPOSE,
        entrypoint="consent/main/decision",
        engine="local opa",
        opa_version="1.22.3",
        policy_revision="sha256:0123456789abcdef",
        evaluated_at=datetime.now(UTC),
        duration_ms=1.0,
        partitions=partitions,
        input_digest=f"sha256:{0:064x}",
    )


def build(gate_report: GateReport, on_violation: str = "exclude", *, completed: bool = True, **kwargs):
    return lineage.gate_lineage(
        gate_report,
        outcome(gate_report, on_violation),
        [("/lake/faces", None)],
        enforcement="deny",
        on_violation=on_violation,
        model=None,
        completed=completed,
        **kwargs,
    )


def test_the_partition_list_is_capped_with_every_count_kept():
    built = build(report(allowed=1_200, denied=300))
    (dataset,) = built.inputs
    facet = Serde.to_dict(dataset.inputFacets["airflowConsentPartitions"])

    assert (facet["partitionsChecked"], facet["partitionsAllowed"], facet["partitionsApproved"]) == (
        1_500,
        1_200,
        1_200,
    )
    assert facet["truncated"] is True
    assert len(facet["partitions"]) == lineage.PARTITIONS_CAP == 1_000
    assert sum(not p["allow"] for p in facet["partitions"]) == 300  # every denied partition is listed
    assert "subset" not in dataset.inputFacets  # 1,200 approved: a capped subset would understate what was read
    assert len(Serde.to_json(built.inputs[0])) < 400_000
    decision = Serde.to_dict(built.run_facets["airflowConsentDecision"])
    assert (decision["partitionsTotal"], decision["partitionsDenied"], decision["partitionsApproved"]) == (
        1_500,
        300,
        1_200,
    )
    validate(facet, "AirflowConsentPartitionsInputDatasetFacet")


def test_below_the_cap_nothing_is_truncated():
    (dataset,) = build(report(allowed=3, denied=2), cap=5).inputs
    facet = dataset.inputFacets["airflowConsentPartitions"]
    assert (facet.truncated, len(facet.partitions)) == (False, 5)
    assert len(dataset.inputFacets["subset"].inputCondition.partitions) == 3
    (capped,) = build(report(allowed=3, denied=2), cap=4).inputs
    assert (capped.inputFacets["airflowConsentPartitions"].truncated, "subset" in capped.inputFacets) == (True, True)


def test_no_violation_message_reaches_a_facet():
    built = build(report(allowed=1, denied=1, message=f"4 row(s) of subjects, e.g. {REVOKED_SUBJECTS[0]}"))
    text = json.dumps([Serde.to_dict(facet) for facet in (*built.run_facets.values(), *built.inputs)])
    assert REVOKED_SUBJECTS[0] not in text and "4 row(s)" not in text


def test_partition_keys_are_decoded_from_the_id():
    assert lineage.partition_keys("photos/source=studio%3Aoptin/year=2024", "photos") == {
        "source": "studio:optin",
        "year": "2024",
    }


@pytest.mark.parametrize(
    ("uri", "identity"),
    [
        ("/lake/faces", ("file", "/lake/faces")),
        ("file:///lake/faces", ("file", "/lake/faces")),
        ("s3://lake/curated/faces", ("s3://lake", "curated/faces")),
    ],
)
def test_inputs_are_named_as_airflow_names_their_assets(uri, identity):
    assert lineage.dataset_identity(uri) == identity


def gate() -> ConsentGateOperator:
    return ConsentGateOperator(task_id="consent_gate", datasets=["/lake/faces"], purpose=PURPOSE)


def test_a_gate_that_failed_before_deciding_names_its_inputs():
    built = gate().get_openlineage_facets_on_failure(None)
    assert [(d.namespace, d.name, d.inputFacets) for d in built.inputs] == [("file", "/lake/faces", {})]
    assert built.run_facets == {}


def test_the_lineage_methods_never_raise(monkeypatch):
    operator = gate()
    operator._lineage_report = report(allowed=1, denied=1)
    assert operator.get_openlineage_facets_on_complete(None).run_facets["airflowConsentDecision"].partitionsDenied == 1

    def broken(*args, **kwargs):
        raise RuntimeError("broken builder")

    monkeypatch.setattr(lineage, "partitions_facets", broken)
    assert operator.get_openlineage_facets_on_complete(None) is None
    assert operator.get_openlineage_facets_on_failure(None) is None


def test_without_the_openlineage_client_the_methods_return_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "airflow_consent.lineage")
    monkeypatch.setitem(sys.modules, "openlineage.client.generated.base", None)  # import raises ImportError
    operator = gate()
    operator._lineage_report = report(allowed=1, denied=0)
    assert operator.get_openlineage_facets_on_complete(None) is None


def test_importing_the_gate_does_not_import_the_openlineage_client():
    """(Airflow itself reads the provider's ``get_provider_info``; the client and the facets stay out.)"""
    code = (
        "import sys; import airflow_consent.operators.consent, airflow_consent.sensors.consent; "
        "print('OL=' + ','.join(m for m in sys.modules if m.startswith(('openlineage', 'airflow_consent.lineage'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "OL=\n" in done.stdout


def validate(facet: dict, name: str) -> None:
    """Validate against the shipped schema; OpenLineage's base facet as the spec defines its two fields."""
    schema = json.loads((lineage.SCHEMA_DIR / f"{name}.json").read_text())
    base = {
        "type": "object",
        "required": ["_producer", "_schemaURL"],
        "properties": {"_producer": {"type": "string", "format": "uri"}, "_schemaURL": {"type": "string"}},
    }
    spec = {
        "$id": "https://openlineage.io/spec/2-0-2/OpenLineage.json",
        "$defs": {"RunFacet": base, "InputDatasetFacet": base},
    }
    registry = referencing.Registry().with_resources(
        [
            (
                spec["$id"],
                referencing.Resource.from_contents(spec, default_specification=referencing.jsonschema.DRAFT202012),
            ),
            (schema["$id"], referencing.Resource.from_contents(schema)),
        ]
    )
    jsonschema.Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{name}"}, registry=registry).validate(facet)
    assert facet["_schemaURL"] == lineage.schema_url(name) == f"{schema['$id']}#/$defs/{name}"
