"""Example: a gate that approves what it can, and a training DAG scheduled on what it approved.

``approve_profile_photos`` runs the consent gate with ``on_violation="exclude"``: the denied
partitions (okcupid, stock and the studio partition holding revoked subjects, on the sample data)
are left out with their reasons, and the approved ones are published as an event on the
``approved_profile_photos`` asset, whose ``extra`` carries the decision id, purpose, policy revision
and each approved partition with its fingerprint. ``train_on_approved_profile_photos`` is scheduled
on that asset and trains on exactly those partitions, read through
``airflow_consent.reader.approved_dataset`` (never the dataset directory, which still holds the
excluded partitions and any added since). It is a training DAG with no gate of its own:
the cluster policy accepts it because it is scheduled on a ``consent://approved/*`` asset, and the
run-time clearance checks the event's decision id against the ledger and the fingerprints on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from airflow_consent.operators.consent import ConsentGateOperator

SAMPLE_DATA = Path(
    os.environ.get("AIRFLOW_CONSENT_SAMPLE_DATA", Path(__file__).resolve().parent.parent / "sample_data")
)
APPROVED = Asset("approved_profile_photos", uri="consent://approved/profile_photos")

with DAG(dag_id="approve_profile_photos", schedule=None, catchup=False, tags=["consent"]):
    ConsentGateOperator(
        task_id="consent_gate",
        datasets=[Asset("profile_photos", uri=(SAMPLE_DATA / "profile_photos").as_uri())],
        purpose="face_recognition_training",
        on_violation="exclude",
        approved_asset=APPROVED,
        dataset_config_path=Path(__file__).resolve().parent / "datasets",
    )

with DAG(dag_id="train_on_approved_profile_photos", schedule=[APPROVED], catchup=False, tags=["training", "consent"]):

    @task
    def train(**context) -> dict:
        """Stand-in for training: reads only the partitions the approval event names.

        ``approved_dataset`` checks the event's decision against the ledger and the fingerprints on
        disk now, and returns a pyarrow dataset over those partitions' data files only.
        """
        from airflow_consent.reader import approved_dataset

        photos = approved_dataset(context)
        event = context["triggering_asset_events"][APPROVED][-1]  # the latest approval
        return {
            "decision_id": event.extra["decision_id"],
            "partitions": len(event.extra["approved_partitions"]),
            "rows": photos.count_rows(),
        }

    train()
