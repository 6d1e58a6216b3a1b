"""The cluster policy through Airflow's own DagBag: which DAGs import, which fail, and why.

The policy is the installed ``airflow.policy`` entry point, so these tests also prove it is
registered. ``[consent]`` settings are changed through ``AIRFLOW__CONSENT__*`` env vars, which
Airflow's configuration reads on every lookup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_consent import cluster_policy
from airflow_consent.cluster_policy import CLEARANCE_MARKER

HEADER = """
from airflow.sdk import DAG, Asset, AssetAlias, task, TaskGroup
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_consent.operators.consent import ConsentGateOperator

def gate(task_id="consent_gate"):
    return ConsentGateOperator(task_id=task_id, datasets=["/data/profile_photos"], purpose="face_recognition_training")
"""

DAGS = {
    "gated": """
with DAG(dag_id="gated", schedule=None, tags=["training"]):
    EmptyOperator(task_id="extract") >> gate() >> EmptyOperator(task_id="train") >> EmptyOperator(task_id="publish")
""",
    "ungated": """
with DAG(dag_id="ungated", schedule=None, tags=["training"]):
    EmptyOperator(task_id="extract") >> EmptyOperator(task_id="train")
""",
    "gate_beside": """
with DAG(dag_id="gate_beside", schedule=None, tags=["training"]):
    extract = EmptyOperator(task_id="extract")
    extract >> gate()
    extract >> EmptyOperator(task_id="train")
""",
    "operator_before_gate": """
class FaceTrainingOperator(EmptyOperator):
    pass

with DAG(dag_id="operator_before_gate", schedule=None):
    FaceTrainingOperator(task_id="fit") >> gate()
""",
    "outlet_model": """
with DAG(dag_id="outlet_model", schedule=None):
    EmptyOperator(task_id="fit", outlets=[Asset("face_model", uri="model://face-embedder/v1")])
""",
    "untagged": """
with DAG(dag_id="untagged", schedule=None, tags=["reporting"]):
    EmptyOperator(task_id="extract") >> EmptyOperator(task_id="report", outlets=[AssetAlias("anything")])
""",
    "shapes": """
with DAG(dag_id="shapes", schedule=None, tags=["training"]):
    with TaskGroup("prep"):
        check = gate()

    @task
    def train(x):
        return x

    @task
    def teardown_step():
        pass

    check >> train.expand(x=[1, 2]) >> teardown_step().as_teardown()
