"""Find the partitions of a hive-partitioned dataset and fingerprint their data files.

A dataset is a directory (local path or any fsspec URI) laid out hive-style:
``<root>/<key>=<value>/<key>=<value>/<data files>``. Every leaf directory is a partition; its data
files are the regular files whose names do not start with ``_`` or ``.`` (pyarrow's default
``ignore_prefixes``, what a reader of the partition reads, whatever their suffix), so sidecars such as
``_consent_manifest.json`` sit beside the data without being part of it. Anything that does not fit
that layout is a configuration error, never skipped: a gate must not approve a dataset it could
only partly read.

Only regular files are ever opened: a FIFO, socket or device in a partition (which would hang or
crash a reader) is listed in ``DiscoveredPartition.irregular_files`` for the gate to deny.

Partition ids are injective: keys and values are percent-decoded as pyarrow's hive partitioning
does, then written into the id in one canonical escaping (``quote`` keeping only letters, digits
and ``-_.~``), so ``source=studio:optin`` has the id ``.../source=studio%3Aoptin``, never that of
``source=studio_optin``. Two directories that decode to the same keys (``studio%5Foptin`` beside
``studio_optin``, or the same text in two Unicode normal forms) are a configuration error.

``parse_partition_filter`` is the one reading of a gate's ``partition_filter``, used when the DAG is
parsed and when partitions are discovered. pyarrow is imported only when a dataset is listed, so a
DAG file that builds a gate does not pay for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import fsspec
from fsspec.implementations.local import LocalFileSystem as FsspecLocalFileSystem

from airflow_consent.errors import ConsentConfigurationError, NoPartitionsFound
from airflow_consent.models import FILTER_OPERATORS

if TYPE_CHECKING:
    import pyarrow.fs as pafs

IGNORE_PREFIXES = ("_", ".")
ID_SAFE_CHARACTERS = "-_.~"  # besides letters and digits; everything else is percent-escaped in ids
PROGRESS_EVERY = 1000
LIST_OPERATORS = ("in", "not in")


@dataclass(frozen=True)
class DataFile:
    """One data file of a partition: its filesystem path, its name relative to the partition, its size."""

    path: str
    name: str
    size: int


@dataclass(frozen=True)
class DiscoveredPartition:
    """One partition of a dataset: identity, location, data files and the filesystem to read them."""

    dataset: str
    keys: dict[str, str]
    id: str
    uri: str
    root: str
    path: str = field(repr=False)
    files: tuple[DataFile, ...] = field(repr=False)
    sidecar_files: tuple[str, ...] = field(repr=False)
    filesystem: pafs.FileSystem = field(repr=False, compare=False)
    irregular_files: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(name, kind) of every entry that is neither a regular file nor a directory: never opened."""

    def uri_of(self, name: str) -> str:
        """The URI of the file ``name`` inside this partition directory."""
        return f"{self.uri}/{name}"

    def path_of(self, name: str) -> str:
        """The filesystem path of the file ``name`` inside this partition directory."""
        return f"{self.path}/{name}"


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]
    is_dir: bool
    size: int
    path: str
    irregular: str | None = None  # the kind of a non-regular file ("FIFO", "socket", ...)


