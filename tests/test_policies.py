"""The shipped Rego policies, judged through the real OPA: metadata, shared examples, example data.

The Rego unit tests (``opa test policies``, run by ``scripts/check-policies``) assert each rule on
its own; these tests assert what the gate sees: the whole decision from the entrypoint of an OPA
server serving the ``policies/`` bundle.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from airflow_consent.models import PolicyDecision, PolicyInput, Violation
from airflow_consent.policies import DEFAULT_ENTRYPOINT, policy_dir

pytestmark = pytest.mark.integration

POLICIES = policy_dir()
EXAMPLES = sorted((POLICIES / "examples").glob("*.json"))
RULES_PREFIX = "data.consent.rules."
REQUIRED_CUSTOM = ("id", "severity", "regulation", "remediation", "recoverable")


@pytest.fixture(scope="module")
def rule_metadata(opa_binary: Path) -> dict[str, dict]:
    """Rule name (its package's last segment) → its package METADATA, as ``opa inspect`` reads it."""
    out = subprocess.run(
        [str(opa_binary), "inspect", "--annotations", "--format", "json", str(POLICIES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    inspected = json.loads(out)
    packages = {
        name.removeprefix(RULES_PREFIX)
        for name, files in inspected["namespaces"].items()
        if name.startswith(RULES_PREFIX)
        and not name.endswith("_test")
        and any(file.endswith(".rego") for file in files)
    }
    annotations = {
        ".".join(segment["value"] for segment in entry["path"]).removeprefix(RULES_PREFIX): entry["annotations"]
        for entry in inspected.get("annotations", [])
        if entry["annotations"].get("scope") == "package"
    }
    return {name: annotations.get(name, {}) for name in packages}


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


# --- (a) metadata ------------------------------------------------------------------------------


def test_every_rule_has_complete_metadata(rule_metadata: dict[str, dict]) -> None:
    assert len(rule_metadata) >= 12
    for rule, metadata in rule_metadata.items():
        custom = metadata.get("custom", {})
        assert metadata.get("title"), f"{rule}: no title"
        assert metadata.get("description"), f"{rule}: no description"
        missing = [field for field in REQUIRED_CUSTOM if field not in custom]
        assert not missing, f"{rule}: custom metadata lacks {missing}"
        assert custom["severity"] in {"critical", "high", "medium", "low"}, rule
        assert custom["regulation"] and all(isinstance(ref, str) and ref for ref in custom["regulation"]), rule
        assert isinstance(custom["remediation"], str) and custom["remediation"].strip(), rule
        assert isinstance(custom["recoverable"], bool), rule


def test_rule_ids_are_unique(rule_metadata: dict[str, dict]) -> None:
    ids = [annotations["custom"]["id"] for annotations in rule_metadata.values()]
    assert len(ids) == len(set(ids)), sorted(ids)


def test_every_rule_has_an_example(rule_metadata: dict[str, dict]) -> None:
    assert sorted(rule_metadata) == sorted(path.stem for path in EXAMPLES)


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
    assert [violation for violation in verdict["violations"] if violation["rule_id"] == expected["rule_id"]] == [expected]


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
    assert [partition["id"] for partition in decision["partitions"]] == [partition.id for partition in document.partitions]
    for source, verdict in zip(SHIPPED, decision["partitions"], strict=True):
        rules = SHIPPED_DENIED_BY[source]
        expected_ids = sorted(rule_metadata[rule]["custom"]["id"] for rule in rules)
        assert [violation["rule_id"] for violation in verdict["violations"]] == expected_ids, verdict
        assert verdict["allow"] is (not rules)
