"""Reading consent manifests from sidecars and Parquet metadata, and the sample dataset's claims."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_consent.discovery import DiscoveredPartition, discover_partitions, fingerprint
from airflow_consent.manifests import PARQUET_METADATA_KEY, SIDECAR_NAME, read_manifest
from airflow_consent.models import Manifest, ManifestProblem
from airflow_consent.sample_data import generate_profile_photos, main

VALID = {
    "manifest_version": "1",
    "consent": {
        "legal_basis": "consent",
        "purposes": ["model_training"],
        "scope": "third_party",
        "collected_at": "2022-01-15T00:00:00Z",
        "biometric": True,
        "minors": False,
    },
    "provenance": {
        "source": "stock",
        "collection_method": "licensed-stock-archive",
        "acquired_at": "2022-02-01T00:00:00Z",
        "license": "CC-BY-NC-4.0",
        "chain_of_custody": [{"holder": "stock", "received_at": "2022-01-15T00:00:00Z", "transfer": "sftp"}],
    },
}


def manifest_with(**changes) -> dict:
    """VALID with dotted-path changes; a value of ... deletes the field."""
    manifest = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = manifest
        for parent in parents:
            target = target[parent]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return manifest


def write_parquet(path: Path, manifest: dict | str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": [1, 2, 3]})
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        table = table.replace_schema_metadata({PARQUET_METADATA_KEY: text})
    pq.write_table(table, path)


def only_partition(root: Path) -> DiscoveredPartition:
    [partition] = discover_partitions(str(root))
    return partition


@pytest.fixture
def partition_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet")
    return directory


def write_sidecar(directory: Path, content: dict | str) -> str:
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    (directory / SIDECAR_NAME).write_text(text)
    return f"{directory}/{SIDECAR_NAME}"


# --- sources ------------------------------------------------------------------------------------


def test_sidecar(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, VALID)

    manifest, found_in, problems = read_manifest(only_partition(partition_dir.parent))

    assert problems == []
    assert found_in == source
    assert manifest == Manifest.model_validate(VALID)


def test_parquet_metadata(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", VALID)
    write_parquet(directory / "part-1.parquet", json.dumps(VALID, indent=4))  # same claims, other text

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    assert problems == []
    assert found_in == f"{directory}/part-0.parquet"
    assert manifest == Manifest.model_validate(VALID)


def test_sidecar_and_parquet_metadata_that_agree(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", VALID)
    source = write_sidecar(directory, VALID)

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    assert (found_in, problems) == (source, [])
    assert manifest == Manifest.model_validate(VALID)


def test_sidecar_and_parquet_metadata_that_disagree(tmp_path: Path) -> None:
    """A data file saying consent was withdrawn must not hide behind a sidecar saying all is well."""
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(
        directory / "part-0.parquet",
        manifest_with(consent__withdrawn_at="2023-05-01T00:00:00Z", provenance__source="from-parquet"),
    )
    source = write_sidecar(directory, VALID)

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    data_file = f"{directory}/part-0.parquet"
    assert (manifest, found_in) == (None, source)
    assert problems == [
        ManifestProblem(
            file=data_file,
            field="consent.withdrawn_at",
            message=f"conflicting manifests: {data_file} and {source} disagree on consent.withdrawn_at, "
            "provenance.source; every claim about a partition (sidecar and Parquet metadata) must say the same",
        )
    ]


def test_sidecar_on_the_memory_filesystem() -> None:
    fs = fsspec.filesystem("memory")
    base = f"/lake-{uuid.uuid4().hex}/photos"
    try:
        write = pa.BufferOutputStream()
        pq.write_table(pa.table({"x": [1]}), write)
        fs.pipe(f"{base}/source=stock/part-0.parquet", write.getvalue().to_pybytes())
        fs.pipe(f"{base}/source=stock/{SIDECAR_NAME}", json.dumps(VALID).encode())
        [partition] = discover_partitions(f"memory://{base}")

        manifest, found_in, problems = read_manifest(partition)
    finally:
        fs.rm(base, recursive=True)

    assert (found_in, problems) == (f"memory://{base}/source=stock/{SIDECAR_NAME}", [])
    assert manifest.consent.legal_basis == "consent"


def test_missing(partition_dir: Path) -> None:
    assert read_manifest(only_partition(partition_dir.parent)) == (
        None,
        None,
        [
            ManifestProblem(
                file=f"{partition_dir}/{SIDECAR_NAME}",
                field=None,
                message="no consent manifest: add _consent_manifest.json or the Parquet key-value metadata "
                "'airflow_consent.manifest'",
            )
        ],
    )


# --- invalid content ----------------------------------------------------------------------------


def test_malformed_json_gives_line_and_column(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, '{\n  "manifest_version": "1",\n  "consent": ,\n}')

    manifest, found_in, problems = read_manifest(only_partition(partition_dir.parent))

    assert (manifest, found_in) == (None, source)
    assert problems == [
        ManifestProblem(file=source, field=None, message="malformed JSON at line 3, column 14: Expecting value")
    ]


def test_duplicate_keys_are_malformed(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, json.dumps(VALID)[:-1] + ', "manifest_version": "1"}')

    manifest, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert manifest is None
    assert [(p.file, p.field) for p in problems] == [(source, None)]
    assert "duplicate key 'manifest_version'" in problems[0].message


def test_wrong_field_types_name_the_field_and_the_type(partition_dir: Path) -> None:
    source = write_sidecar(
        partition_dir,
        manifest_with(consent__expires_at=1735689600, consent__biometric="false", provenance__chain_of_custody=[{}]),
    )

    manifest, found_in, problems = read_manifest(only_partition(partition_dir.parent))

    assert (manifest, found_in) == (None, source)
    assert {p.file for p in problems} == {source}
    by_field = {p.field: p.message for p in problems}
    assert list(by_field) == [
        "consent.expires_at",
        "consent.biometric",
        "provenance.chain_of_custody.0.holder",
        "provenance.chain_of_custody.0.received_at",
        "provenance.chain_of_custody.0.transfer",
    ]
    assert by_field["consent.expires_at"] == "Input should be a valid datetime (got integer 1735689600)"
    assert by_field["consent.biometric"] == 'Input should be a valid boolean (got string "false")'
    assert by_field["provenance.chain_of_custody.0.holder"] == "required field is missing"


def test_naive_datetime_is_rejected(partition_dir: Path) -> None:
    write_sidecar(partition_dir, manifest_with(consent__collected_at="2022-01-15T00:00:00"))

    _, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert [(p.field, p.message) for p in problems] == [
        ("consent.collected_at", 'Input should have timezone info (got string "2022-01-15T00:00:00")')
    ]


def test_unknown_field(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, manifest_with(consent__biometric_optin=True))

    manifest, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert manifest is None
    assert problems == [
        ManifestProblem(file=source, field="consent.biometric_optin", message="unknown field (got boolean true)")
    ]


@pytest.mark.parametrize(("version", "shown"), [("3", 'string "3"'), (1, "integer 1"), (2, "integer 2")])
def test_unsupported_manifest_version(partition_dir: Path, version, shown: str) -> None:
    source = write_sidecar(partition_dir, manifest_with(manifest_version=version))

    manifest, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert manifest is None
    assert problems == [
        ManifestProblem(
            file=source,
            field="manifest_version",
            message=f"unsupported manifest_version {shown}: this version reads '1' or '2'",
        )
    ]


# --- manifest_version 2: several licenses, the generating model, upstream datasets ---------------

VERSION_2 = manifest_with(
    manifest_version="2",
    provenance__license=...,
    provenance__licenses=["CC-BY-4.0", "openai-terms"],
    provenance__terms_url="https://stock.example/terms",
    provenance__generated_by={
        "model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "terms": "openai-terms",
        "terms_url": "https://openai.com/policies/terms-of-use",
    },
    provenance__upstream=[{"name": "wiki-faces", "uri": "s3://lake/wiki-faces/", "licenses": ["CC-BY-SA-4.0"]}],
)


def test_version_2_manifest(partition_dir: Path) -> None:
    write_sidecar(partition_dir, VERSION_2)

    manifest, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert problems == []
    provenance = manifest.provenance
    assert (manifest.manifest_version, provenance.license, provenance.licenses) == (
        "2",
        None,
        ["CC-BY-4.0", "openai-terms"],
    )
    assert (provenance.generated_by.model, provenance.generated_by.terms) == ("gpt-4o-2024-08-06", "openai-terms")
    assert [(u.name, u.licenses, u.terms_url) for u in provenance.upstream] == [("wiki-faces", ["CC-BY-SA-4.0"], None)]
    assert provenance.terms_url == "https://stock.example/terms"


def test_manifests_dump_in_their_own_version() -> None:
    """A version 1 manifest written back is the version 1 text (no empty version 2 fields), and v2 has no license."""
    version_1 = Manifest.model_validate(VALID).model_dump(mode="json")
    assert set(version_1["provenance"]) == {
        "source",
        "collection_method",
        "acquired_at",
        "license",
        "data_sharing_agreement",
        "chain_of_custody",
        "attested_digest",
    }
    assert Manifest.model_validate(version_1) == Manifest.model_validate(VALID)
    version_2 = Manifest.model_validate(VERSION_2).model_dump(mode="json")
    assert "license" not in version_2["provenance"]
    assert Manifest.model_validate_json(json.dumps(version_2), strict=True) == Manifest.model_validate(VERSION_2)


@pytest.mark.parametrize(
    ("manifest", "field", "message"),
    [
        (manifest_with(provenance__license=...), "provenance.license", "required field is missing"),
        (manifest_with(provenance__license=None), "provenance.license", "Input should be a valid string (got null)"),
        (
            manifest_with(provenance__licenses=["MIT"]),
            "provenance.licenses",
            "'licenses' is a field of manifest_version '2'; this manifest is version '1'",
        ),
        (
            manifest_with(provenance__upstream=[{"name": "u", "licenses": ["MIT"]}]),
            "provenance.upstream",
            "'upstream' is a field of manifest_version '2'; this manifest is version '1'",
        ),
        (
            manifest_with(manifest_version="2"),
            "provenance.license",
            "manifest_version '2' lists every license in provenance.licenses (one license in 'license' is version '1')",
        ),
        (
            {**VERSION_2, "provenance": {**VERSION_2["provenance"], "licenses": []}},
            "provenance.licenses",
            "required field is missing: manifest_version '2' lists at least one license",
        ),
        (
            {**VERSION_2, "provenance": {**VERSION_2["provenance"], "upstream": [{"name": "u", "licenses": []}]}},
            "provenance.upstream.0.licenses",
            "List should have at least 1 item after validation, not 0 (got array)",
        ),
        (
            {**VERSION_2, "provenance": {**VERSION_2["provenance"], "generated_by": {"model": "m"}}},
            "provenance.generated_by.terms",
            "required field is missing",
        ),
    ],
    ids=[
        "v1-no-license",
        "v1-null-license",
        "v1-licenses",
        "v1-upstream",
        "v2-license",
        "v2-no-licenses",
        "v2-unlicensed-upstream",
        "v2-generator-without-terms",
    ],
)
def test_fields_of_the_other_version_are_named(partition_dir: Path, manifest: dict, field: str, message: str) -> None:
    source = write_sidecar(partition_dir, manifest)

    found, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert found is None
    assert problems == [ManifestProblem(file=source, field=field, message=message)]


def test_not_an_object(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, "[]")

    _, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert [(p.file, p.field, p.message) for p in problems] == [(source, None, "Input should be an object (got array)")]


def test_invalid_manifest_in_parquet_metadata(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", manifest_with(consent__scope="everyone"))

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    assert (manifest, found_in) == (None, f"{directory}/part-0.parquet")
    assert [(p.file, p.field) for p in problems] == [(f"{directory}/part-0.parquet", "consent.scope")]
    assert '(got string "everyone")' in problems[0].message


def test_disagreeing_parquet_files(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", VALID)
    write_parquet(directory / "part-1.parquet", VALID)
    write_parquet(directory / "part-2.parquet", manifest_with(consent__purposes=["advertising"]))
    write_parquet(directory / "part-3.parquet")  # carries none: not a disagreement

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    first, third = f"{directory}/part-0.parquet", f"{directory}/part-2.parquet"
    assert (manifest, found_in) == (None, first)
    assert problems == [
        ManifestProblem(
            file=third,
            field="consent.purposes",
            message=f"conflicting manifests: {third} and {first} disagree on consent.purposes; "
            "every claim about a partition (sidecar and Parquet metadata) must say the same",
        )
    ]


def test_corrupt_parquet_footer(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", VALID)
    good = (directory / "part-0.parquet").read_bytes()
    (directory / "part-1.parquet").write_bytes(good[:-20] + b"\0" * 20)

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    assert (manifest, found_in) == (None, f"{directory}/part-0.parquet")
    assert [(p.file, p.field) for p in problems] == [(f"{directory}/part-1.parquet", None)]
    assert problems[0].message.startswith("cannot read the Parquet footer: ")


def test_corrupt_parquet_without_manifest_reports_both(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    directory.mkdir(parents=True)
    (directory / "part-0.parquet").write_bytes(b"PAR1 this is not parquet")

    manifest, found_in, problems = read_manifest(only_partition(directory.parent))

    assert (manifest, found_in) == (None, None)
    assert [(p.file, p.field) for p in problems] == [
        (f"{directory}/part-0.parquet", None),
        (f"{directory}/{SIDECAR_NAME}", None),
    ]


def test_every_data_file_is_read_whatever_its_name(tmp_path: Path) -> None:
    """A reader reads every file not starting with '_' or '.': so does the manifest check."""
    directory = tmp_path / "photos" / "source=stock"
    write_parquet(directory / "part-0.parquet", VALID)
    write_parquet(directory / "part-1", manifest_with(consent__purposes=["advertising"]))
    (directory / "photo-0.jpg").write_bytes(b"\xff\xd8\xff not parquet")

    _, _, problems = read_manifest(only_partition(directory.parent))

    assert [(p.file.rsplit("/", 1)[-1], p.field) for p in problems] == [
        ("photo-0.jpg", None),
        ("part-1", "consent.purposes"),
    ]
    assert problems[0].message.startswith("cannot read the Parquet footer: ")


def test_sidecar_that_is_not_utf8(partition_dir: Path) -> None:
    (partition_dir / SIDECAR_NAME).write_bytes(b'{"manifest_version": "\xff"}')

    _, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert [(p.file, p.field) for p in problems] == [(f"{partition_dir}/{SIDECAR_NAME}", None)]
    assert problems[0].message.startswith("manifest is not UTF-8 text: ")


def test_sidecar_with_byte_order_mark(partition_dir: Path) -> None:
    (partition_dir / SIDECAR_NAME).write_bytes(b"\xef\xbb\xbf" + json.dumps(VALID).encode())

    manifest, _, problems = read_manifest(only_partition(partition_dir.parent))

    assert (manifest, problems) == (Manifest.model_validate(VALID), [])


def test_unreadable_sidecar(partition_dir: Path) -> None:
    source = write_sidecar(partition_dir, VALID)
    partition = only_partition(partition_dir.parent)
    (partition_dir / SIDECAR_NAME).unlink()  # vanished between discovery and reading

    manifest, found_in, problems = read_manifest(partition)

    assert (manifest, found_in) == (None, source)
    assert [(p.file, p.field) for p in problems] == [(source, None)]
    assert problems[0].message.startswith("cannot read the manifest: ")


# --- the sample dataset -------------------------------------------------------------------------


def test_sample_manifests_validate_and_attest_real_fingerprints(tmp_path: Path) -> None:
    partitions = discover_partitions(str(generate_profile_photos(tmp_path, rows_per_partition=10)))

    results = {p.id: (p, *read_manifest(p)) for p in partitions}

    assert all(problems == [] for _, _, _, problems in results.values())
    claims = {pid: manifest for pid, (_, manifest, _, _) in results.items()}
    okcupid = claims["profile_photos/source=okcupid/year=2014"]
    assert okcupid.consent.purposes == ["service_delivery"]
    assert (okcupid.consent.scope, okcupid.consent.biometric, okcupid.consent.biometric_opt_in) == (
        "first_party",
        True,
        False,
    )
    assert okcupid.consent.collected_at.isoformat() == "2014-01-01T00:00:00+00:00"
    assert okcupid.provenance.attested_digest is None
    studio = claims["profile_photos/source=studio_optin/year=2025"]
    assert studio.consent.expires_at.isoformat() == "2028-01-01T00:00:00+00:00"
    assert [step.holder for step in studio.provenance.chain_of_custody] == ["studio_optin", "our-ml-platform"]
    for pid in ("profile_photos/source=studio_optin/year=2024", "profile_photos/source=stock/year=2022"):
        partition, manifest, _, _ = results[pid]
        assert manifest.provenance.attested_digest == fingerprint(partition)


def test_sample_generation_is_idempotent(tmp_path: Path) -> None:
    dataset = generate_profile_photos(tmp_path, sources=("stock",), rows_per_partition=10)
    before = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}

    assert generate_profile_photos(tmp_path, sources=("stock",), rows_per_partition=10) == dataset
    assert {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before
    assert sorted(str(p) for p in before) == [
        "source=stock/year=2022/_consent_manifest.json",
        "source=stock/year=2022/part-0.parquet",
    ]


def test_sample_rejects_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sample sources \\['myspace'\\]"):
        generate_profile_photos(tmp_path, sources=("myspace",))


def test_sample_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out")]) == 0

    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "profile_photos")
    assert len(discover_partitions(str(tmp_path / "out" / "profile_photos"))) == 5
