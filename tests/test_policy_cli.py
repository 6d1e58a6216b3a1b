"""``airflow-consent policy`` and ``airflow-consent reference``: the policy author's tools, run on copies
of the shipped policies with the real OPA (binary and server)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import running_opa_server
from typer.testing import CliRunner

from airflow_consent.cli import app
from airflow_consent.policies import policy_dir, policy_revision
from airflow_consent.sample_data import generate_profile_photos

pytestmark = pytest.mark.integration

POLICIES = policy_dir()
PURPOSE = "face_recognition_training"
LICENSE_RULE = "consent/rules/license_forbids_purpose/license_forbids_purpose.rego"
CUSTODY_RULE = "consent/rules/chain_of_custody_missing/chain_of_custody_missing.rego"
OKCUPID = ("profile_photos/source=okcupid/year=2013", "profile_photos/source=okcupid/year=2014")
STOCK = "profile_photos/source=stock/year=2022"
STUDIO = ("profile_photos/source=studio_optin/year=2024", "profile_photos/source=studio_optin/year=2025")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return generate_profile_photos(tmp_path_factory.mktemp("policy-cli"))


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A policy author's copy of the shipped policies."""
    return Path(shutil.copytree(POLICIES, tmp_path / "my-policies"))


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def line_of(path: Path, text: str) -> int:
    [number] = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text)]
    return number


# --- policy check ------------------------------------------------------------------------------


def test_check_fails_a_copy_with_a_duplicate_rule_id_naming_file_and_rule(policy_copy: Path, opa_binary: Path) -> None:
    expired = policy_copy / "consent/rules/consent_expired/consent_expired.rego"
    replace(expired, "id: CONSENT-003", "id: CONSENT-004")
    result = invoke("policy", "check", policy_copy, "--opa", opa_binary)
    assert result.exit_code == 1
    assert (
        f"policy-lint: {expired}: consent_expired: custom.id 'CONSENT-004' is also the id of consent_withdrawn"
        in result.stderr.splitlines()
    )
    assert "opa test" not in result.stdout  # stops at the first failing check


def test_check_runs_every_check_and_fails_below_the_coverage_threshold(policy_copy: Path, opa_binary: Path) -> None:
    """(A copy that passes every check: tests/test_policies.py runs scripts/check-policies, this command.)"""
    rule = policy_copy / CUSTODY_RULE
    rule.write_text(rule.read_text() + "\n_never_called(x) := x + 1\n")
    uncovered = line_of(rule, "_never_called")
    result = invoke("policy", "check", policy_copy, "--opa", opa_binary, "--coverage-threshold", 100)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"check-policies: {policy_copy} with OPA 1.")
    assert f"policy-lint: {policy_copy}: no problems" in lines
    assert lines[-2].startswith("check-policies: coverage 99.")
    assert lines[-1] == f"  not covered: {rule}:{uncovered}"
    assert result.stderr == "check-policies: coverage below 100%\n"


def test_check_fails_unformatted_policies_naming_the_file(policy_copy: Path, opa_binary: Path) -> None:
    replace(policy_copy / CUSTODY_RULE, "\tsome index, manifest in", "  some   index, manifest in")
    result = invoke("policy", "check", policy_copy, "--opa", opa_binary)
    assert result.exit_code == 1
    assert str(policy_copy / CUSTODY_RULE) in result.stderr
    assert f"check-policies: not formatted (run: {opa_binary} fmt -w {policy_copy})" in result.stderr


def test_check_is_broken_without_a_working_opa(policy_copy: Path, tmp_path: Path) -> None:
    result = invoke("policy", "check", policy_copy, "--opa", tmp_path / "no-opa")
    assert result.exit_code == 2
    assert "does not run as opa" in result.stderr


# --- policy impact -----------------------------------------------------------------------------


