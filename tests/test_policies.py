"""The shipped Rego policies, judged through the real OPA: metadata, shared examples, example data.

The Rego unit tests (``opa test policies``, run by ``scripts/check-policies``) assert each rule on
its own; these tests assert what the gate sees: the whole decision from the entrypoint of an OPA
server serving the ``policies/`` bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_consent import policy_lint
from airflow_consent.models import PolicyDecision, PolicyInput, Violation
from airflow_consent.policies import DEFAULT_ENTRYPOINT, policy_dir

pytestmark = pytest.mark.integration

POLICIES = policy_dir()
EXAMPLES = sorted((POLICIES / "examples").glob("*.json"))
CHECK_POLICIES = Path(__file__).resolve().parent.parent / "scripts" / "check-policies"


@pytest.fixture(scope="module")
def rule_metadata(opa_binary: Path) -> dict[str, dict]:
    """Rule name (its package's last segment) → its package METADATA, as ``opa inspect`` reads it."""
    return {name: rule.metadata for name, rule in policy_lint.rule_metadata(POLICIES, opa_binary).items()}


def decide(url: str, document: dict) -> dict:
    """One query of the entrypoint, as the gate makes it (builtin errors fail the query).

    Returns the raw result, checked against ``PolicyDecision`` with no field more or less, so that
    tests compare whole JSON objects.
    """
    response = requests.post(
        f"{url}/v1/data/{DEFAULT_ENTRYPOINT}",
        params={"strict-builtin-errors": "true"},
        json={"input": document},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    assert "result" in body, f"undefined decision: {body}"
    result = body["result"]
    assert PolicyDecision.model_validate(result).model_dump(exclude_unset=True) == result
    return result


def load_example(path: Path) -> tuple[str, dict]:
    [(rule, example)] = json.loads(path.read_text()).items()
    return rule, example


# --- (a) metadata and layout: the lint scripts/check-policies runs -----------------------------


def test_the_shipped_policies_pass_the_lint(opa_binary: Path, rule_metadata: dict[str, dict]) -> None:
    assert len(rule_metadata) >= 12
    assert policy_lint.lint(POLICIES, opa_binary) == []


def _rule_file(rule: str) -> str:
    return f"consent/rules/{rule}/{rule}.rego"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def _duplicate_id(copy: Path) -> None:
    _replace(copy / _rule_file("consent_expired"), "id: CONSENT-003", "id: CONSENT-004")


def _no_severity(copy: Path) -> None:
    _replace(copy / _rule_file("purpose_unknown"), "#   severity: high\n", "")


def _recoverable_maybe(copy: Path) -> None:
    _replace(copy / _rule_file("chain_of_custody_missing"), "recoverable: true", "recoverable: maybe")


def _misspelt_reference_data(copy: Path) -> None:
    (copy / "consent/reference/licenses").rename(copy / "consent/reference/licences")


def _entrypoint_outside_its_package_directory(copy: Path) -> None:
    (copy / "consent/main/main.rego").rename(copy / "consent/main.rego")


BROKEN = {
    "duplicate id": (
        _duplicate_id,
        [
            (
                _rule_file("consent_expired"),
                "consent_expired",
                "custom.id 'CONSENT-004' is also the id of consent_withdrawn",
            ),
            (
                _rule_file("consent_withdrawn"),
                "consent_withdrawn",
                "custom.id 'CONSENT-004' is also the id of consent_expired",
            ),
            (
                "examples/consent_expired.json",
                "consent_expired",
                "the expected violation's rule_id 'CONSENT-003' is not the rule's id 'CONSENT-004'",
            ),
        ],
    ),
    "missing severity": (
        _no_severity,
        [
            (_rule_file("purpose_unknown"), "purpose_unknown", "custom.severity is missing"),
        ],
    ),
    "recoverable: maybe": (
        _recoverable_maybe,
        [
            (
                _rule_file("chain_of_custody_missing"),
                "chain_of_custody_missing",
                "custom.recoverable 'maybe' is not a boolean (true or false)",
            ),
        ],
    ),
    "reference data in a misspelt directory": (
        _misspelt_reference_data,
        [
            (
                "consent/consent.rego",
                "data.consent.reference",
                "the schema names data.consent.reference.licenses, but there is no such data",
            ),
            (
                "consent/consent.rego",
                "data.consent.reference",
                "data.consent.reference.licences is data the schema does not name: add it to the schema, or rules "
                "cannot read it",
            ),
        ],
    ),
    "package outside its directory": (
        _entrypoint_outside_its_package_directory,
        [
            ("consent/main.rego", "data.consent.main", "the package belongs in directory consent/main/"),
        ],
    ),
}


def run_check_policies(opa_binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_POLICIES), *args],
        env={**os.environ, "OPA": str(opa_binary), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A policy author's copy of the shipped policies."""
    return Path(shutil.copytree(POLICIES, tmp_path / "my-policies"))


@pytest.mark.parametrize("breakage", BROKEN)
def test_a_broken_copy_fails_naming_file_rule_and_problem(breakage: str, policy_copy: Path, opa_binary: Path) -> None:
    breaking, expected = BROKEN[breakage]
    breaking(policy_copy)
    problems = [
        policy_lint.LintProblem(str(policy_copy / file), subject, problem) for file, subject, problem in expected
    ]
    assert policy_lint.lint(policy_copy, opa_binary) == problems

    checked = run_check_policies(opa_binary, str(policy_copy))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    reported = [line.removeprefix("policy-lint: ") for line in checked.stderr.splitlines()]
    assert reported == [*map(str, problems), f"{len(problems)} problem(s) in {policy_copy}"]


def test_a_misspelt_reference_data_path_in_a_rule_fails_opa_check(policy_copy: Path, opa_binary: Path) -> None:
    rule = policy_copy / "consent/lib/licenses/licenses.rego"
    _replace(
        rule, "import data.consent.reference.licenses.licenses as", "import data.consent.reference.licences.licenses as"
    )
    subprocess.run([str(opa_binary), "fmt", "-w", str(rule)], check=True, capture_output=True)  # imports sorted anew
    checked = run_check_policies(opa_binary, str(policy_copy))
    assert checked.returncode != 0
    assert any(
        f"{rule}:" in line and "rego_type_error: undefined ref: data.consent.reference.licences.licenses" in line
        for line in checked.stderr.splitlines()
    ), checked.stderr
    assert 'have: "licences"' in checked.stderr


def test_check_policies_checks_the_copy_it_is_given(policy_copy: Path, opa_binary: Path) -> None:
    checked = run_check_policies(opa_binary, str(policy_copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"check-policies: {policy_copy} with" in checked.stdout
    assert f"policy-lint: {policy_copy}: no problems" in checked.stdout
    assert "check-policies: coverage 100.00%" in checked.stdout


# --- (b) shared examples -----------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_through_the_server(path: Path, opa_server: str, rule_metadata: dict[str, dict]) -> None:
    rule, example = load_example(path)
    assert path.stem == rule
    good, bad = PolicyInput.model_validate(example["good"]), PolicyInput.model_validate(example["bad"])
    expected = example["expected"]
    assert Violation.model_validate(expected).model_dump(exclude_unset=True) == expected
    assert expected["rule_id"] == rule_metadata[rule]["custom"]["id"]
    assert len(good.partitions) == len(bad.partitions) == 1

    # Good and bad go in one batched query; an example whose bad request differs (purpose_unknown)
    # needs one query per request.
    batches: dict[str, list] = {}
    for document in (good, bad):
        batches.setdefault(document.request.model_dump_json(), []).extend(document.partitions)
    decided = {}
    for request, partitions in batches.items():
        document = PolicyInput(request=json.loads(request), partitions=partitions)
        decision = decide(opa_server, document.model_dump(mode="json"))
        assert [partition["id"] for partition in decision["partitions"]] == [partition.id for partition in partitions]
        decided.update({partition["id"]: partition for partition in decision["partitions"]})

    assert decided[good.partitions[0].id] == {"id": good.partitions[0].id, "allow": True, "violations": []}
    verdict = decided[bad.partitions[0].id]
    assert verdict["allow"] is False
    assert [violation for violation in verdict["violations"] if violation["rule_id"] == expected["rule_id"]] == [
        expected
    ]


def test_good_examples_allow_as_one_batch(opa_server: str) -> None:
    goods = [PolicyInput.model_validate(load_example(path)[1]["good"]) for path in EXAMPLES]
    partitions = [
        partition.model_copy(update={"id": f"{partition.id}/example={path.stem}"})
        for path, good in zip(EXAMPLES, goods, strict=True)
        for partition in good.partitions
    ]
    decision = decide(opa_server, PolicyInput(request=goods[0].request, partitions=partitions).model_dump(mode="json"))
    assert decision == {
        "allow": True,
        "partitions": [{"id": partition.id, "allow": True, "violations": []} for partition in partitions],
    }


def test_no_partitions_is_no_allow(opa_server: str) -> None:
    request = load_example(EXAMPLES[0])[1]["good"]["request"]
    assert decide(opa_server, {"request": request, "partitions": []}) == {"allow": False, "partitions": []}


# --- (c) the shipped example data --------------------------------------------------------------

EVALUATED_AT = "2026-11-16T08:00:00Z"


def _partition(source: str, consent: dict, provenance: dict) -> dict:
    partition_id = f"profile_photos/source={source}/year=2014"
    fingerprint = f"sha256:{source.encode().hex():0<64}"
    provenance.setdefault("attested_digest", None)
    if provenance["attested_digest"] == "real":
        provenance["attested_digest"] = fingerprint
    return {
        "id": partition_id,
        "dataset": "profile_photos",
        "keys": {"source": source, "year": "2014"},
        "uri": f"file:///data/{partition_id}",
        "fingerprint": fingerprint,
        "files": 3,
        "manifest": {
            "manifest_version": "1",
            "consent": {"collected_at": "2014-01-10T00:00:00Z", "minors": False, "biometric": True, **consent},
            "provenance": {"acquired_at": "2014-06-01T00:00:00Z", **provenance},
        },
        "manifest_source": f"file:///data/{partition_id}/_consent.json",
    }


def _custody(*holders: str) -> list[dict]:
    return [{"holder": holder, "received_at": "2014-06-01T00:00:00Z", "transfer": "sftp"} for holder in holders]


SHIPPED = {
    "okcupid": _partition(
        "okcupid",
        {
            "legal_basis": "contract",
            "purposes": ["service_delivery"],
            "scope": "first_party",
            "terms": "okcupid-terms-of-service-2014",
            "biometric_opt_in": False,
        },
        {
            "source": "okcupid",
            "collection_method": "bulk-export",
            "license": "okcupid-terms-of-service",
            "data_sharing_agreement": None,
            "chain_of_custody": _custody("okcupid"),
        },
    ),
    "studio_optin": _partition(
        "studio_optin",
        {
            "legal_basis": "consent",
            "purposes": ["face_recognition_training"],
            "scope": "third_party",
            "biometric_opt_in": True,
            "expires_at": "2028-01-01T00:00:00Z",
        },
        {
            "source": "studio_optin",
            "collection_method": "paid-studio-session",
            "license": "studio-optin-model-release",
            "data_sharing_agreement": "DSA-2024-017",
            "chain_of_custody": _custody("studio_optin", "ml-platform"),
            "attested_digest": "real",
        },
    ),
    "stock": _partition(
        "stock",
        {"legal_basis": "consent", "purposes": ["model_training"], "scope": "third_party", "biometric_opt_in": True},
        {
            "source": "stock",
            "collection_method": "stock-license-purchase",
            "license": "CC-BY-NC-4.0",
            "data_sharing_agreement": "DSA-2023-004",
            "chain_of_custody": _custody("stock", "ml-platform"),
        },
    ),
}

SHIPPED_DENIED_BY = {
    "okcupid": ["purpose_not_consented", "biometric_without_opt_in", "source_not_approved", "license_forbids_purpose"],
    "studio_optin": [],
    "stock": ["license_forbids_purpose"],
}


def test_shipped_example_data(opa_server: str, rule_metadata: dict[str, dict]) -> None:
    document = PolicyInput.model_validate(
        {
            "request": {"purpose": "face_recognition_training", "dag_id": "train_faces", "evaluated_at": EVALUATED_AT},
            "partitions": list(SHIPPED.values()),
        }
    )
    decision = decide(opa_server, document.model_dump(mode="json"))
    assert decision["allow"] is False
    assert [partition["id"] for partition in decision["partitions"]] == [
        partition.id for partition in document.partitions
    ]
    for source, verdict in zip(SHIPPED, decision["partitions"], strict=True):
        rules = SHIPPED_DENIED_BY[source]
        expected_ids = sorted(rule_metadata[rule]["custom"]["id"] for rule in rules)
        assert [violation["rule_id"] for violation in verdict["violations"]] == expected_ids, verdict
        assert verdict["allow"] is (not rules)