def discover_partitions(
    uri: str,
    *,
    dataset: str | None = None,
    partition_filter: Sequence[Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[DiscoveredPartition]:
    """List the partitions of the hive-partitioned dataset at ``uri``, sorted by id.

    ``partition_filter`` is read by ``parse_partition_filter`` before anything is listed.
    ``progress`` is called with the number of partitions processed so far. Raises
    ``ConsentConfigurationError`` when the filter is malformed, the root is missing, the layout is
    not hive-style, a path escapes the root, the filter names an unknown key, or no partition remains.
    """
    import pyarrow.fs as pafs

    parsed_filter = parse_partition_filter(partition_filter)
    fs, root_path = fsspec.core.url_to_fs(uri)
    root_path = root_path.rstrip("/") or "/"
    local = isinstance(fs, FsspecLocalFileSystem)
    root_uri = os.path.abspath(uri) if local and "://" not in uri else uri.rstrip("/")
    name = dataset or root_uri.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ConsentConfigurationError(f"cannot derive a dataset name from {uri!r}: pass dataset=")

    if local:
        if not os.path.isdir(root_path):
            raise NoPartitionsFound(f"dataset root {uri!r} does not exist or is not a directory")
        entries = list(_scan_local(root_path))
        filesystem: pafs.FileSystem = pafs.LocalFileSystem()
    else:
        if not fs.isdir(root_path):
            raise NoPartitionsFound(f"dataset root {uri!r} does not exist or is not a directory")
        entries = list(_scan_fsspec(fs, root_path))
        filesystem = pafs.PyFileSystem(pafs.FSSpecHandler(fs))

    partitions = _partitions(entries, name, root_uri, root_path, filesystem, progress)
    if not partitions:
        raise NoPartitionsFound(f"dataset {name!r} at {root_uri} has no partitions")
    if parsed_filter is None:
        return partitions
    selected = _apply_filter(partitions, parsed_filter)
    if not selected:
        raise NoPartitionsFound(f"no partition of {name!r} at {root_uri} matches filter {partition_filter!r}")
    return selected


def fingerprint(partition: DiscoveredPartition) -> str:
    """``sha256:<hex>`` over the sorted (name, size, content SHA-256) of the partition's data files.

    The value is always that of the content, on every filesystem: remote ETags are not content
    hashes (multipart uploads, per-store algorithms), and a digest a data provider attests on its own
    disk must match the one computed after the data lands in an object store. A file's content
    SHA-256 is read from its bytes unless the store proves it without them (a checksum the store
    computed, or a signed cache entry for the file's unchanged identity: ``airflow_consent.
    fingerprint_cache`` says what each backend trusts). Sidecar files (``_``/``.`` prefixed) are
    excluded, so a manifest can attest the digest of its partition; irregular entries (FIFOs,
    sockets, devices) count by name and kind.
    """
    return fingerprints([partition])[0]


def fingerprints(partitions: Sequence[DiscoveredPartition]) -> list[str]:
    """``fingerprint`` of each partition, in order, the files of all of them hashed in parallel."""
    from airflow_consent.fingerprint_cache import content_digests

    digests = iter(content_digests([(p.filesystem, f.path) for p in partitions for f in p.files]))
    return [_combine(partition, {f.name: next(digests) for f in partition.files}) for partition in partitions]


def fingerprint_of_contents(partition: DiscoveredPartition, contents: dict[str, bytes]) -> str:
    """The fingerprint ``partition`` has when its data files (by name) hold exactly ``contents``:
    checks bytes already read into memory, so nothing can change between the check and the use."""
    return _combine(partition, {name: (hashlib.sha256(data).hexdigest(), len(data)) for name, data in contents.items()})


def _combine(partition: DiscoveredPartition, hashed: dict[str, tuple[str, int]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(hashed):
        content, size = hashed[name]
        digest.update(json.dumps([name, size, content]).encode() + b"\n")
    for name, kind in partition.irregular_files:
        digest.update(json.dumps([name, kind]).encode() + b"\n")
    return f"sha256:{digest.hexdigest()}"


# --- listing ----------------------------------------------------------------------------------


def _ignored(name: str) -> bool:
    return name.startswith(IGNORE_PREFIXES)


def _within(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _scan_local(root_path: str) -> Iterator[_Entry]:
    """Walk a local tree without trusting symlinks: each must resolve inside the root."""
    root_real = os.path.realpath(root_path)
    stack: list[tuple[str, tuple[str, ...], str, frozenset[str]]] = [(root_path, (), root_real, frozenset({root_real}))]
    while stack:
        directory, parts, directory_real, ancestors = stack.pop()
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda e: e.name)
        for child in children:
            child_parts = (*parts, child.name)
            try:
                is_dir = child.is_dir()
            except OSError as exc:
                raise ConsentConfigurationError(f"cannot read {child.path!r}: {exc}") from exc
            if is_dir and _ignored(child.name):
                continue
            real = os.path.join(directory_real, child.name)
            if child.is_symlink():
                real = os.path.realpath(child.path)
                if not _within(real, root_real):
                    raise ConsentConfigurationError(
                        f"{child.path!r} escapes the dataset root {root_path!r}: it resolves to {real!r}"
                    )
            if is_dir:
                if real in ancestors:
                    raise ConsentConfigurationError(f"{child.path!r} is a symlink cycle inside the dataset root")
                yield _Entry(child_parts, True, 0, child.path)
                stack.append((child.path, child_parts, real, ancestors | {real}))
            else:
                try:
                    status = child.stat()
                except OSError as exc:
                    raise ConsentConfigurationError(f"cannot read {child.path!r}: {exc}") from exc
                yield _Entry(child_parts, False, status.st_size, child.path, _irregular_kind(status.st_mode))


def _irregular_kind(mode: int) -> str | None:
    """None for a regular file; otherwise what it is (reading a FIFO or a device never ends)."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _scan_fsspec(fs: fsspec.AbstractFileSystem, root_path: str) -> Iterator[_Entry]:
    """One recursive listing (a paginated LIST on object stores), pruned of ignored directories."""
    prefix = root_path.rstrip("/") + "/"
    for path, info in sorted(fs.find(root_path, withdirs=True, detail=True).items()):
        path = path.rstrip("/")
        if path == root_path.rstrip("/"):
            continue
        if not path.startswith(prefix):
            raise ConsentConfigurationError(f"{path!r} escapes the dataset root {root_path!r}")
        parts = tuple(path[len(prefix) :].split("/"))
        if any(_ignored(part) for part in parts[:-1]):
            continue
        kind = info.get("type")
        is_dir = kind == "directory"
        if is_dir and _ignored(parts[-1]):
            continue
        irregular = None if is_dir or kind == "file" else f"{kind or 'untyped'} entry"
        yield _Entry(parts, is_dir, 0 if is_dir else int(info.get("size") or 0), path, irregular)


# --- partitions -------------------------------------------------------------------------------


def _parse_segment(segment: str, path: str) -> tuple[str, str]:
    key, sep, value = segment.partition("=")
    key, value = (unicodedata.normalize("NFC", unquote(part)) for part in (key, value))
    if not sep or not key:
        raise ConsentConfigurationError(f"{path!r} is not a key=value partition directory")
    for part in (key, value):
        if ".." in part or "/" in part or "\0" in part:
            raise ConsentConfigurationError(
                f"{path!r} escapes the dataset root: partition key or value {part!r} contains '..', '/' or NUL"
            )
    return key, value


def _partitions(
    entries: list[_Entry],
    dataset: str,
    root_uri: str,
    root_path: str,
    filesystem: pafs.FileSystem,
    progress: Callable[[int], None] | None,
) -> list[DiscoveredPartition]:
    subdirs: dict[tuple[str, ...], list[_Entry]] = {(): []}
    files: dict[tuple[str, ...], list[_Entry]] = {(): []}
    sidecars: dict[tuple[str, ...], list[str]] = {(): []}
    irregular: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    directories: dict[tuple[str, ...], _Entry] = {}
    for entry in entries:
        for depth in range(len(entry.parts)):
            parent = entry.parts[:depth]
            subdirs.setdefault(parent, [])
            files.setdefault(parent, [])
            sidecars.setdefault(parent, [])
        parent = entry.parts[:-1]
        if entry.is_dir:
            directories[entry.parts] = entry
            subdirs.setdefault(entry.parts, [])
            files.setdefault(entry.parts, [])
            sidecars.setdefault(entry.parts, [])
            subdirs[parent].append(entry)
        elif entry.irregular:
            irregular.setdefault(parent, []).append((entry.parts[-1], entry.irregular))
        elif _ignored(entry.parts[-1]):
            sidecars[parent].append(entry.parts[-1])
        else:
            files[parent].append(entry)

    for parts, data in files.items():
        if data and (not parts or subdirs[parts]):
            raise ConsentConfigurationError(
                f"{data[0].path!r} is not in a key=value directory at the partition level: "
                "data files must sit in the leaf partition directories"
            )
    for parts, odd in irregular.items():
        if not parts or subdirs[parts]:
            where = "/".join((root_path.rstrip("/"), *parts, odd[0][0]))
            raise ConsentConfigurationError(
                f"{where!r} is a {odd[0][1]} outside the leaf partition directories: remove it"
            )

    partitions: list[DiscoveredPartition] = []
    directory_of_id: dict[str, str] = {}
    key_names: tuple[str, ...] | None = None
    first_path = ""
    for parts in sorted(p for p in subdirs if p and not subdirs[p]):
        directory = directories.get(parts)
        path = directory.path if directory else f"{root_path.rstrip('/')}/{'/'.join(parts)}"
        keys: dict[str, str] = {}
        for depth, segment in enumerate(parts):
            key, value = _parse_segment(segment, f"{root_path.rstrip('/')}/{'/'.join(parts[: depth + 1])}")
            if key in keys:
                raise ConsentConfigurationError(f"{path!r} repeats the partition key {key!r}")
            keys[key] = value
        if key_names is None:
            key_names, first_path = tuple(keys), path
        elif tuple(keys) != key_names:
            raise ConsentConfigurationError(
                f"{path!r} has partition keys {list(keys)} but {first_path!r} has {list(key_names)}"
            )
        partition_id = "/".join([dataset, *(f"{_escape(k)}={_escape(v)}" for k, v in keys.items())])
        if (other := directory_of_id.setdefault(partition_id, path)) != path:
            raise ConsentConfigurationError(
                f"{other!r} and {path!r} name the same partition {partition_id!r} once decoded: "
                "rename one so that each partition has one directory"
            )
        partitions.append(
            DiscoveredPartition(
                dataset=dataset,
                keys=keys,
                id=partition_id,
                uri=f"{root_uri}/{'/'.join(parts)}",
                root=root_uri,
                path=path,
                files=tuple(
                    DataFile(path=f.path, name=f.parts[-1], size=f.size)
                    for f in sorted(files[parts], key=lambda f: f.parts[-1])
                ),
                sidecar_files=tuple(sorted(sidecars[parts])),
                filesystem=filesystem,
                irregular_files=tuple(sorted(irregular.get(parts, []))),
            )
        )
        if progress and len(partitions) % PROGRESS_EVERY == 0:
            progress(len(partitions))
    if progress and len(partitions) % PROGRESS_EVERY:
        progress(len(partitions))
    partitions.sort(key=lambda p: p.id)
    return partitions


def _escape(text: str) -> str:
    return quote(text, safe=ID_SAFE_CHARACTERS)


# --- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterTerm:
    """``key op value`` on one partition key; values are strings (a sorted tuple for ``in``/``not in``)."""

    key: str
    op: str
    value: str | tuple[str, ...]


@dataclass(frozen=True)
class PartitionFilter:
    """A parsed ``partition_filter``: a partition matches when every term of any one conjunction holds."""

    conjunctions: tuple[tuple[FilterTerm, ...], ...]

    @property
    def keys(self) -> list[str]:
        """The partition keys the filter names, in order of appearance."""
        return list(dict.fromkeys(term.key for conjunction in self.conjunctions for term in conjunction))

    def to_dnf(self) -> list[list[tuple[str, str, str | list[str]]]]:
        """The filter in pyarrow's DNF format, for ``pyarrow.parquet.filters_to_expression``."""
        return [
            [(t.key, t.op, list(t.value) if isinstance(t.value, tuple) else t.value) for t in conjunction]
            for conjunction in self.conjunctions
        ]


def parse_partition_filter(partition_filter: object) -> PartitionFilter | None:
    """Read a gate's ``partition_filter``: pyarrow's DNF format over partition keys, a list of
    ``(key, op, value)`` terms (AND) or a list of such lists (OR of ANDs); None when it is None or empty.

    Keys are strings; ``op`` is one of ``FILTER_OPERATORS`` (any case); a value is compared as a
    string, and ``in``/``not in`` take a list of values. Raises ``ConsentConfigurationError`` naming
    the first term (or list of terms) that does not fit.
    """
    if partition_filter is None:
        return None
    if not isinstance(partition_filter, (list, tuple)):
        raise ConsentConfigurationError(
            f"partition_filter must be a list of (key, op, value) terms or a list of such lists, "
            f"not the {type(partition_filter).__name__} {partition_filter!r}"
        )
    if not partition_filter:
        return None
    groups = [item for item in partition_filter if _is_term_list(item)]
    if len(groups) == len(partition_filter):
        return PartitionFilter(tuple(_conjunction(group) for group in groups))
    if groups:
        term = next(item for item in partition_filter if not _is_term_list(item))
        raise ConsentConfigurationError(
            f"partition_filter mixes terms and lists of terms: {term!r} beside {groups[0]!r}; "
            "give [(key, op, value), ...] or a list of such lists"
        )
    return PartitionFilter((_conjunction(partition_filter),))


def _is_term_list(item: object) -> bool:
    """A list of terms (one AND of an OR), as opposed to a term: a list whose items are all lists."""
    return isinstance(item, (list, tuple)) and all(isinstance(term, (list, tuple)) for term in item)


def _conjunction(terms: Sequence[object]) -> tuple[FilterTerm, ...]:
    if not terms:
        raise ConsentConfigurationError(
            f"partition_filter has an empty list of terms {terms!r}: remove it or give (key, op, value) terms"
        )
    return tuple(_term(term) for term in terms)


def _term(term: object) -> FilterTerm:
    where = f"partition_filter term {term!r}"
    if not (isinstance(term, (list, tuple)) and len(term) == 3):
        raise ConsentConfigurationError(f"{where} must be (key, op, value) with op one of {sorted(FILTER_OPERATORS)}")
    key, op, value = term
    if not isinstance(key, str) or not key:
        raise ConsentConfigurationError(f"{where}: the key must be a partition key name (a string), not {key!r}")
    if not isinstance(op, str) or (operator := op.strip().lower()) not in FILTER_OPERATORS:
        raise ConsentConfigurationError(f"{where}: the operator {op!r} is not one of {sorted(FILTER_OPERATORS)}")
    if operator not in LIST_OPERATORS:
        return FilterTerm(key, operator, _filter_value(value, f"{where}: {operator!r} compares with one value"))
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ConsentConfigurationError(
            f"{where}: {operator!r} needs a list of values, not the {type(value).__name__} {value!r}"
        )
    values = (_filter_value(item, f"{where}: {operator!r} takes values") for item in value)
    return FilterTerm(key, operator, tuple(sorted(values)))


def _filter_value(value: object, where: str) -> str:
    """The value as the string a partition key is compared with; None, bytes and collections are refused."""
    if value is None or isinstance(value, (bytes, bytearray, list, tuple, set, frozenset, dict)):
        raise ConsentConfigurationError(f"{where}, a string or a number, not {value!r}")
    return str(value)


def _apply_filter(
    partitions: list[DiscoveredPartition], partition_filter: PartitionFilter
) -> list[DiscoveredPartition]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    key_names = list(partitions[0].keys)
    for key in partition_filter.keys:
        if key not in key_names:
            raise ConsentConfigurationError(
                f"partition_filter names the key {key!r}, but dataset {partitions[0].dataset!r} "
                f"has the partition keys {key_names}"
            )
    columns = {k: pa.array([p.keys[k] for p in partitions], pa.string()) for k in key_names}
    columns["__index"] = pa.array(range(len(partitions)), pa.int64())
    table = pa.table(columns).filter(pq.filters_to_expression(partition_filter.to_dnf()))
    return [partitions[i] for i in table.column("__index").to_pylist()]
