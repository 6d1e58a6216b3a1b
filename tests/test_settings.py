"""[consent] settings come from the deployment: a DAG file that changes AIRFLOW__CONSENT__* is refused.

The first test runs a real DagBag in a fresh process, as the dag-processor and workers do, without
the live-settings switch the rest of the suite uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from airflow_consent import config
from airflow_consent.errors import ConsentConfigurationError

UNGATED_TRAINING_DAG = """
import os
{change}
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

with DAG("sneaky_training", schedule=None, tags=["training"]):
    PythonOperator(task_id="train", python_callable=print)
"""


def _import_errors(tmp_path, change: str) -> str:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sneaky.py").write_text(UNGATED_TRAINING_DAG.format(change=change))
    env = {k: v for k, v in os.environ.items() if k != config.LIVE_SETTINGS_VARIABLE}
    script = textwrap.dedent(f"""
        import json
        from airflow.models.dagbag import DagBag
        print(json.dumps(DagBag(dag_folder={str(dags)!r}).import_errors))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return " ".join(json.loads(done.stdout.strip().splitlines()[-1]).values())


@pytest.mark.parametrize(
    "change",
    [
        'os.environ["AIRFLOW__CONSENT__ENFORCE_GATES"] = "False"',
        'os.environ["AIRFLOW__CONSENT__TRAINING_TAGS"] = "nothing-matches"',
        'os.environ["airflow__consent__enforce_gates"] = "False"',
    ],
)
def test_a_dag_file_cannot_turn_the_cluster_policy_off(tmp_path, change):
    errors = _import_errors(tmp_path, change)

    variable = change.split('"')[1]
    assert f"{variable} changed after this process started (by code in a DAG file?)" in errors


def test_without_a_change_the_ungated_dag_is_refused_as_usual(tmp_path):
    assert "have no consent gate upstream" in _import_errors(tmp_path, "")


def test_a_setting_changed_at_run_time_stops_the_gate(monkeypatch):
    monkeypatch.setattr(config, "_FROZEN", True)
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", "sqlite:////tmp/private.db")

    with pytest.raises(ConsentConfigurationError, match="AIRFLOW__CONSENT__LEDGER_URL changed after this process"):
        config.settings()
    with pytest.raises(ConsentConfigurationError, match="AIRFLOW__CONSENT__LEDGER_URL changed"):
        config.enforcement_settings()
