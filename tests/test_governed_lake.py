"""The governed lake (``[consent] governed_uri_prefixes``): a task reading it needs a gate, whatever it is.

DAG files are loaded through Airflow's own DagBag (the installed ``airflow.policy`` entry point), with
the setting in ``AIRFLOW__CONSENT__GOVERNED_URI_PREFIXES``, as in ``test_cluster_policy``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_cluster_policy import bag, cli_import_errors, errors_by_dag, wrapped

PREFIXES = "AIRFLOW__CONSENT__GOVERNED_URI_PREFIXES"

HEADER = """
from airflow.sdk import DAG, Asset, AssetAlias, task
from airflow.providers.standard.operators.python import PythonOperator
from airflow_consent.operators.consent import ConsentGateOperator

def fit(*args):
    pass

def gate(**kwargs):
    return ConsentGateOperator(task_id="consent_gate", datasets=["s3://lake/curated/faces"],
                               purpose="face_recognition_training", **kwargs)

FACES = Asset("faces", uri="s3://lake/curated/faces")
"""

READER = """
with DAG(dag_id="{dag_id}", schedule=None):
    PythonOperator(task_id="load_and_fit", python_callable=fit, inlets=[{inlet}])
"""


def write(folder: Path, **dags: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in dags.items():
        (folder / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
    return folder


def reader(dag_id: str, inlet: str = "FACES") -> str:
    return READER.format(dag_id=dag_id, inlet=inlet)


def test_an_unrecognised_reader_of_the_lake_fails_to_import_naming_the_task_and_the_uri(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated")

    dagbag = bag(write(tmp_path, reader_ungated=reader("reader_ungated")))

    assert "reader_ungated" not in dagbag.dags
    error = errors_by_dag(dagbag)["reader_ungated"]
    assert "AirflowClusterPolicyViolation" in error
    assert (
        "airflow-consent: DAG 'reader_ungated': training task(s) 'load_and_fit' (inlet 's3://lake/curated/faces' "
        "is in the governed lake 's3://lake/curated') have no consent gate upstream."
    ) in error


def test_the_option_is_off_by_default_and_setting_it_is_what_turns_it_on(tmp_path, monkeypatch):
    from airflow_consent.config import enforcement_settings

    monkeypatch.delenv(PREFIXES, raising=False)
    assert enforcement_settings().governed_uri_prefixes == ()
    folder = write(tmp_path, reader_ungated=reader("reader_ungated"))

    dagbag = bag(folder)
    assert dagbag.import_errors == {}
    assert not wrapped(dagbag.dags["reader_ungated"].task_dict["load_and_fit"])

    monkeypatch.setenv(PREFIXES, " s3://lake/curated/ , , /mnt/lake ")
    assert enforcement_settings().governed_uri_prefixes == ("s3://lake/curated/", "/mnt/lake")
    assert set(errors_by_dag(bag(folder))) == {"reader_ungated"}


def test_readers_behind_a_gate_import_with_clearance_and_data_preparation_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated")
    dag = """
    @task(inlets=[FACES])
    def embed(x):
        return x

    with DAG(dag_id="gated_readers", schedule=None):
        prep = PythonOperator(task_id="prepare", python_callable=fit, outlets=[FACES])
        check = gate(inlets=[FACES])  # a gate is never a reader, whatever it declares
        fit_all = PythonOperator(task_id="fit", python_callable=fit, inlets=[FACES])
        shards = PythonOperator.partial(task_id="fit_shards", python_callable=fit, inlets=[FACES]).expand(
            op_args=[[1], [2]])
        prep >> check >> [fit_all, shards, embed.expand(x=[1, 2])]
    """

    dagbag = bag(write(tmp_path, gated_readers=dag))

    assert dagbag.import_errors == {}
    tasks = dagbag.dags["gated_readers"].task_dict
    assert {task_id for task_id, task in tasks.items() if wrapped(task)} == {"fit", "fit_shards", "embed"}


def test_a_reader_upstream_of_a_gate_is_not_data_preparation(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated")
    dag = """
    with DAG(dag_id="reader_before_gate", schedule=None, tags=["training"]):
        train = PythonOperator(task_id="read_and_train", python_callable=fit, inlets=[FACES])
        train >> gate() >> PythonOperator(task_id="publish", python_callable=fit)
    """

    dagbag = bag(write(tmp_path, reader_before_gate=dag))

    error = errors_by_dag(dagbag)["reader_before_gate"]
    assert (
        "training task(s) 'read_and_train' (inlet 's3://lake/curated/faces' is in the governed lake "
        "'s3://lake/curated') have no consent gate upstream"
    ) in error


def test_writing_into_the_lake_is_not_reading_it(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated")
    ingest = """
    with DAG(dag_id="ingest", schedule=None):
        PythonOperator(task_id="land_photos", python_callable=fit, outlets=[FACES])
    """

    dagbag = bag(write(tmp_path, ingest=ingest, reader_ungated=reader("reader_ungated")))

    assert set(errors_by_dag(dagbag)) == {"reader_ungated"}
    assert not wrapped(dagbag.dags["ingest"].task_dict["land_photos"])


CAUGHT = {
    "double_slash": 'Asset("a", uri="s3://lake//curated/faces")',
    "inner_double_slash_trailing": 'Asset("b", uri="s3://lake/curated//faces/")',
    "upper_case": 'Asset("c", uri="S3://LAKE/Curated/faces")',
    "s3a_alias": 'Asset("d", uri="s3a://lake/curated/faces")',
    "single_slash": 'Asset("e", uri="s3:/lake/curated/faces")',
    "dot_segment": 'Asset("f", uri="s3://lake/./curated/faces")',
    "parent_resolved_into": 'Asset("g", uri="s3://lake/tmp/../curated/faces")',
    "parent_kept_as_key": 'Asset("h", uri="s3://lake/curated/../secrets")',
    "percent_escaped": 'Asset("i", uri="s3://lake/%63urated/faces")',
    "user_and_port": 'Asset("j", uri="s3://someone@lake:443/curated/faces")',
    "the_prefix_itself": 'Asset("k", uri="s3://lake/curated")',
    "name_only": 'Asset("s3://lake/curated/faces")',
    "name_like_the_lake": 'Asset("s3://lake/curated/faces", uri="x-elsewhere://tmp/faces")',
    "uri_ref": 'Asset.ref(uri="s3://lake/curated/faces")',
    "alias_named_like_the_lake": 'AssetAlias("s3://lake/curated/faces")',
    "local_path": 'Asset("l", uri="/mnt//lake/photos/")',
    "file_uri": 'Asset("m", uri="file:///mnt/lake/photos")',
}
LEFT_ALONE = {
    "other_bucket": 'Asset("n", uri="s3://lakehouse/curated/faces")',
    "sibling_bucket": 'Asset("o", uri="s3://lake-other/curated/faces")',
    "sibling_folder": 'Asset("p", uri="s3://lake/curated-old/faces")',
    "other_folder": 'Asset("q", uri="s3://lake/raw/faces")',
    "sibling_path": 'Asset("r", uri="/mnt/lakehouse/photos")',
    "bare_name": 'Asset("curated")',
}


def test_uri_spellings_do_not_escape_the_prefix_and_prefixes_end_at_a_segment(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated/, /mnt/lake")
    dags = {name: reader(name, inlet) for name, inlet in {**CAUGHT, **LEFT_ALONE}.items()}

    dagbag = bag(write(tmp_path, **dags))

    errors = errors_by_dag(dagbag)
    assert set(errors) == set(CAUGHT)
    assert set(LEFT_ALONE) <= set(dagbag.dags)
    assert "inlet 's3://lake//curated/faces' is in the governed lake 's3://lake/curated/'" in errors["double_slash"]
    assert "inlet 'file:///mnt/lake/photos' is in the governed lake '/mnt/lake'" in errors["file_uri"]


@pytest.mark.parametrize(
    ("uri", "prefix", "under"),
    [
        ("s3://lake/x", "s3://lake", True),
        ("s3://lake", "s3://lake/", True),
        ("s3://Lake//x/", "S3://LAKE", True),
        ("gcs://bucket/x", "gs://bucket", True),
        ("s3://lakehouse/x", "s3://lake", False),
        ("s3://lake-other/x", "s3://lake", False),
        ("s3://lake/xy", "s3://lake/x", False),
        ("gs://lake/x", "s3://lake", False),
        ("s3://anything/x", "s3://", True),
        ("/data/x", "/", True),
        ("relative/data", "/", False),
        ("abfss://raw@acct.dfs.core.windows.net/x", "abfss://curated@acct.dfs.core.windows.net", False),
        ("abfss://raw@acct.dfs.core.windows.net/x", "abfss://acct.dfs.core.windows.net", True),
        ("hdfs://nn:8020/lake/x", "hdfs://nn:9000/lake", False),
        ("hdfs://nn:8020/lake/x", "hdfs://nn/lake", True),
    ],
)
def test_location_under(uri, prefix, under):
    from airflow_consent.cluster_policy import location_under, normalized_location

    assert location_under(normalized_location(uri), normalized_location(prefix)) is under


def test_a_dag_scheduled_on_an_approved_asset_is_gated_and_its_readers_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://lake/curated")
    dag = """
    with DAG(dag_id="on_approval", schedule=[Asset("approved", uri="consent://approved/faces")]):
        PythonOperator(task_id="load_and_fit", python_callable=fit, inlets=[FACES])
    """

    dagbag = bag(write(tmp_path, on_approval=dag))

    assert dagbag.import_errors == {}
    assert wrapped(dagbag.dags["on_approval"].task_dict["load_and_fit"])


def test_a_prefix_that_is_not_a_uri_fails_the_dags_with_inlets_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(PREFIXES, "s3://[lake")
    no_inlets = """
    with DAG(dag_id="no_inlets", schedule=None):
        PythonOperator(task_id="report", python_callable=fit)
    """

    dagbag = bag(write(tmp_path, reader_ungated=reader("reader_ungated"), no_inlets=no_inlets))

    errors = errors_by_dag(dagbag)
    assert set(errors) == {"reader_ungated"}
    assert "[consent] governed_uri_prefixes: 's3://[lake' is not a URI" in errors["reader_ungated"]


def test_provider_info_declares_the_option_with_the_default_config_reads():
    from airflow_consent import config
    from airflow_consent.provider_info import get_provider_info

    option = get_provider_info()["config"]["consent"]["options"]["governed_uri_prefixes"]
    assert option["default"] == config.GOVERNED_URI_PREFIXES == ""
    assert "inlet" in option["description"]


@pytest.mark.integration
def test_list_import_errors_cli_names_the_reader(tmp_path):
    """The real CLI in its own AIRFLOW_HOME, the setting only in the environment."""
    dags = write(tmp_path / "dags", reader_ungated=reader("reader_ungated"))

    errors = cli_import_errors(tmp_path, dags, **{PREFIXES: "s3://lake/curated"})

    assert [e["filepath"] for e in errors] == ["reader_ungated.py"]
    assert errors[0]["error"].startswith(
        "AirflowClusterPolicyViolation: airflow-consent: DAG 'reader_ungated': training task(s) 'load_and_fit' "
        "(inlet 's3://lake/curated/faces' is in the governed lake 's3://lake/curated') have no consent gate upstream."
    )
