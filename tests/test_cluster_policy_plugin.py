"""The plugin and the policy as installed entry points, and the worker-start-up path of the policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster_policy import bag, wrapped, write

PLUGINS = """
import json
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
links = [link.name for link in plugins_manager.get_operator_extra_links()]
print(json.dumps({"plugins": [p.name for p in plugins], "errors": errors, "links": links}))
"""


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_the_plugin_loads_with_and_without_lazy_provider_discovery(tmp_path, lazy):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=lazy
    )

    out = subprocess.run([sys.executable, "-c", PLUGINS], env=env, capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])

    assert loaded["plugins"].count("airflow_consent") == 1  # beside other providers' (e.g. OpenLineage's)
    assert "Consent report" in loaded["links"]
    # registered twice on purpose: with lazy discovery off, Airflow skips the provider-info copy and says so
    expected = None if lazy == "True" else "Plugin 'airflow_consent' already registered, skipping"
    assert loaded["errors"].get("airflow_consent") == expected


def test_the_consent_report_link_points_at_the_runs_consent_decisions_tab():
    from airflow.models.taskinstancekey import TaskInstanceKey

    from airflow_consent.plugin import ConsentReportLink

    key = TaskInstanceKey(dag_id="train", task_id="gate", run_id="manual__2026-01-01T00:00:00+00:00")
    link = ConsentReportLink().get_link(None, ti_key=key)

    assert link.endswith("/dags/train/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/plugin/consent_decisions")


def run_as_task_startup(function):
    """Call ``function`` from a frame that looks like the task runner's DAG-file parse."""
    namespace = {"__name__": "airflow.sdk.execution_time.task_runner", "function": function}
    exec(compile("def parse():\n    return function()\n", "task_runner.py", "exec"), namespace)
    return namespace["parse"]()


def test_a_worker_loads_an_ungated_dag_and_leaves_the_refusal_to_the_clearance(tmp_path):
    folder = write(tmp_path, "ungated")

    dagbag = run_as_task_startup(lambda: bag(folder))

    assert dagbag.import_errors == {}
    assert wrapped(dagbag.dags["ungated"].task_dict["train"])
    assert [Path(p).name for p in bag(folder).import_errors] == ["ungated.py"]  # elsewhere: still refused


def test_without_clearance_a_worker_refuses_the_ungated_dag_too(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCE_CLEARANCE", "False")

    dagbag = run_as_task_startup(lambda: bag(write(tmp_path, "ungated")))

    assert [Path(p).name for p in dagbag.import_errors] == ["ungated.py"]
