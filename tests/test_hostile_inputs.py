"""Hostile partitions: each becomes a named violation or a configuration error, never an allow, a
traceback or a hang (issues 12 and 13).

The corpus is generated into ``tmp_path`` (no binaries checked in): every case is one partition of one
dataset, so the whole corpus costs one gate evaluation with the real local ``opa``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from evidence_data import DATASET, config, rows, write_config, write_partition

from airflow_consent.discovery import discover_partitions
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.gate import DatasetSpec, collect_partitions, evaluate_gate
from airflow_consent.manifests import MAX_MANIFEST_BYTES, PARQUET_METADATA_KEY, SIDECAR_NAME
from airflow_consent.models import GateRequest

pytestmark = pytest.mark.timeout(120, method="thread")  # a hang in C code ends the run, never stalls it

VALID = {
    "manifest_version": "1",
    "consent": {
        "legal_basis": "consent",
        "purposes": ["face_recognition_training"],
        "scope": "third_party",
        "collected_at": "2024-01-15T00:00:00Z",
        "biometric": True,
        "biometric_opt_in": True,
        "minors": False,
    },
    "provenance": {
        "source": "studio_optin",
        "collection_method": "in-studio-session",
        "acquired_at": "2024-02-01T00:00:00Z",
        "license": "CC-BY-4.0",
        "chain_of_custody": [{"holder": "studio_optin", "received_at": "2024-01-15T00:00:00Z", "transfer": "sftp"}],
    },
}


def _request() -> GateRequest:
    return GateRequest(purpose="face_recognition_training", evaluated_at=datetime(2026, 1, 1, tzinfo=UTC))


def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def _deep_manifest(depth: int) -> str:
    """A manifest whose consent.terms is an array nested ``depth`` levels deep."""
    text = json.dumps({**VALID, "consent": {**VALID["consent"], "terms": "@"}})
    return text.replace('"@"', _nested(depth))


def _with(path: str, value: object) -> dict:
    """VALID with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    document = json.loads(json.dumps(VALID))
    *parents, leaf = path.split(".")
    target = document
    for parent in parents:
        target = target[parent]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return document


def _parquet(path: Path, manifest: str | None = None) -> None:
    table = pa.table({"subject_id": ["s1"]})
    if manifest is not None:
        table = table.replace_schema_metadata({PARQUET_METADATA_KEY: manifest})
    pq.write_table(table, path)


def _sidecar(text: str | bytes) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        _parquet(directory / "part-0.parquet")
        target = directory / SIDECAR_NAME
        target.write_bytes(text) if isinstance(text, bytes) else target.write_text(text)

    return write


def _in_parquet(text: str) -> Callable[[Path], None]:
    return lambda directory: _parquet(directory / "part-0.parquet", text)


