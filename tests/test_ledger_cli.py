"""``airflow-consent ledger verify | show | export | head`` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from airflow.configuration import AIRFLOW_HOME
from test_ledger import TAMPERING, six_records, tamper
from typer.testing import CliRunner

from airflow_consent.cli import app
from airflow_consent.ledger import Ledger
from airflow_consent.ledger.keys import KEY_FILE, deployment_key
from airflow_consent.ledger.records import GENESIS

runner = CliRunner()


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    with Ledger(url) as ledger:
        six_records(ledger)
    return url


def invoke(*args: str):
    return runner.invoke(app, ["ledger", *args])


def test_verify_an_intact_ledger_exits_0(url):
    done = invoke("verify", "--url", url)
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"ledger OK: 6 record(s) in {url}, head 6:sha256:")


def test_verify_a_tampered_ledger_exits_1_and_names_each_problem(url):
    tamper(url, *TAMPERING["edited"][0], *TAMPERING["deleted-last"][0])
    done = invoke("verify", "--url", url)
    assert done.exit_code == 1
    assert done.output.splitlines() == [
        f"ledger TAMPERED: 2 problem(s) in 5 record(s) of {url}",
        "  seq 4: edited (its content no longer matches its record_hash)",
        "  seq 6: deleted (the records end at seq 5 but the head is seq 6: truncated)",
        f"signatures: checked with key {deployment_key(None, create=False).id} ({AIRFLOW_HOME}/{KEY_FILE})",
    ]


def test_verify_on_postgres(postgres_url):
    with Ledger(postgres_url) as ledger:
        six_records(ledger)
    assert invoke("verify", "--url", postgres_url).exit_code == 0
    tamper(postgres_url, *TAMPERING["reordered"][0])
    done = invoke("verify", "--url", postgres_url)
    assert done.exit_code == 1 and "seq 3: reordered" in done.output


def test_verifying_a_missing_sqlite_file_fails_and_does_not_create_it(tmp_path):
    done = invoke("verify", "--url", f"sqlite:///{tmp_path}/typo/ledger.db")
    assert done.exit_code == 2
    assert f"there is no consent ledger at sqlite:///{tmp_path}/typo/ledger.db: nothing was verified" in done.output
    assert not (tmp_path / "typo").exists()


def test_an_anchor_taken_on_an_empty_ledger_stays_valid(tmp_path):
    url = f"sqlite:///{tmp_path}/new-ledger.db"
    empty_anchor = invoke("head", "--url", url).output.strip()
    with Ledger(url) as ledger:
        six_records(ledger)

    done = invoke("verify", "--url", url, "--anchor", empty_anchor)

    assert empty_anchor == "0:" + GENESIS
    assert done.exit_code == 0, done.output
    assert invoke("verify", "--url", url, "--anchor", "0:sha256:" + "1" * 64).exit_code == 1


def test_verify_reads_the_url_from_the_consent_section(url, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)
    done = invoke("verify")
    assert done.exit_code == 0 and "6 record(s)" in done.output


def test_head_and_anchor_catch_a_truncation_the_database_hides(url):
    anchor = invoke("head", "--url", url).output.strip()
    assert anchor.startswith("6:sha256:")
    tamper(
        url,
        "DELETE FROM consent_ledger WHERE seq >= 5",
        "UPDATE consent_ledger_head SET last_seq = 4, "
        "last_hash = (SELECT record_hash FROM consent_ledger WHERE seq = 4)",
    )
    assert invoke("verify", "--url", url).exit_code == 0
    done = invoke("verify", "--url", url, "--anchor", anchor)
    assert done.exit_code == 1 and "seq 6: missing, but the anchor" in done.output


def test_a_bad_anchor_is_a_usage_error(url):
    done = invoke("verify", "--url", url, "--anchor", "six")
    assert done.exit_code == 2 and "SEQ:sha256:HEX" in done.output


def test_an_unreachable_ledger_exits_2():
    done = invoke("verify", "--url", "postgresql://nobody@127.0.0.1:1/none")
    assert done.exit_code == 2 and "could not read the consent ledger" in done.output


def test_show_prints_a_table_of_the_latest_records(url):
    done = runner.invoke(app, ["ledger", "show", "--url", url, "--limit", "3"], env={"COLUMNS": "160"})
    assert done.exit_code == 0, done.output
    assert "consent ledger, seq 4..6, purpose face_recognition_training" in done.output
    lines = [line for line in done.output.splitlines() if line.startswith("│")]
    assert len(lines) == 3
    assert "│   4 │" in lines[0] and "ds/b" in lines[0] and "deny" in lines[0] and "CONSENT-001" in lines[0]
    assert "│   5 │" in lines[1] and "ds/a" in lines[1] and "allow" in lines[1] and "train.consent_gate" in lines[1]


def test_show_filters_by_run(url):
    done = invoke("show", "--url", url, "--run-id", "nope")
    assert done.exit_code == 0 and "no records" in done.output


def test_export_writes_every_field_of_every_record_as_json_lines(url, tmp_path):
    out = tmp_path / "ledger.jsonl"
    done = invoke("export", "--url", url, "--output", str(out))
    assert done.exit_code == 0, done.output
    lines = out.read_text().splitlines()
    assert len(lines) == 6
    exported = [json.loads(line) for line in lines]
    with Ledger(url) as ledger:
        assert exported == [r.model_dump(mode="json") for r in ledger.records()]
    assert set(exported[0]) >= {
        "seq",
        "decision_id",
        "recorded_at",
        "dag_id",
        "run_id",
        "task_id",
        "purpose",
        "partition_id",
        "partition_uri",
        "fingerprint",
        "opa_version",
        "policy_revision",
        "input_digest",
        "mode",
        "allow",
        "violations",
        "prev_hash",
        "record_hash",
    }


def test_export_to_stdout(url):
    done = invoke("export", "--url", url)
    assert done.exit_code == 0
    assert [json.loads(line)["seq"] for line in done.output.splitlines()] == [1, 2, 3, 4, 5, 6]


def test_an_export_can_be_verified_offline_and_its_tampering_detected(url, tmp_path):
    out = tmp_path / "ledger.jsonl"
    invoke("export", "--url", url, "--output", str(out))
    assert invoke("verify", "--file", str(out)).exit_code == 0

    records = [json.loads(line) for line in out.read_text().splitlines()]
    records[3]["allow"] = True
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = invoke("verify", "--file", str(out))
    assert done.exit_code == 1 and "seq 4: edited" in done.output
