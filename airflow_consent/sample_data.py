"""Write the example dataset ``profile_photos``: the story in DESIGN.md, as partitions on disk.

``source=okcupid`` holds dating-profile photos collected under a dating site's terms of service,
handed over in bulk: consent for service delivery only, first party, no biometric opt-in.
``source=studio_optin`` and ``source=stock`` hold photos whose subjects opted in to model training
under a release and a data-sharing agreement, with the partition fingerprint attested.

Run ``python -m airflow_consent.sample_data [DIR]`` (default ``./sample_data``).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_consent.discovery import discover_partitions, fingerprint
from airflow_consent.manifests import SIDECAR_NAME
from airflow_consent.models import MANIFEST_VERSION, Consent, CustodyStep, Manifest, Provenance

DATASET = "profile_photos"
YEARS = {"okcupid": (2013, 2014), "studio_optin": (2024, 2025), "stock": (2022,)}


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
    return pa.table(
        {
            "photo_id": pa.array([f"{source}-{year}-{i:06d}" for i in range(rows)], pa.string()),
            "subject_id": pa.array([f"{source}-subject-{rng.randrange(rows // 2 + 1):06d}" for _ in range(rows)]),
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
            pq.write_table(_photos(source, year, rows_per_partition), partition_dir / "part-0.parquet")

    for partition in discover_partitions(str(dataset_dir), dataset=DATASET):
        source, year = partition.keys["source"], int(partition.keys["year"])
        if source not in sources or year not in YEARS[source]:
            continue
        consent, provenance = _CLAIMS[source](year)
        if source in _ATTESTED:
            provenance = provenance.model_copy(update={"attested_digest": fingerprint(partition)})
        manifest = Manifest(manifest_version=MANIFEST_VERSION, consent=consent, provenance=provenance)
        (Path(partition.path) / SIDECAR_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return dataset_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the sample dataset under DIR and print its path."""
    parser = argparse.ArgumentParser(prog="python -m airflow_consent.sample_data", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="sample_data", help="where to write (default: ./sample_data)")
    args = parser.parse_args(argv)
    print(generate_profile_photos(Path(args.dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