def test_impact_names_the_partitions_and_the_rule_a_change_releases(
    sample: Path, policy_copy: Path, opa_binary: Path
) -> None:
    replace(
        policy_copy / LICENSE_RULE,
        "_license_problems[id]\n\t}\n\tcount(problems) > 0",
        "_license_problems[id]\n\t}\n\tcount(problems) > 99",
    )  # PROV-003 never fires
    result = invoke("policy", "impact", sample, "--base", POLICIES, "--new", policy_copy, "--purpose", PURPOSE)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert f"  NOW ALLOWED  {STOCK}  -PROV-003" in lines
    assert all(f"  STILL DENIED {partition}  -PROV-003" in lines for partition in OKCUPID)
    assert "  PROV-003: +0 -3" in lines
    assert lines[-1] == "0 newly denied, 1 newly allowed, 2 denied by other rules, 2 unchanged"
    assert not any(partition in result.stdout for partition in STUDIO)


def test_impact_as_json_names_partitions_rules_and_revisions(sample: Path, policy_copy: Path, opa_binary: Path) -> None:
    rule = policy_copy / CUSTODY_RULE  # PROV-004 now wants more than two hand-overs
    replace(
        rule,
        'count(object.get(manifest.provenance, "chain_of_custody", [])) == 0',
        'count(object.get(manifest.provenance, "chain_of_custody", [])) < 3',
    )
    result = invoke(
        "policy", "impact", sample, "--base", POLICIES, "--new", policy_copy, "--purpose", PURPOSE, "--json"
    )
    assert result.exit_code == 1, result.output
    impact = json.loads(result.stdout)
    assert [(c["id"], c["base_allow"], c["new_allow"], c["added"], c["removed"]) for c in impact["changes"]] == [
        *((partition, False, False, ["PROV-004"], []) for partition in OKCUPID),
        (STOCK, False, False, ["PROV-004"], []),
        *((partition, True, False, ["PROV-004"], []) for partition in STUDIO),
    ]
    assert impact["rules"] == {"PROV-004": {"added": 5, "removed": 0}}
    assert impact["totals"] == {
        "partitions": 5,
        "newly_denied": 2,
        "newly_allowed": 0,
        "other_rules": 3,
        "unchanged": 0,
        "base_denied": 3,
        "new_denied": 5,
    }
    assert impact["policies"] == {
        "base": {"path": str(POLICIES), "revision": policy_revision(POLICIES)},
        "new": {"path": str(policy_copy), "revision": policy_revision(policy_copy)},
    }


