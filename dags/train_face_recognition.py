"""Example: a face-recognition training DAG behind a consent gate.

On the shipped sample data (``python -m airflow_consent.sample_data``) the gate denies the
``source=okcupid`` partitions (dating-service terms: no consent for face-recognition training, no
data-sharing agreement; no row carries a consent flag), the ``source=stock`` partition
(non-commercial license) and ``source=studio_optin/year=2025``, which holds rows of subjects on the
revocation list, so ``train`` never runs. With only ``source=studio_optin`` partitions (explicit
biometric opt-in) and the revoked subjects removed, it trains.

The gate measures evidence in the data itself as configured in ``datasets/profile_photos.json``
beside this file: consent-flag coverage, revoked subjects (``datasets/revoked_subjects.csv``),
rows collected after consent ended, and the Great Expectations suite
``datasets/profile_photos.expectations.json``.

The dataset root is ``$AIRFLOW_CONSENT_SAMPLE_DATA/profile_photos`` (default: ``sample_data/``
beside this repository's ``dags/`` folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset, task

from airflow_consent.operators.consent import XCOM_REPORT_KEY, ConsentGateOperator

SAMPLE_DATA = Path(
    os.environ.get("AIRFLOW_CONSENT_SAMPLE_DATA", Path(__file__).resolve().parent.parent / "sample_data")
)
PROFILE_PHOTOS = Asset("profile_photos", uri=(SAMPLE_DATA / "profile_photos").as_uri())
FACE_EMBEDDER = Asset("face_embedder", uri="model://face-embedder-v1")  # the model: what a re-audit names

with DAG(
    dag_id="train_face_recognition",
    schedule=None,
    catchup=False,
    tags=["training", "consent"],
    doc_md=__doc__,
) as dag:
    gate = ConsentGateOperator(
        task_id="consent_gate",
        datasets=[PROFILE_PHOTOS],
        purpose="face_recognition_training",
        model="face-embedder-v1",
        dataset_config_path=Path(__file__).resolve().parent / "datasets",
        retries=2,
    )

    @task(outlets=[FACE_EMBEDDER])
    def train(**context) -> dict:
        """Stand-in for training: reads exactly the partitions the gate allowed in this run.

        ``approved_dataset`` checks them against the ledger again (fingerprints on disk now) and
        returns a pyarrow dataset over their data files only; it refuses if anything changed.
        """
        from airflow_consent.reader import approved_dataset

        photos = approved_dataset(context)
        report = context["ti"].xcom_pull(task_ids="consent_gate", key=XCOM_REPORT_KEY)
        return {
            "trained_on_rows": photos.count_rows(),
            "files": len(photos.files),
            "decision_id": report["decision_id"],
        }

    gate >> train()