""",
}


def write(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.py").write_text(HEADER + textwrap.dedent(DAGS[name]))
    return folder


def bag(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


def errors_by_dag(dagbag) -> dict[str, str]:
    return {Path(path).stem: text for path, text in dagbag.import_errors.items()}


def wrapped(task) -> bool:
    hook = task.__dict__.get("pre_execute") or getattr(task, "partial_kwargs", {}).get("pre_execute")
    return bool(getattr(hook, CLEARANCE_MARKER, False))


def test_gated_training_dag_imports_and_only_its_training_tasks_get_clearance(tmp_path):
    dagbag = bag(write(tmp_path, "gated"))

    assert dagbag.import_errors == {}
    tasks = dagbag.dags["gated"].task_dict
    # extract feeds the gate (data preparation); the gate itself is not training
    assert {t for t, task in tasks.items() if wrapped(task)} == {"train", "publish"}


def test_ungated_training_dag_fails_to_import_naming_the_task(tmp_path):
    dagbag = bag(write(tmp_path, "ungated"))

    assert "ungated" not in dagbag.dags
    error = errors_by_dag(dagbag)["ungated"]
    assert "AirflowClusterPolicyViolation" in error
    assert (
        "airflow-consent: DAG 'ungated': training task(s) 'extract' (DAG tag 'training'), 'train' (DAG tag "
        "'training') have no consent gate upstream."
    ) in error


def test_a_gate_beside_the_training_task_is_not_upstream_of_it(tmp_path):
    dagbag = bag(write(tmp_path, "gate_beside"))

    error = errors_by_dag(dagbag)["gate_beside"]
    assert "training task(s) 'train' (DAG tag 'training') have no consent gate upstream" in error


def test_training_operators_and_model_outlets_count_wherever_they_are(tmp_path):
    dagbag = bag(write(tmp_path, "operator_before_gate", "outlet_model"))

    errors = errors_by_dag(dagbag)
    assert "'fit' (operator class FaceTrainingOperator matches '*TrainingOperator')" in errors["operator_before_gate"]
    assert "'fit' (outlet 'model://face-embedder/v1' matches 'model://*')" in errors["outlet_model"]


def test_dags_that_do_not_train_are_left_alone(tmp_path):
    dagbag = bag(write(tmp_path, "untagged"))

    assert dagbag.import_errors == {}
    assert not any(wrapped(t) for t in dagbag.dags["untagged"].tasks)


def test_task_groups_mapped_tasks_and_teardowns(tmp_path):
    from airflow.serialization.serialized_objects import DagSerialization

    dagbag = bag(write(tmp_path, "shapes"))

    assert dagbag.import_errors == {}
    dag = dagbag.dags["shapes"]
    assert wrapped(dag.task_dict["train"])  # mapped: hooked in through partial(pre_execute=...)
    assert wrapped(dag.task_dict["teardown_step"])
    assert not wrapped(dag.task_dict["prep.consent_gate"])
    DagSerialization.to_dict(dag)  # what the dag-processor stores still serializes


def test_enforce_gates_false_lets_an_ungated_dag_import_but_clearance_still_wraps(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCE_GATES", "False")

    dagbag = bag(write(tmp_path, "ungated"))

    assert dagbag.import_errors == {}
    assert wrapped(dagbag.dags["ungated"].task_dict["train"])


def test_enforce_clearance_false_wraps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCE_CLEARANCE", "False")

    dagbag = bag(write(tmp_path, "gated"))

    assert dagbag.import_errors == {}
    assert not any(wrapped(t) for t in dagbag.dags["gated"].tasks)


def test_an_unparsable_switch_stays_on_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__ENFORCE_GATES", "nope")

    dagbag = bag(write(tmp_path, "ungated", "untagged"))

    errors = errors_by_dag(dagbag)
    assert set(errors) == {"ungated"}  # unrelated DAGs still import
    assert "[consent] enforce_gates is not a boolean, so it stays on" in errors["ungated"]


def test_detection_settings_are_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__TRAINING_TAGS", "reporting")
    monkeypatch.setenv("AIRFLOW__CONSENT__TRAINING_OPERATORS", "")
    monkeypatch.setenv("AIRFLOW__CONSENT__TRAINING_OUTLET_PATTERNS", "")

    dagbag = bag(write(tmp_path, "ungated", "untagged", "operator_before_gate", "outlet_model"))

    assert set(errors_by_dag(dagbag)) == {"untagged"}


def test_a_bug_in_the_check_fails_only_that_dag_with_a_message(monkeypatch):
    from airflow.exceptions import AirflowClusterPolicyViolation

    def broken(dag, settings):
        raise KeyError("boom")

    monkeypatch.setattr(cluster_policy, "ungated_training_tasks", broken)

    class FakeDag:
        dag_id = "any"

    with pytest.raises(AirflowClusterPolicyViolation, match=r"could not check DAG 'any': KeyError: 'boom'"):
        cluster_policy.dag_policy(FakeDag())


def test_the_example_dag_passes_the_policy():
    dagbag = bag(Path(__file__).resolve().parent.parent / "dags")

    assert dagbag.import_errors == {}
    assert wrapped(dagbag.dags["train_face_recognition"].task_dict["train"])


def test_provider_info_declares_the_defaults_config_reads():
    from airflow_consent import config
    from airflow_consent.provider_info import get_provider_info

    options = get_provider_info()["config"]["consent"]["options"]
    assert options["enforce_gates"]["default"] == "True"
    assert options["enforce_clearance"]["default"] == "True"
    assert options["training_tags"]["default"] == config.TRAINING_TAGS
    assert options["training_operators"]["default"] == config.TRAINING_OPERATORS
    assert options["training_outlet_patterns"]["default"] == config.TRAINING_OUTLET_PATTERNS


def test_the_policy_module_is_cheap_to_import():
    code = (
        "import sys, airflow_consent.cluster_policy; "
        "print([m for m in ('pyarrow', 'airflow.sdk', 'airflow_consent.operators.consent', "
        "'airflow_consent.clearance', 'airflow_consent.discovery', 'sqlalchemy.orm') if m in sys.modules])"
    )
    env = {**os.environ, "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1].replace("'", '"'))
    assert not {
        "pyarrow",
        "airflow_consent.operators.consent",
        "airflow_consent.clearance",
        "airflow_consent.discovery",
    } & set(loaded)


def cli_import_errors(tmp_path: Path, dags: Path, **settings: str) -> list[dict]:
    """The import errors the real CLI lists for ``dags``, in its own AIRFLOW_HOME with only ``settings``
    (env vars) set: migrate, parse into the database, list."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        **settings,
    )
    airflow = str(Path(sys.executable).parent / "airflow")

    def cli(*args: str, returncode: int = 0) -> str:
        result = subprocess.run([airflow, *args], capture_output=True, text=True, env=env, timeout=180)
        assert result.returncode == returncode, result.stderr[-3000:]
        return result.stdout

    cli("db", "migrate")
    cli("dags", "reserialize")
    out = cli("dags", "list-import-errors", "-o", "json", returncode=1)  # 1: there are import errors
    return json.loads(out[out.index("[{") :].splitlines()[0])