def test_impact_of_an_unchanged_copy_is_nothing_and_exits_0(sample: Path, policy_copy: Path, opa_binary: Path) -> None:
    result = invoke(
        "policy",
        "impact",
        sample,
        "--base",
        POLICIES,
        "--new",
        policy_copy,
        "--purpose",
        PURPOSE,
        "--where",
        "source=stock",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "0 newly denied, 0 newly allowed, 0 denied by other rules, 1 unchanged"


def test_impact_of_policies_that_do_not_compile_is_an_error(sample: Path, policy_copy: Path, opa_binary: Path) -> None:
    replace(policy_copy / CUSTODY_RULE, "\tsome index, manifest in", "\tsome index, manifest in in")
    result = invoke("policy", "impact", sample, "--base", POLICIES, "--new", policy_copy, "--purpose", PURPOSE)
    assert result.exit_code == 2
    assert "chain_of_custody_missing.rego" in result.stderr


# --- policy explain ----------------------------------------------------------------------------


def test_explain_names_the_rule_its_remediation_and_its_source(
    sample: Path, policy_copy: Path, opa_binary: Path
) -> None:
    result = invoke(
        "policy", "explain", sample / "source=stock" / "year=2022", "--purpose", PURPOSE, "--policy-path", policy_copy
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"DENY {STOCK} for purpose {PURPOSE!r} (policies {policy_copy})"
    assert "  manifest.provenance.license: CC-BY-NC-4.0" in lines
    assert "  manifest.provenance.source: stock" in lines
    assert "Violations: 1" in lines
    assert "  PROV-003 License forbids purpose (high, not recoverable)" in lines
    assert (
        '    message: license "CC-BY-NC-4.0" of source "stock" does not permit commercial use and purpose '
        f'"{PURPOSE}" is commercial'
    ) in lines
    assert any(line.startswith("    fix: Exclude the partition, or acquire the data") for line in lines)
    assert "    see: EU Directive 2019/790 Art. 4(3); 17 U.S.C. 106; FTC Act s.5" in lines
    rule = policy_copy / LICENSE_RULE
    start = line_of(rule, "violation contains")
    end = start + rule.read_text().splitlines()[start - 1 :].index("}")
    assert f"    rule: consent.rules.license_forbids_purpose.violation at {rule}:{start}-{end}" in lines
    assert f"      {start:>4}  violation contains result.violation(rego.metadata.chain(), index," in "\n".join(lines)
    assert f"      {end:>4}  }}" in lines


def test_explain_as_json_gives_the_input_and_every_rule_that_fired(sample: Path, opa_binary: Path) -> None:
    result = invoke("policy", "explain", sample / "source=okcupid" / "year=2014", "--purpose", PURPOSE, "--json")
    assert result.exit_code == 1, result.output
    explained = json.loads(result.stdout)
    assert explained["request"]["purpose"] == PURPOSE
    assert explained["partition"]["manifest"]["provenance"]["source"] == "okcupid"
    fired = [v["rule_id"] for v in explained["decision"]["violations"]]
    assert fired == ["CONSENT-001", "CONSENT-002", "PROV-001", "PROV-003"]
    assert list(explained["rules"]) == fired
    source = explained["rules"]["PROV-001"]
    assert source["package"] == "consent.rules.source_not_approved"
    assert source["file"] == str(POLICIES / "consent/rules/source_not_approved/source_not_approved.rego")
    assert source["metadata"]["custom"]["remediation"].startswith("Exclude the partition")
    [definition] = source["definitions"]
    assert definition["source"].startswith("violation contains")


def test_explain_an_allowed_partition_exits_0(sample: Path, opa_binary: Path) -> None:
    result = invoke("policy", "explain", f"{sample}/source=studio_optin/year=2024/", "--purpose", PURPOSE)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"ALLOW {STUDIO[0]} for purpose")
    assert "Violations: 0" in result.stdout


def test_explain_needs_a_partition_directory(sample: Path, opa_binary: Path) -> None:
    assert invoke("policy", "explain", sample, "--purpose", PURPOSE).exit_code == 2
    missing = invoke("policy", "explain", sample / "source=stock" / "year=1999", "--purpose", PURPOSE)
    assert missing.exit_code == 2
    assert "year=1999" in missing.stderr


# --- policy bundle -----------------------------------------------------------------------------


def test_bundle_leaves_out_tests_and_examples_and_a_server_reports_its_revision(
    sample: Path, policy_copy: Path, opa_binary: Path, tmp_path: Path, monkeypatch
) -> None:
    bundle = tmp_path / "bundle.tar.gz"
    revision = policy_revision(policy_copy)
    result = invoke("policy", "bundle", policy_copy, "-o", bundle)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{bundle}: revision {revision}, 26 policy file(s), unsigned"
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("/.manifest"))
    assert manifest["revision"] == revision
    assert "/consent/main/main.rego" in names and "/data.json" in names
    assert not [name for name in names if name.endswith("_test.rego") or "examples" in name]

    with running_opa_server(opa_binary, bundle) as url:
        host, port = url.removeprefix("http://").split(":")
        monkeypatch.setenv("AIRFLOW_CONN_OPA_BUNDLE", json.dumps({"conn_type": "opa", "host": host, "port": int(port)}))
        served = invoke("check", sample, "--purpose", PURPOSE, "--opa-conn-id", "opa_bundle", "--json")
    assert served.exit_code == 1, served.output
    report = json.loads(served.stdout)
    assert report["policy_revision"] == f"{bundle}@{revision}"  # provenance.bundles[*].revision, via OpaHook
    assert sorted(p["id"] for p in report["partitions"] if not p["allow"]) == sorted([*OKCUPID, STOCK])
    local = invoke("check", sample, "--purpose", PURPOSE, "--policy-path", policy_copy, "--json")
    assert json.loads(local.stdout)["policy_revision"] == revision  # the local engine names the same revision


