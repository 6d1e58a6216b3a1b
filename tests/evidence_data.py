"""Real files for the evidence tests: partitions with chosen rows, a manifest, and dataset configurations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.models import MANIFEST_VERSION, Manifest
from airflow_consent.sample_data import _studio_optin

DATASET = "faces"
UTC_US = pa.timestamp("us", tz="UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def rows(
    subjects: list,
    *,
    face: list | None = None,
    model: list | None = None,
    collected: list | None = None,
    withdrawn: list | None = None,
    expires: list | None = None,
    subject_type: pa.DataType = pa.string(),  # noqa: B008 - an immutable type object
) -> pa.Table:
    """A table in the layout of ``config()``: consent flags default to true, times to 2024-03-01 and none."""
    n = len(subjects)
    return pa.table(
        {
            "subject_id": pa.array(subjects, subject_type),
            "consent_face": pa.array(face if face is not None else [True] * n, pa.bool_()),
            "consent_model": pa.array(model if model is not None else [False] * n, pa.bool_()),
            "collected_at": pa.array(collected if collected is not None else [utc(2024, 3, 1)] * n, UTC_US),
            "withdrawn_at": pa.array(withdrawn if withdrawn is not None else [None] * n, UTC_US),
            "expires_at": pa.array(expires if expires is not None else [None] * n, UTC_US),
            "photo_id": pa.array([f"photo-{i:04d}" for i in range(n)], pa.string()),
        }
    )


def write_partition(root: Path, shard: str, *tables: pa.Table, manifest: bool = True) -> Path:
    """``root/<DATASET>/shard=<shard>/part-<i>.parquet`` for each table, plus a compliant manifest."""
    directory = root / DATASET / f"shard={shard}"
    directory.mkdir(parents=True, exist_ok=True)
    for index, table in enumerate(tables):
        pq.write_table(table, directory / f"part-{index}.parquet")
    if manifest:
        consent, provenance = _studio_optin(2024)
        document = Manifest(manifest_version=MANIFEST_VERSION, consent=consent, provenance=provenance)
        (directory / SIDECAR_NAME).write_text(document.model_dump_json())
    return directory


def config(**overrides) -> dict:
    """A dataset configuration for the ``rows()`` layout, with a revocation list ``revoked.csv``."""
    document = {
        "config_version": "1",
        "columns": {
            "subject_id": "subject_id",
            "consent": {"face_recognition_training": "consent_face", "model_training": "consent_model"},
            "collected_at": "collected_at",
            "consent_withdrawn_at": "withdrawn_at",
            "consent_expires_at": "expires_at",
        },
        "revocations": {"path": "revoked.csv"},
    }
    document.update(overrides)
    return document


def write_config(
    directory: Path, document: dict | str, *, revoked: list[str] | None = None, suite: dict | None = None
) -> Path:
    """``directory/<DATASET>.json`` (and ``revoked.csv``, ``<DATASET>.expectations.json`` when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (directory / f"{DATASET}.json").write_text(text)
    if revoked is not None:
        (directory / "revoked.csv").write_text("subject_id\n" + "".join(f"{s}\n" for s in revoked))
    if suite is not None:
        (directory / f"{DATASET}.expectations.json").write_text(json.dumps(suite))
    return directory
