"""Read what a partition claims: its consent manifest, from a sidecar file or Parquet metadata.

The sidecar ``_consent_manifest.json`` in the partition directory wins; otherwise the manifest is
the JSON text under the key ``airflow_consent.manifest`` in the key-value metadata of the
partition's Parquet files (only footers are read), and every file carrying it must agree.

Bad partition content never raises: a missing, unreadable or invalid manifest comes back as
``ManifestProblem``s (file and dotted field path) and no manifest, which the policies deny.
Validation is strict: JSON types must match (``"false"`` is not a boolean), unknown fields are
errors, and datetimes must carry a time zone.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.models import MANIFEST_VERSION, Manifest, ManifestProblem

SIDECAR_NAME = "_consent_manifest.json"
PARQUET_METADATA_KEY = "airflow_consent.manifest"
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
MAX_MANIFEST_BYTES = 1 << 20

ManifestResult = tuple[Manifest | None, str | None, list[ManifestProblem]]

_JSON_TYPES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
}


def read_manifest(partition: DiscoveredPartition) -> ManifestResult:
    """The partition's manifest, the URI of the file it was read from, and the problems found.

    The manifest is None whenever there is a problem; the source is set whenever a manifest
    (valid or not) was found.
    """
    if SIDECAR_NAME in partition.sidecar_files:
        return _read_sidecar(partition)
    return _read_parquet_metadata(partition)


def _read_sidecar(partition: DiscoveredPartition) -> ManifestResult:
    source = partition.uri_of(SIDECAR_NAME)
    try:
        with partition.filesystem.open_input_stream(partition.path_of(SIDECAR_NAME)) as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except (OSError, pa.ArrowException) as exc:
        return None, source, [_problem(source, None, f"cannot read the manifest: {exc}")]
    if len(raw) > MAX_MANIFEST_BYTES:
        return None, source, [_problem(source, None, f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    manifest, problems = parse_manifest(raw, source)
    return manifest, source, problems


def _read_parquet_metadata(partition: DiscoveredPartition) -> ManifestResult:
    problems: list[ManifestProblem] = []
    found: list[tuple[str, bytes, Any]] = []
    for data_file in partition.files:
        if not data_file.name.lower().endswith(PARQUET_SUFFIXES):
            continue
        source = partition.uri_of(data_file.name)
        try:
            metadata = pq.read_metadata(data_file.path, filesystem=partition.filesystem).metadata or {}
        except (OSError, ValueError, pa.ArrowException) as exc:
            problems.append(_problem(source, None, f"cannot read the Parquet footer: {exc}"))
            continue
        raw = metadata.get(PARQUET_METADATA_KEY.encode())
        if raw is None:
            continue
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parsed = None  # parse_manifest below reports where it breaks
        found.append((source, raw, parsed))

    if not found:
        return None, None, [*problems, _missing(partition)]

    first_source, first_raw, first_parsed = found[0]
    for source, raw, parsed in found[1:]:
        same = raw == first_raw or (parsed is not None and parsed == first_parsed)
        if not same:
            problems.append(
                _problem(
                    source,
                    None,
                    f"the manifest in {source} differs from the one in {first_source}: "
                    "all Parquet files of a partition must carry the same manifest",
                )
            )
    manifest, parse_problems = parse_manifest(first_raw, first_source)
    problems.extend(parse_problems)
    return (manifest if not problems else None), first_source, problems


def parse_manifest(raw: bytes | str, source: str) -> tuple[Manifest | None, list[ManifestProblem]]:
    """Validate manifest JSON text; problems name ``source`` and the dotted path of each bad field."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        return None, [_problem(source, None, f"manifest is not UTF-8 text: {exc}")]
    try:
        json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        return None, [
            _problem(source, None, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        ]
    except _DuplicateKey as exc:
        return None, [_problem(source, None, f"malformed JSON: duplicate key {exc.args[0]!r} in one object")]
    try:
        return Manifest.model_validate_json(text, strict=True), []
    except ValidationError as exc:
        return None, [_validation_problem(source, error) for error in exc.errors(include_url=False)]


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _validation_problem(source: str, error: dict[str, Any]) -> ManifestProblem:
    field = ".".join(str(part) for part in error["loc"]) or None
    value = error.get("input")
    if error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "extra_forbidden":
        message = f"unknown field (got {_describe(value)})"
    elif field == "manifest_version":
        message = f"unsupported manifest_version {_describe(value)}: this version reads {MANIFEST_VERSION!r}"
    else:
        message = f"{error['msg']} (got {_describe(value)})"
    return _problem(source, field, message)


def _describe(value: object) -> str:
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if value is None or isinstance(value, (dict, list)):
        return kind
    shown = json.dumps(value, default=str)
    return f"{kind} {shown if len(shown) <= 80 else shown[:77] + '...'}"


def _missing(partition: DiscoveredPartition) -> ManifestProblem:
    return _problem(
        partition.uri_of(SIDECAR_NAME),
        None,
        f"no consent manifest: add {SIDECAR_NAME} or the Parquet key-value metadata '{PARQUET_METADATA_KEY}'",
    )


def _problem(file: str, field: str | None, message: str) -> ManifestProblem:
    return ManifestProblem(file=file, field=field, message=message)