@pytest.mark.integration
def test_list_import_errors_cli_names_the_ungated_task(tmp_path):
    """The real CLI in its own AIRFLOW_HOME: migrate, parse into the database, list the import errors."""
    dags = write(tmp_path / "dags", "ungated", "gated")

    errors = cli_import_errors(tmp_path, dags)

    assert [e["filepath"] for e in errors] == ["ungated.py"]
    assert errors[0]["error"].startswith(
        "AirflowClusterPolicyViolation: airflow-consent: DAG 'ungated': training task(s) 'extract' (DAG tag "
        "'training'), 'train' (DAG tag 'training') have no consent gate upstream."
    )


def test_the_hook_marker_is_airflows():
    from airflow import policies, settings

    assert cluster_policy.hookimpl.project_name == policies.hookimpl.project_name
    registered = settings.get_policy_plugin_manager().get_plugins()
    assert cluster_policy in registered
    hooks = settings.get_policy_plugin_manager().hook
    assert cluster_policy.dag_policy in [impl.function for impl in hooks.dag_policy.get_hookimpls()]


# --- one walk per DAG: the same answers as the per-task functions, settings read once per parse ----


PURPOSE = "face_recognition_training"
SETTINGS = dict(
    enforce_gates=True,
    enforce_clearance=True,
    training_tags=("training",),
    training_operators=("*TrainingOperator",),
    training_outlet_patterns=("model://*",),
)


def random_dag(seed: int, tasks: int = 40):
    """A DAG with random dependencies (each task after a few earlier ones), gates and training classes."""
    import random

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent.operators.consent import ConsentGateOperator

    class FaceTrainingOperator(EmptyOperator):
        pass

    rng = random.Random(seed)
    with DAG(dag_id=f"random_{seed}", schedule=None, tags=["training"] if seed % 2 else ["other"]) as dag:
        made = []
        for index in range(tasks):
            kind = rng.random()
            if kind < 0.1:
                task = ConsentGateOperator(task_id=f"gate_{index}", datasets=["/data/x"], purpose=PURPOSE)
            elif kind < 0.2:
                task = FaceTrainingOperator(task_id=f"fit_{index}")
            else:
                task = EmptyOperator(task_id=f"t_{index}")
            for upstream in rng.sample(made, k=min(len(made), rng.randint(0, 3))):
                upstream >> task
            made.append(task)
    return dag


@pytest.mark.parametrize("seed", range(8))
def test_the_scan_answers_as_the_per_task_functions(seed):
    from airflow_consent.config import EnforcementSettings

    settings = EnforcementSettings(**SETTINGS)
    dag = random_dag(seed)

    scan = cluster_policy.TrainingScan(dag, settings)

    reasons = {t.task_id: r for t in dag.tasks if (r := cluster_policy.training_reason(t, settings))}
    assert scan.reasons == reasons
    assert scan.gated == {t.task_id for t in dag.tasks if cluster_policy.upstream_gates(t)}
    assert scan.ungated() == {t: r for t, r in reasons.items() if not cluster_policy.upstream_gates(dag.task_dict[t])}


def test_one_dag_parse_reads_the_settings_once_and_walks_the_graph_once(tmp_path, monkeypatch):
    from airflow_consent import config

    reads, scans = [], []
    read, scan = config.enforcement_settings, cluster_policy.TrainingScan.__init__
    monkeypatch.setattr(config, "enforcement_settings", lambda: reads.append(1) or read())
    monkeypatch.setattr(cluster_policy.TrainingScan, "__init__", lambda self, *a: scans.append(1) or scan(self, *a))
    (tmp_path / "wide.py").write_text(
        HEADER
        + textwrap.dedent("""
        with DAG(dag_id="wide", schedule=None, tags=["training"]):
            previous = gate()
            for i in range(300):
                previous = previous >> EmptyOperator(task_id=f"t{i}")
    """)
    )

    dagbag = bag(tmp_path)

    assert dagbag.import_errors == {}
    assert sum(wrapped(t) for t in dagbag.dags["wide"].tasks) == 300
    assert (len(reads), len(scans)) == (1, 1)


def test_a_dag_another_policy_changes_after_ours_is_walked_again_for_the_task_policy():
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent.operators.consent import ConsentGateOperator

    with DAG(dag_id="changed", schedule=None, tags=["training"]) as dag:
        export = EmptyOperator(task_id="export")
        first = ConsentGateOperator(task_id="first_gate", datasets=["/data/x"], purpose=PURPOSE)
        EmptyOperator(task_id="extract") >> first >> [EmptyOperator(task_id="train"), export]
    cluster_policy.dag_policy(dag)
    # What a later cluster policy might do before the task policies run: `export` now feeds a gate.
    export >> ConsentGateOperator(task_id="second_gate", datasets=["/data/x"], purpose=PURPOSE, dag=dag)
    for task in dag.tasks:
        cluster_policy.task_policy(task)

    assert {t.task_id for t in dag.tasks if wrapped(t)} == {"train"}
