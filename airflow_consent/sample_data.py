"""Write the example dataset ``profile_photos``: the story in DESIGN.md, as partitions on disk.

``source=okcupid`` holds dating-profile photos collected under a dating site's terms of service,
handed over in bulk: consent for service delivery only, first party, no biometric opt-in.
``source=studio_optin`` and ``source=stock`` hold photos whose subjects opted in to model training
under a release and a data-sharing agreement, with the partition fingerprint attested.

Every row carries its subject and consent: ``subject_id``, one boolean column per purpose
(``CONSENT_COLUMNS``), ``collected_at`` and the subject's ``consent_withdrawn_at`` /
``consent_expires_at``. ``source=studio_optin/year=2025`` also holds rows of subjects on the
revocation list ``dags/datasets/revoked_subjects.csv`` (``REVOKED_SUBJECTS``): the evidence rules
deny it until ``remove_subjects`` takes them out.

Run ``python -m airflow_consent.sample_data [DIR]`` (default ``./sample_data``).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.models import MANIFEST_VERSION, Consent, CustodyStep, Manifest, Provenance

DATASET = "profile_photos"
YEARS = {"okcupid": (2013, 2014), "studio_optin": (2024, 2025), "stock": (2022,)}
DATA_FILE = "part-0.parquet"
CONSENT_COLUMNS = {
    "face_recognition_training": "consent_face_recognition",
    "model_training": "consent_model_training",
}
# Purposes each source's subjects consented to, row by row (stock's model_training covers face
# recognition, a descendant of it in the purpose taxonomy).
_ROW_CONSENT = {"okcupid": set(), "studio_optin": {"face_recognition_training"}, "stock": {"model_training"}}
# Subjects who withdrew their consent after studio_optin delivered 2025: listed in the example's
# revocation list (dags/datasets/revoked_subjects.csv), present in that partition.
REVOKED_SUBJECTS = ("studio_optin-subject-900017", "studio_optin-subject-900042", "studio_optin-subject-900105")
_REVOKED_IN = {("studio_optin", 2025)}
_REVOKED_EVERY = 50


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _okcupid(year: int) -> tuple[Consent, Provenance]:
    collected_at = _utc(year, 1, 1)
    consent = Consent(
        legal_basis="contract",
        purposes=["service_delivery"],
        scope="first_party",
        terms="okcupid-terms-of-service-2014",
        collected_at=collected_at,
        biometric=True,
        biometric_opt_in=False,
        minors=False,
        parental_consent=False,
        jurisdictions=["US"],
    )
    provenance = Provenance(
        source="okcupid",
        collection_method="bulk-export",
        acquired_at=_utc(2014, 6, 1),
        license="okcupid-terms-of-service",
        data_sharing_agreement=None,
        chain_of_custody=[CustodyStep(holder="okcupid", received_at=collected_at, transfer="first-party-collection")],
        attested_digest=None,
    )
    return consent, provenance


def _studio_optin(year: int) -> tuple[Consent, Provenance]:
    collected_at, acquired_at = _utc(year, 3, 1), _utc(year, 4, 1)
    consent = Consent(
        legal_basis="consent",
        purposes=["face_recognition_training"],
        scope="third_party",
        terms="studio-optin-release-v3",
        collected_at=collected_at,
        expires_at=_utc(2028, 1, 1),
        biometric=True,
        biometric_opt_in=True,
        minors=False,
        jurisdictions=["US", "DE"],
    )
    provenance = Provenance(
        source="studio_optin",
        collection_method="paid-studio-session",
        acquired_at=acquired_at,
        license="studio-optin-model-release",
        data_sharing_agreement="DSA-2024-017",
        chain_of_custody=[
            CustodyStep(holder="studio_optin", received_at=collected_at, transfer="first-party-collection"),
            CustodyStep(holder="our-ml-platform", received_at=acquired_at, transfer="sftp"),
        ],
    )
    return consent, provenance


def _stock(year: int) -> tuple[Consent, Provenance]:
    collected_at, acquired_at = _utc(2022, 1, 15), _utc(2022, 2, 1)
    consent = Consent(
        legal_basis="consent",
        purposes=["model_training"],
        scope="third_party",
        terms="stock-contributor-release",
        collected_at=collected_at,
        biometric=True,
        biometric_opt_in=True,
        minors=False,
        jurisdictions=["US"],
    )
    provenance = Provenance(
        source="stock",
        collection_method="licensed-stock-archive",
        acquired_at=acquired_at,
        license="CC-BY-NC-4.0",
        data_sharing_agreement="DSA-2023-004",
        chain_of_custody=[
            CustodyStep(holder="stock", received_at=collected_at, transfer="first-party-collection"),
            CustodyStep(holder="our-ml-platform", received_at=acquired_at, transfer="api-export"),
        ],
    )
    return consent, provenance


_CLAIMS = {"okcupid": _okcupid, "studio_optin": _studio_optin, "stock": _stock}
_ATTESTED = {"studio_optin", "stock"}


def _photos(source: str, year: int, rows: int) -> pa.Table:
    """A small synthetic table; seeded by partition, so every run writes the same bytes."""
    rng = random.Random(f"{source}/{year}")
    consent, _ = _CLAIMS[source](year)
    subjects = [f"{source}-subject-{rng.randrange(rows // 2 + 1):06d}" for _ in range(rows)]
    if (source, year) in _REVOKED_IN:
        for n, i in enumerate(range(_REVOKED_EVERY // 7, rows, _REVOKED_EVERY)):
            subjects[i] = REVOKED_SUBJECTS[n % len(REVOKED_SUBJECTS)]
    timestamp = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "photo_id": pa.array([f"{source}-{year}-{i:06d}" for i in range(rows)], pa.string()),
            "subject_id": pa.array(subjects, pa.string()),
            **{
                column: pa.array([purpose in _ROW_CONSENT[source]] * rows, pa.bool_())
                for purpose, column in CONSENT_COLUMNS.items()
            },
            "collected_at": pa.array([consent.collected_at + timedelta(minutes=i) for i in range(rows)], timestamp),
            "consent_withdrawn_at": pa.array([consent.withdrawn_at] * rows, timestamp),
            "consent_expires_at": pa.array([consent.expires_at] * rows, timestamp),
            "width": pa.array([rng.choice((320, 480, 640)) for _ in range(rows)], pa.int32()),
            "height": pa.array([rng.choice((320, 480, 640)) for _ in range(rows)], pa.int32()),
            "image": pa.array([rng.randbytes(rng.randrange(32, 65)) for _ in range(rows)], pa.binary()),
        }
    )


def generate_profile_photos(
    root: Path,
    *,
    sources: Sequence[str] = ("okcupid", "studio_optin", "stock"),
    rows_per_partition: int = 200,
) -> Path:
    """Write ``root/profile_photos/source=<s>/year=<y>/`` (Parquet + manifest sidecar); return the dataset dir.

    Idempotent: a rerun overwrites the same files with the same bytes.
    """
    unknown = sorted(set(sources) - set(YEARS))
    if unknown:
        raise ValueError(f"unknown sample sources {unknown}; known: {sorted(YEARS)}")
    dataset_dir = Path(root) / DATASET
    for source in sources:
        for year in YEARS[source]:
            partition_dir = dataset_dir / f"source={source}" / f"year={year}"
            partition_dir.mkdir(parents=True, exist_ok=True)
            pq.write_table(_photos(source, year, rows_per_partition), partition_dir / DATA_FILE)
    _write_manifests(dataset_dir, {(source, year) for source in sources for year in YEARS[source]})
    return dataset_dir


def remove_subjects(dataset_dir: Path, subjects: Iterable[str]) -> dict[str, int]:
    """Re-deliver every partition without the rows of ``subjects`` (the provider's attestation follows).

    Returns partition id → rows removed, for the partitions that had any.
    """
    value_set = pa.array(sorted(set(subjects)), pa.string())
    removed: dict[str, int] = {}
    changed: set[tuple[str, int]] = set()
    for partition in discover_partitions(str(dataset_dir), dataset=DATASET):
        path = Path(partition.path) / DATA_FILE
        table = pq.read_table(path)
        kept = table.filter(pc.invert(pc.is_in(table.column("subject_id"), value_set=value_set)))
        if kept.num_rows < table.num_rows:
            pq.write_table(kept, path)
            removed[partition.id] = table.num_rows - kept.num_rows
            changed.add((partition.keys["source"], int(partition.keys["year"])))
    _write_manifests(Path(dataset_dir), changed)
    return removed


def _write_manifests(dataset_dir: Path, partitions: set[tuple[str, int]]) -> None:
    for partition in discover_partitions(str(dataset_dir), dataset=DATASET):
        source, year = partition.keys["source"], int(partition.keys["year"])
        if (source, year) not in partitions:
            continue
        consent, provenance = _CLAIMS[source](year)
        if source in _ATTESTED:
            provenance = provenance.model_copy(update={"attested_digest": fingerprint(partition)})
        manifest = Manifest(manifest_version=MANIFEST_VERSION, consent=consent, provenance=provenance)
        (Path(partition.path) / SIDECAR_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the sample dataset under DIR and print its path."""
    parser = argparse.ArgumentParser(prog="python -m airflow_consent.sample_data", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="sample_data", help="where to write (default: ./sample_data)")
    parser.add_argument(
        "--sources",
        nargs="+",
        choices=sorted(YEARS),
        default=["okcupid", "studio_optin", "stock"],
        help="which sources' partitions to write (default: all)",
    )
    parser.add_argument(
        "--without-revoked", action="store_true", help="re-deliver the partitions without the revoked subjects' rows"
    )
    args = parser.parse_args(argv)
    dataset = generate_profile_photos(Path(args.dir), sources=args.sources)
    if args.without_revoked:
        remove_subjects(dataset, REVOKED_SUBJECTS)
    print(dataset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
