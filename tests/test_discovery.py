"""Partition discovery and fingerprints on real Parquet files, local and through fsspec ``memory://``."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_consent.discovery import (
    DataFile,
    FilterTerm,
    PartitionFilter,
    discover_partitions,
    fingerprint,
    parse_partition_filter,
)
from airflow_consent.errors import ConsentConfigurationError, NoPartitionsFound
from airflow_consent.sample_data import generate_profile_photos

SAMPLE_IDS = [
    "profile_photos/source=okcupid/year=2013",
    "profile_photos/source=okcupid/year=2014",
    "profile_photos/source=stock/year=2022",
    "profile_photos/source=studio_optin/year=2024",
    "profile_photos/source=studio_optin/year=2025",
]

# Filters that parse-time validation (in the operator) and discovery used to judge differently, now both
# read by parse_partition_filter; tests/test_operator.py runs the same cases through the gate.
REFUSED_FILTERS = [  # passed parse time, failed at run time (or, for the dict, crashed with a KeyError)
    ([("year", "in", "2024")], r"partition_filter term \('year', 'in', '2024'\): 'in' needs a list of values"),
    ([(1, "=", "x")], r"partition_filter term \(1, '=', 'x'\): the key must be a partition key name"),
    ([[]], r"partition_filter has an empty list of terms \[\]"),
    ({"year": "2024"}, r"partition_filter must be a list .* not the dict \{'year': '2024'\}"),
    ([("year", "=", ["2024"])], r"partition_filter term .*: '=' compares with one value, a string or a number"),
]
ACCEPTED_FILTERS = [  # failed parse time, passed at run time
    ([["source", "=", "stock"]], ["profile_photos/source=stock/year=2022"]),  # terms as lists, as templates render
    ([("source", " IN ", ["stock"])], ["profile_photos/source=stock/year=2022"]),  # any case and spacing of op
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_profile_photos(tmp_path_factory.mktemp("sample"), rows_per_partition=20)


def write_parquet(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(rows))}), path)


def ids(partitions) -> list[str]:
    return [p.id for p in partitions]


# --- discovery ----------------------------------------------------------------------------------


def test_discovers_the_sample_dataset(sample: Path) -> None:
    partitions = discover_partitions(str(sample))

    assert ids(partitions) == SAMPLE_IDS
    first = partitions[0]
    assert first.dataset == "profile_photos"
    assert first.keys == {"source": "okcupid", "year": "2013"}
    assert list(first.keys) == ["source", "year"]
    assert first.root == str(sample)
    assert first.uri == f"{sample}/source=okcupid/year=2013"
    part = sample / "source=okcupid" / "year=2013" / "part-0.parquet"
    assert first.files == (DataFile(path=str(part), name="part-0.parquet", size=part.stat().st_size),)
    assert first.sidecar_files == ("_consent_manifest.json",)
    assert pq.read_metadata(first.files[0].path, filesystem=first.filesystem).num_rows == 20


def test_dataset_name_override_and_file_uri(sample: Path) -> None:
    partitions = discover_partitions(f"file://{sample}/", dataset="photos")

    assert ids(partitions)[0] == "photos/source=okcupid/year=2013"
    assert partitions[0].uri == f"file://{sample}/source=okcupid/year=2013"
    assert partitions[0].root == f"file://{sample}"


def test_relative_local_path_gives_absolute_uris(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sample.parent)
    partitions = discover_partitions("profile_photos")

    assert partitions[0].uri == f"{sample}/source=okcupid/year=2013"


@pytest.mark.parametrize(
    ("partition_filter", "expected"),
    [
        ([("source", "=", "okcupid")], SAMPLE_IDS[:2]),
        ([("source", "=", "okcupid"), ("year", "==", "2014")], SAMPLE_IDS[1:2]),
        (
            [[("source", "=", "okcupid"), ("year", "=", "2013")], [("source", "=", "stock")]],
            [SAMPLE_IDS[0], SAMPLE_IDS[2]],
        ),
        ([("source", "in", ["stock", "studio_optin"])], SAMPLE_IDS[2:]),
        ([("source", "not in", ["stock", "studio_optin"])], SAMPLE_IDS[:2]),
        ([["year", ">=", "2024"]], SAMPLE_IDS[3:]),  # lists, as a rendered template gives them
        ([("year", "=", 2014)], SAMPLE_IDS[1:2]),  # non-string values compare as strings
        ([("source", "!=", "okcupid"), ("year", "<", "2025")], SAMPLE_IDS[2:4]),
    ],
)
def test_partition_filter(sample: Path, partition_filter, expected: list[str]) -> None:
    assert ids(discover_partitions(str(sample), partition_filter=partition_filter)) == expected


def test_empty_filter_is_no_filter(sample: Path) -> None:
    assert ids(discover_partitions(str(sample), partition_filter=[])) == SAMPLE_IDS


def test_filter_on_unknown_key_names_the_key_and_the_keys_that_exist(sample: Path) -> None:
    with pytest.raises(ConsentConfigurationError) as error:
        discover_partitions(str(sample), partition_filter=[("source", "=", "stock"), ("region", "=", "eu")])

    assert "'region'" in str(error.value)
    assert "['source', 'year']" in str(error.value)


def test_filter_matching_nothing_says_so(sample: Path) -> None:
    with pytest.raises(NoPartitionsFound, match=r"no partition of 'profile_photos' at .* matches filter"):
        discover_partitions(str(sample), partition_filter=[("source", "=", "myspace")])


@pytest.mark.parametrize(
    ("partition_filter", "message"),
    [
        ([("source", "like", "ok%")], r"term \('source', 'like', 'ok%'\): the operator 'like' is not one of"),
        ([("source", "=")], r"term \('source', '='\) must be \(key, op, value\)"),
        ("source=okcupid", "must be a list of .* not the str 'source=okcupid'"),
        ([("source", "=", "stock"), [("year", "=", "2022")]], "mixes terms and lists of terms"),
        *REFUSED_FILTERS,
    ],
)
def test_malformed_filter_is_a_configuration_error_naming_the_term(sample: Path, partition_filter, message) -> None:
    with pytest.raises(ConsentConfigurationError, match=message):
        parse_partition_filter(partition_filter)
    with pytest.raises(ConsentConfigurationError, match=message):
        discover_partitions(str(sample), partition_filter=partition_filter)


@pytest.mark.parametrize(("partition_filter", "expected"), ACCEPTED_FILTERS)
def test_filters_the_gate_used_to_refuse_select_partitions(sample: Path, partition_filter, expected) -> None:
    assert ids(discover_partitions(str(sample), partition_filter=partition_filter)) == expected


def test_a_malformed_filter_is_refused_before_the_dataset_is_listed(tmp_path: Path) -> None:
    """A sensor waits while a dataset is missing: a bad filter must fail it now, not after the data lands."""
    with pytest.raises(ConsentConfigurationError, match="'in' needs a list of values"):
        discover_partitions(str(tmp_path / "not_there_yet"), partition_filter=[("year", "in", "2024")])


def test_parse_partition_filter_gives_typed_terms() -> None:
    assert parse_partition_filter(None) is None
    assert parse_partition_filter([]) is None
    assert parse_partition_filter([("year", " IN ", [2025, "2024"]), ["source", "==", "stock"]]) == PartitionFilter(
        ((FilterTerm("year", "in", ("2024", "2025")), FilterTerm("source", "==", "stock")),)
    )
    parsed = parse_partition_filter([[("source", "=", "stock")], [("year", "not in", ("2013",))]])
    assert parsed is not None
    assert parsed.keys == ["source", "year"]
    assert parsed.to_dnf() == [[("source", "=", "stock")], [("year", "not in", ["2013"])]]


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "_SUCCESS").write_text("")

    with pytest.raises(NoPartitionsFound, match=r"dataset 'photos' at .*/photos has no partitions"):
        discover_partitions(str(tmp_path / "photos"))


def test_missing_root_names_the_uri(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(NoPartitionsFound, match=re.escape(repr(str(missing)))):
        discover_partitions(str(missing))


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "photos").write_text("not a directory")
    with pytest.raises(NoPartitionsFound, match="is not a directory"):
        discover_partitions(str(tmp_path / "photos"))


def test_symlinked_partition_escaping_the_root(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "year=1" / "part-0.parquet")
    write_parquet(tmp_path / "elsewhere" / "year=1" / "part-0.parquet")
    link = tmp_path / "photos" / "source=evil"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    with pytest.raises(ConsentConfigurationError, match="escapes the dataset root") as error:
        discover_partitions(str(tmp_path / "photos"))
    assert repr(str(link)) in str(error.value)


def test_symlinked_file_escaping_the_root(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "part-0.parquet")
    write_parquet(tmp_path / "secret.parquet")
    link = tmp_path / "photos" / "source=a" / "part-1.parquet"
    link.symlink_to(tmp_path / "secret.parquet")

    with pytest.raises(ConsentConfigurationError, match="escapes the dataset root") as error:
        discover_partitions(str(tmp_path / "photos"))
    assert repr(str(link)) in str(error.value)


def test_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "part-0.parquet", rows=5)
    (tmp_path / "photos" / "source=b").mkdir()
    target = tmp_path / "photos" / "source=a" / "part-0.parquet"
    (tmp_path / "photos" / "source=b" / "part-0.parquet").symlink_to(target)

    partitions = discover_partitions(str(tmp_path / "photos"))

    assert ids(partitions) == ["photos/source=a", "photos/source=b"]
    assert fingerprint(partitions[0]) == fingerprint(partitions[1])


def test_symlink_cycle_is_an_error(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "part-0.parquet")
    (tmp_path / "photos" / "source=a" / "year=1").symlink_to(tmp_path / "photos", target_is_directory=True)

    with pytest.raises(ConsentConfigurationError, match="symlink cycle"):
        discover_partitions(str(tmp_path / "photos"))


def test_directory_that_is_not_key_value(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "year=1" / "part-0.parquet")
    write_parquet(tmp_path / "photos" / "source=a" / "images" / "part-0.parquet")

    with pytest.raises(ConsentConfigurationError, match="is not a key=value partition directory") as error:
        discover_partitions(str(tmp_path / "photos"))
    assert repr(str(tmp_path / "photos" / "source=a" / "images")) in str(error.value)


def test_data_file_outside_the_partition_level(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "year=1" / "part-0.parquet")
    write_parquet(tmp_path / "photos" / "source=a" / "stray.parquet")

    with pytest.raises(ConsentConfigurationError, match="partition level") as error:
        discover_partitions(str(tmp_path / "photos"))
    assert repr(str(tmp_path / "photos" / "source=a" / "stray.parquet")) in str(error.value)


@pytest.mark.parametrize("segment", ["source=%2E%2E", "source=a%2Fb", "source=a%00b", "%2E%2E=a"])
def test_key_or_value_with_dot_dot_slash_or_nul(tmp_path: Path, segment: str) -> None:
    write_parquet(tmp_path / "photos" / segment / "part-0.parquet")

    with pytest.raises(ConsentConfigurationError, match="escapes the dataset root") as error:
        discover_partitions(str(tmp_path / "photos"))
    assert repr(str(tmp_path / "photos" / segment)) in str(error.value)


def test_url_encoded_values_are_decoded(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "day=2024-01-01%2000%3A00" / "part-0.parquet")

    [partition] = discover_partitions(str(tmp_path / "photos"))

    assert partition.keys == {"day": "2024-01-01 00:00"}


def test_partitions_with_different_keys(tmp_path: Path) -> None:
    write_parquet(tmp_path / "photos" / "source=a" / "year=1" / "part-0.parquet")
    write_parquet(tmp_path / "photos" / "source=b" / "region=eu" / "part-0.parquet")

    with pytest.raises(ConsentConfigurationError, match=r"has partition keys \['source', 'region'\]"):
        discover_partitions(str(tmp_path / "photos"))


def test_ignored_prefixes_are_not_data(tmp_path: Path) -> None:
    partition = tmp_path / "photos" / "source=a"
    write_parquet(partition / "part-0.parquet")
    (partition / ".part-0.parquet.crc").write_bytes(b"crc")
    (partition / "_consent_manifest.json").write_text("{}")
    write_parquet(partition / "_temporary" / "part-9.parquet")
    write_parquet(tmp_path / "photos" / ".trash" / "part-0.parquet")

    [found] = discover_partitions(str(tmp_path / "photos"))

    assert [f.name for f in found.files] == ["part-0.parquet"]
    assert found.sidecar_files == (".part-0.parquet.crc", "_consent_manifest.json")


def test_progress_reports_partitions_processed(tmp_path: Path) -> None:
    for i in range(2500):
        partition = tmp_path / "photos" / f"shard={i}"
        partition.mkdir(parents=True)
        (partition / "part-0.bin").write_bytes(b"x")
    calls: list[int] = []

    partitions = discover_partitions(str(tmp_path / "photos"), progress=calls.append)

    assert len(partitions) == 2500
    assert calls == [1000, 2000, 2500]


# --- fsspec (non-local) -------------------------------------------------------------------------


@pytest.fixture
def memory_dataset(sample: Path):
    """The sample dataset copied byte for byte to fsspec's in-memory filesystem."""
    fs = fsspec.filesystem("memory")
    base = f"/lake-{uuid.uuid4().hex}"
    for path in sample.rglob("*"):
        if path.is_file():
            fs.pipe(f"{base}/profile_photos/{path.relative_to(sample)}", path.read_bytes())
    yield f"memory://{base}/profile_photos"
    fs.rm(base, recursive=True)