def _beside_valid_sidecar(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        (directory / SIDECAR_NAME).write_text(json.dumps(VALID))
        make(directory)

    return write


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda directory: os.mkfifo(directory / name)


def _socket(directory: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(directory / "part-1.parquet"))
    server.close()  # the socket file stays


def _char_device(directory: Path) -> None:
    os.mknod(directory / "part-1.parquet", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers


def _bytes(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_bytes(content)


def _corpus() -> dict[str, tuple[Callable[[Path], None], str]]:
    """case name -> (how to fill its partition directory, the rule that must deny it)."""
    cases: dict[str, tuple[Callable[[Path], None], str]] = {}
    malformed = {
        "empty": "",
        "whitespace": "  \n",
        "truncated": json.dumps(VALID)[:-7],
        "open-brace": "{",
        "array": "[]",
        "null": "null",
        "string": '"manifest"',
        "number": "1",
        "nan": '{"manifest_version": NaN}',
        "trailing-comma": json.dumps(VALID)[:-1] + ",}",
        "comment": "// consent\n" + json.dumps(VALID),
        "duplicate-key": json.dumps(VALID)[:-1] + ', "manifest_version": "1"}',
        "single-quotes": "{'a': 1}",
        "oversized": json.dumps({**VALID, "pad": "x" * MAX_MANIFEST_BYTES}),
    }
    for depth in (33, 1_000, 10_000, 100_000):
        malformed[f"deep-array-{depth}"] = _nested(depth)
        malformed[f"deep-object-{depth}"] = '{"a":' * depth + "1" + "}" * depth
        malformed[f"deep-inside-manifest-{depth}"] = _deep_manifest(depth)
    for name, text in malformed.items():
        cases[f"sidecar-{name}"] = (_sidecar(text), "PROV-006")
        if name != "empty":  # an empty key-value entry is still a claim; covered by the sidecar case
            cases[f"parquet-{name}"] = (_in_parquet(text), "PROV-006")
    cases["sidecar-not-utf8"] = (_sidecar(b"\xff\xfe{\x00"), "PROV-006")
    cases["sidecar-bom-garbage"] = (_sidecar("\ufeff{oops"), "PROV-006")

    wrong = {
        "consent.biometric": "false",
        "consent.minors": "no",
        "consent.biometric_opt_in": 1,
        "consent.purposes": "face_recognition_training",
        "consent.purposes.item": [1],
        "consent.collected_at": "2024-01-15T00:00:00",
        "consent.legal_basis": "vibes",
        "consent.scope": "everyone",
        "consent.withdrawn_at": 20240101,
        "consent.jurisdictions": "US",
        "provenance.acquired_at": "yesterday",
        "provenance.chain_of_custody": {"holder": "x"},
        "provenance.license": None,
        "provenance.source": ["a"],
        "manifest_version": 1,
        "manifest_version.two": "2",
        "consent": [],
        "provenance": "stock",
    }
    for path, value in wrong.items():
        field = path.removesuffix(".item").removesuffix(".two")
        cases[f"wrong-{path}"] = (_sidecar(json.dumps(_with(field, value))), "PROV-006")
    for path in (
        "manifest_version",
        "consent",
        "provenance",
        "consent.legal_basis",
        "consent.purposes",
        "consent.scope",
        "consent.collected_at",
        "consent.biometric",
        "consent.minors",
        "provenance.source",
        "provenance.collection_method",
        "provenance.acquired_at",
        "provenance.license",
    ):
        cases[f"missing-{path}"] = (_sidecar(json.dumps(_with(path, ...))), "PROV-006")
        cases[f"null-{path}"] = (_sidecar(json.dumps(_with(path, None))), "PROV-006")
    for path in ("extra", "consent.extra", "provenance.extra"):
        cases[f"unknown-{path}"] = (_sidecar(json.dumps(_with(path, True))), "PROV-006")

    withdrawn = json.dumps(_with("consent.withdrawn_at", "2024-06-01T00:00:00Z"))
    cases["conflict-sidecar-vs-parquet"] = (_beside_valid_sidecar(_in_parquet(withdrawn)), "PROV-006")
    cases["conflict-between-parquet-files"] = (
        lambda d: (_parquet(d / "part-0.parquet", json.dumps(VALID)), _parquet(d / "part-1.parquet", withdrawn)),
        "PROV-006",
    )
    cases["conflict-in-unsuffixed-file"] = (
        _beside_valid_sidecar(lambda d: _parquet(d / "part-1", withdrawn)),
        "PROV-006",
    )
    for name, content in {
        "zero-bytes.parquet": b"",
        "text.parquet": b"subject_id\ns1\n",
        "magic-only.parquet": b"PAR1PAR1",
        "truncated.parquet": None,
        "photo.jpg": b"\xff\xd8\xff",
    }.items():
        if content is None:

            def truncated(d: Path) -> None:
                _parquet(d / "t.parquet")
                (d / "truncated.parquet").write_bytes((d / "t.parquet").read_bytes()[:-9])
                (d / "t.parquet").unlink()

            make = truncated
        else:
            make = _bytes(name, content)
        cases[f"corrupt-{name}"] = (_beside_valid_sidecar(make), "PROV-006")

    cases["fifo-data-file"] = (_beside_valid_sidecar(_fifo("part-1.parquet")), "EVIDENCE-005")
    cases["fifo-sidecar"] = (lambda d: (_parquet(d / "part-0.parquet"), _fifo(SIDECAR_NAME)(d)), "EVIDENCE-005")
    cases["fifo-hidden"] = (_beside_valid_sidecar(_fifo(".part-1.parquet.crc")), "EVIDENCE-005")
    cases["socket-data-file"] = (_beside_valid_sidecar(_socket), "EVIDENCE-005")
    cases["char-device-data-file"] = (_beside_valid_sidecar(_char_device), "EVIDENCE-005")
    return cases


CORPUS = _corpus()


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 100


def test_every_hostile_partition_is_denied_by_the_named_rule(tmp_path: Path, opa_binary) -> None:
    root = tmp_path / "hostile"
    names = sorted(CORPUS)
    for index, name in enumerate(names):
        directory = root / f"case={index:03d}"
        directory.mkdir(parents=True)
        CORPUS[name][0](directory)

    report = evaluate_gate(_request(), [DatasetSpec(str(root))], LocalOpaEngine(opa_binary=opa_binary))

    assert not report.allow
    by_case = {names[int(p.id.rsplit("=", 1)[1])]: p for p in report.partitions}
    assert len(by_case) == len(names)
    wrong = {
        name: sorted(v.rule_id for v in p.violations)
        for name, p in by_case.items()
        if p.allow or CORPUS[name][1] not in {v.rule_id for v in p.violations}
    }
    assert wrong == {}


def _only_input(root: Path):
    [partition] = collect_partitions([DatasetSpec(str(root))])
    return partition


@pytest.mark.parametrize(
    "make",
    [_fifo("part-1.parquet"), _fifo(SIDECAR_NAME), _socket, _char_device],
    ids=["fifo", "fifo-sidecar", "socket", "char-device"],
)
def test_a_special_file_is_named_and_never_opened(tmp_path: Path, make) -> None:
    directory = tmp_path / "photos" / "source=stock"
    directory.mkdir(parents=True)
    _parquet(directory / "part-0.parquet", json.dumps(VALID))
    make(directory)

    partition = _only_input(directory.parent)

    [problem] = partition.evidence_problems
    assert problem.file.startswith(f"{directory}/")
    assert "is not a regular file: only regular files may sit in a partition" in problem.message


def test_a_special_file_outside_a_partition_directory_is_a_configuration_error(tmp_path: Path) -> None:
    directory = tmp_path / "photos" / "source=stock"
    directory.mkdir(parents=True)
    _parquet(directory / "part-0.parquet")
    os.mkfifo(directory.parent / "pipe")

    with pytest.raises(ConsentConfigurationError, match="pipe' is a FIFO outside the leaf partition directories"):
        discover_partitions(str(directory.parent))


def test_a_fifo_as_the_revocation_list_is_unmeasurable(tmp_path: Path) -> None:
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "a", rows(["s1"]))
    write_config(conf, config(), revoked=[])
    (conf / "revoked.csv").unlink()
    os.mkfifo(conf / "revoked.csv")

    [partition] = collect_partitions([DatasetSpec(str(data / DATASET), dataset_config_path=str(conf))])

    assert [p.message for p in partition.evidence_problems] == ["not a regular file (other): cannot read it as a list"]


# --- partition ids are injective ------------------------------------------------------------------


def test_special_characters_are_escaped_in_partition_ids(tmp_path: Path) -> None:
    for value in ("studio_optin", "studio:optin", "a b", "k=v"):
        (tmp_path / "photos" / f"source={value}").mkdir(parents=True)

    ids = [p.id for p in discover_partitions(str(tmp_path / "photos"))]

    assert ids == [
        "photos/source=a%20b",
        "photos/source=k%3Dv",
        "photos/source=studio%3Aoptin",
        "photos/source=studio_optin",
    ]


@pytest.mark.parametrize("twin", ["studio%5Foptin", unicodedata.normalize("NFD", "studiö_optin")])
def test_two_directories_that_decode_alike_are_a_configuration_error(tmp_path: Path, twin: str) -> None:
    original = "studio_optin" if "%" in twin else unicodedata.normalize("NFC", "studiö_optin")
    for value in (original, twin):
        (tmp_path / "photos" / f"source={value}").mkdir(parents=True)

    with pytest.raises(ConsentConfigurationError, match="name the same partition"):
        discover_partitions(str(tmp_path / "photos"))


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("where", ["sidecar", "parquet"])
def test_a_deeply_nested_manifest_is_a_named_problem(tmp_path: Path, where: str, depth: int) -> None:
    directory = tmp_path / "photos" / "source=stock"
    directory.mkdir(parents=True)
    (_sidecar if where == "sidecar" else _in_parquet)(_deep_manifest(depth))(directory)

    [problem] = _only_input(directory.parent).manifest_problems

    assert problem.message == f"manifest nests {depth + 2} levels deep; at most 32 are read"
