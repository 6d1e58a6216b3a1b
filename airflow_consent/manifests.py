"""Read what a partition claims: its consent manifest, from a sidecar file or Parquet metadata.

A manifest is the sidecar ``_consent_manifest.json`` in the partition directory, or the JSON text
under the key ``airflow_consent.manifest`` in the key-value metadata of the partition's Parquet files
(only footers are read). Every data file's footer is read, and every claim found must agree.

Bad partition content never raises: a missing, unreadable, oversized (1 MiB), too deeply nested,
invalid or conflicting manifest comes back as
``ManifestProblem``s (file and dotted field path) and no manifest, which the policies deny.
Validation is strict: JSON types must match (``"false"`` is not a boolean), unknown fields are
errors, datetimes must carry a time zone, and a field of the other manifest version (``license`` in
version 2, ``licenses`` or ``upstream`` in version 1) is an error naming it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.models import MANIFEST_VERSION_ERROR, MANIFEST_VERSIONS, Manifest, ManifestProblem

SIDECAR_NAME = "_consent_manifest.json"
PARQUET_METADATA_KEY = "airflow_consent.manifest"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 32  # a manifest nests 3 levels deep; 10,000 would crash the JSON parsers
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")

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

    Every claim is read: the sidecar and the key-value metadata of every data file. They must all be
    valid and say the same; a claim that disagrees with another is a problem naming both files and
    the differing fields (a data file saying consent was withdrawn must not hide behind a sidecar
    saying all is well). The manifest is None whenever there is a problem; the source (the sidecar,
    else the first data file carrying a manifest) is set whenever a manifest was found.
    """
    claims: list[tuple[str, Manifest | None]] = []
    problems: list[ManifestProblem] = []
    sidecar = partition.uri_of(SIDECAR_NAME) if SIDECAR_NAME in partition.sidecar_files else None
    if sidecar:
        raw, problem = _read_sidecar(partition, sidecar)
        if problem:
            problems.append(problem)
        else:
            claims.append(_parsed(raw, sidecar, problems))
    for data_file in partition.files:
        source = partition.uri_of(data_file.name)
        try:
            metadata = pq.read_metadata(data_file.path, filesystem=partition.filesystem).metadata or {}
        except (OSError, ValueError, pa.ArrowException) as exc:
            problems.append(_problem(source, None, f"cannot read the Parquet footer: {exc}"))
            continue
        claimed = metadata.get(PARQUET_METADATA_KEY.encode())
        if claimed is not None:
            claims.append(_parsed(claimed, source, problems))

    if not claims:
        return None, sidecar, problems if sidecar else [*problems, _missing(partition)]
    first_source, first = claims[0]
    for source, manifest in claims[1:]:
        if first and manifest and (fields := _differing_fields(first, manifest)):
            problems.append(
                _problem(
                    source,
                    fields[0],
                    f"conflicting manifests: {source} and {first_source} disagree on {', '.join(fields[:10])}; "
                    "every claim about a partition (sidecar and Parquet metadata) must say the same",
                )
            )
    return (first if not problems else None), first_source, problems


def _read_sidecar(partition: DiscoveredPartition, source: str) -> tuple[bytes, ManifestProblem | None]:
    try:
        with partition.filesystem.open_input_stream(partition.path_of(SIDECAR_NAME)) as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except (OSError, pa.ArrowException) as exc:
        return b"", _problem(source, None, f"cannot read the manifest: {exc}")
    return raw, None


def _parsed(raw: bytes, source: str, problems: list[ManifestProblem]) -> tuple[str, Manifest | None]:
    manifest, found = parse_manifest(raw, source)
    problems.extend(found)
    return source, manifest


def _differing_fields(one: Manifest, other: Manifest) -> list[str]:
    """Dotted paths of the fields whose values differ between two manifests."""

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    left, right = flat(one.model_dump(mode="json"), ""), flat(other.model_dump(mode="json"), "")
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))


def parse_manifest(raw: bytes | str, source: str) -> tuple[Manifest | None, list[ManifestProblem]]:
    """Validate manifest JSON text; problems name ``source`` and the dotted path of each bad field."""
    if len(raw) > MAX_MANIFEST_BYTES:
        return None, [_problem(source, None, f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        return None, [_problem(source, None, f"manifest is not UTF-8 text: {exc}")]
    if (depth := _nesting_depth(text)) > MAX_MANIFEST_DEPTH:
        return None, [
            _problem(source, None, f"manifest nests {depth} levels deep; at most {MAX_MANIFEST_DEPTH} are read")
        ]
    try:
        json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        return None, [_problem(source, None, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
    except _DuplicateKey as exc:
        return None, [_problem(source, None, f"malformed JSON: duplicate key {exc.args[0]!r} in one object")]
    try:
        return Manifest.model_validate_json(text, strict=True), []
    except ValidationError as exc:
        return None, [_validation_problem(source, error) for error in exc.errors(include_url=False)]


def _nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text, counted without parsing it (strings skipped)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _validation_problem(source: str, error: ErrorDetails) -> ManifestProblem:
    field = ".".join(str(part) for part in error["loc"]) or None
    value = error.get("input")
    if error["type"] == MANIFEST_VERSION_ERROR:  # a field the manifest's version requires or does not have
        field, message = error["ctx"]["field"], error["msg"]
    elif error["type"] == "missing":
        message = "required field is missing"
    elif error["type"] == "extra_forbidden":
        message = f"unknown field (got {_describe(value)})"
    elif field == "manifest_version":
        readable = " or ".join(repr(version) for version in MANIFEST_VERSIONS)
        message = f"unsupported manifest_version {_describe(value)}: this version reads {readable}"
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