def test_memory_filesystem(memory_dataset: str, sample: Path) -> None:
    partitions = discover_partitions(memory_dataset, partition_filter=[("source", "=", "stock")])

    [stock] = partitions
    assert stock.id == "profile_photos/source=stock/year=2022"
    assert stock.uri == f"{memory_dataset}/source=stock/year=2022"
    assert stock.sidecar_files == ("_consent_manifest.json",)
    assert [f.name for f in stock.files] == ["part-0.parquet"]
    assert pq.read_metadata(stock.files[0].path, filesystem=stock.filesystem).num_rows == 20
    [local] = discover_partitions(str(sample), partition_filter=[("source", "=", "stock")])
    assert fingerprint(stock) == fingerprint(local)


def test_memory_filesystem_missing_root() -> None:
    with pytest.raises(NoPartitionsFound, match="memory://no-such-lake/photos"):
        discover_partitions("memory://no-such-lake/photos")


# --- fingerprint --------------------------------------------------------------------------------


@pytest.fixture
def partition_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "photos" / "source=a"
    write_parquet(directory / "part-0.parquet", rows=50)
    write_parquet(directory / "part-1.parquet", rows=10)
    (directory / "_consent_manifest.json").write_text('{"manifest_version": "1"}')
    return directory


def fingerprint_of(directory: Path) -> str:
    [partition] = discover_partitions(str(directory.parent))
    return fingerprint(partition)