def test_a_signed_bundle_loads_only_with_its_verification_key(
    policy_copy: Path, opa_binary: Path, tmp_path: Path
) -> None:
    keys = {}
    for name in ("ours", "theirs"):
        private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        subprocess.run(["openssl", "genrsa", "-out", private, "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", private, "-pubout", "-out", public], check=True, capture_output=True)
        keys[name] = (private, public)
    signed, unsigned = tmp_path / "signed.tar.gz", tmp_path / "unsigned.tar.gz"
    result = invoke("policy", "bundle", policy_copy, "-o", signed, "--revision", "v7", "--signing-key", keys["ours"][0])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{signed}: revision v7, 26 policy file(s), signed"
    assert invoke("policy", "bundle", policy_copy, "-o", unsigned).exit_code == 0

    def load(bundle: Path, public_key: Path) -> tuple[int, str]:
        """``opa run`` (the REPL) with bundle verification, asked one reference-data value: exit code, output."""
        done = subprocess.run(
            [str(opa_binary), "run", "--bundle", str(bundle), "--verification-key", str(public_key)],
            input="data.consent.reference.purposes.purposes.face_recognition_training.parent\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    accepted = load(signed, keys["ours"][1])
    assert accepted[0] == 0 and '"biometric_model_training"' in accepted[1], accepted[1]
    refused = load(unsigned, keys["ours"][1])
    assert refused[0] == 1 and "bundle missing .signatures.json" in refused[1]
    forged = load(signed, keys["theirs"][1])
    assert forged[0] == 1 and "signature" in forged[1]
    altered = tmp_path / "altered.tar.gz"  # the signed bundle with one purpose's parent changed
    with tarfile.open(signed) as original, tarfile.open(altered, "w:gz") as copy:
        for member in original.getmembers():
            content = original.extractfile(member).read()
            if member.name == "/data.json":
                changed = content.replace(b'"parent":"biometric_model_training"', b'"parent":"analytics"')
                assert changed != content
                content, member.size = changed, len(changed)
            copy.addfile(member, io.BytesIO(content))
    tampered = load(altered, keys["ours"][1])
    assert tampered[0] == 1 and "data.json: digest mismatch" in tampered[1], tampered[1]


# --- reference ---------------------------------------------------------------------------------


def test_reference_lists_purposes_sources_and_licenses(opa_binary: Path) -> None:
    purposes = invoke("reference", "purposes", "--policy-path", POLICIES)
    assert purposes.exit_code == 0, purposes.output
    assert "│       face_recognition_training │" in purposes.stdout  # under its three ancestors
    sources = invoke("reference", "sources", "--policy-path", POLICIES)
    assert "studio_optin" in sources.stdout and "DSA-2024-017" in sources.stdout
    licenses = invoke("reference", "licenses", "--policy-path", POLICIES)
    assert "│ CC-BY-NC-4.0 " in licenses.stdout and "│ okcupid-terms-of-service " in licenses.stdout


def test_reference_reads_the_copy_it_is_given_and_filters(policy_copy: Path) -> None:
    path = policy_copy / "consent/reference/purposes/data.json"
    taxonomy = json.loads(path.read_text())
    taxonomy["purposes"]["voice_cloning_training"] = {
        "title": "Training voice-cloning models",
        "parent": "biometric_model_training",
        "commercial": True,
        "biometric": True,
        "model_training": True,
    }
    path.write_text(json.dumps(taxonomy))
    listed = invoke("reference", "purposes", "--policy-path", policy_copy, "--json")
    assert json.loads(listed.stdout) == taxonomy["purposes"]

    terms = json.loads(
        invoke("reference", "licenses", "--policy-path", policy_copy, "--family", "service-terms", "--json").stdout
    )
    assert terms["okcupid-terms-of-service"]["defined_in"] == "license_terms"
    assert {entry["family"] for entry in terms.values()} == {"service-terms"}
    matched = invoke("reference", "licenses", "--policy-path", policy_copy, "--match", "cc-by-nc-4")
    assert matched.stdout.startswith("1 of ") and "│ CC-BY-NC-4.0 " in matched.stdout
