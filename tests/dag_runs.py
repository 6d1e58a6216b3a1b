"""Run DAG files in-process as the dag processor and ``airflow dags test`` would: DagBag → serialize → dag.test()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata database (SQLite in the session's AIRFLOW_HOME)."""
    from airflow.utils import db

    db.resetdb(skip_init=False)


def parse(folder: Path) -> dict:
    """The DAGs of ``folder``; fails on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.dags


def run_dag(folder: Path, dag_id: str):
    """Parse ``folder``, serialize it to the DB, run ``dag_id`` with dag.test(); return (task states, run)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)  # dag.test() runs the serialized DAG
    dag_run = bag.dags[dag_id].test()
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}, dag_run


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """An XCom value of a finished run, deserialized."""
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).one()
        value = XComModel.deserialize_value(row)
    return json.loads(value) if isinstance(value, str) else value