def test_fingerprint_is_stable(partition_dir: Path) -> None:
    [partition] = discover_partitions(str(partition_dir.parent))
    first = fingerprint(partition)

    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert fingerprint(partition) == first
    assert fingerprint_of(partition_dir) == first


def test_fingerprint_changes_with_one_byte(partition_dir: Path) -> None:
    before = fingerprint_of(partition_dir)
    path = partition_dir / "part-1.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    assert fingerprint_of(partition_dir) != before


def test_fingerprint_changes_with_a_file_name(partition_dir: Path) -> None:
    before = fingerprint_of(partition_dir)
    os.rename(partition_dir / "part-1.parquet", partition_dir / "part-2.parquet")

    assert fingerprint_of(partition_dir) != before


def test_fingerprint_changes_with_size_and_new_files(partition_dir: Path) -> None:
    before = fingerprint_of(partition_dir)
    with open(partition_dir / "part-1.parquet", "ab") as stream:
        stream.write(b"\0")
    appended = fingerprint_of(partition_dir)
    (partition_dir / "part-3.parquet").write_bytes(b"")

    assert len({before, appended, fingerprint_of(partition_dir)}) == 3


def test_fingerprint_ignores_the_sidecar(partition_dir: Path) -> None:
    before = fingerprint_of(partition_dir)
    (partition_dir / "_consent_manifest.json").write_text('{"manifest_version": "2", "changed": true}')
    (partition_dir / ".DS_Store").write_bytes(b"junk")

    assert fingerprint_of(partition_dir) == before


def test_fingerprint_streams_large_files(partition_dir: Path) -> None:
    big = partition_dir / "part-9.bin"
    big.write_bytes(b"a" * (3 << 20))
    before = fingerprint_of(partition_dir)
    with open(big, "r+b") as stream:  # one byte in the last chunk
        stream.seek((3 << 20) - 1)
        stream.write(b"b")

    assert fingerprint_of(partition_dir) != before
