"""The SHA-256 of each data file's content: read in parallel, or taken from what the store proves.

``content_digests`` gives ``(hex SHA-256, size)`` per file, the values ``discovery.fingerprint``
combines. A file's bytes are read only when nothing cheaper proves what they are. Per backend:

- **Local files** (``pyarrow.fs.LocalFileSystem``): ``fstat`` of the opened file gives its identity,
  ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` (opened, so that an NFS client revalidates
  the attributes instead of answering from its attribute cache). A digest is reused when a cache entry for
  that exact identity exists. ``ctime`` is what makes this sound: the kernel sets it on every write,
  truncate, rename, ``chmod`` and ``utime``, and no system call lets a user set it (only changing the
  system clock or editing the raw device, both root's), so a rewrite that keeps the size and restores
  the mtime with ``os.utime`` still changes the identity; a replacement by rename changes the inode
  too. Trusted: that the clock ctime comes from only moves forward and ticks at least every
  ``SETTLE_NS``. Against writes racing the read, an entry is stored only when the file's ctime is more
  than ``SETTLE_NS`` older than the moment before the read, and the identity after the read equals the
  one before (the "racy git" rule): a write in the same clock tick as the last one leaves ctime as it
  was, so a file changed in the last second is hashed every time until it settles. Not trusted on a
  network file system whose server clock lags this machine's by more than ``SETTLE_NS``.
- **S3** (``s3fs`` through fsspec): one ``HeadObject`` with ``ChecksumMode=ENABLED``. A single-part
  object stored with a SHA-256 checksum (``ChecksumSHA256``, ``ChecksumType`` absent or
  ``FULL_OBJECT``, an ETag without the ``-<parts>`` of a multipart upload) has its digest taken from
  it without reading a byte: S3 computes it and refuses an upload whose claimed checksum differs, so
  it is the SHA-256 of the content, the very value reading would give. Otherwise the identity is
  ``(ETag, VersionId, LastModified, ContentLength)``: S3 sets all four on every write, a versioned
  bucket gives each write a new ``VersionId``; without versioning a changed object keeps its identity
  only if the new content has the same ETag (for simple uploads, its MD5) and lands in the same
  second: trusted, with that stated residue (crafted MD5 collisions); turn versioning on to close it.
- **Anything else** (GCS, Azure, HTTP, ``memory://``, ...): nothing is trusted; every byte is read
  every time. GCS ``generation`` would serve as S3's VersionId does; it is not used yet.

The cache is a SQLite file shared by the machine's processes: ``[consent] fingerprint_cache`` names it
(default ``$AIRFLOW_HOME/consent_fingerprints.db``; ``off`` turns it off). Each entry is signed with
a key derived from the deployment's ledger key (``airflow_consent.ledger.keys``), over the file's
location, its identity, the digest and the size: an entry whose signature, identity or format does
not check out is ignored, the file is read again and the entry replaced. So a writer of the cache
file without the key can cost re-hashing but never make a changed file look unchanged (a forged
entry naming the changed file's new identity with the old digest fails its signature). A process
holding the key (every worker) can forge entries, as it can forge ledger records. A cache that cannot
be opened is ignored; one that is not a SQLite database, is malformed or has another layout is
deleted and created again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
HASH_THREADS = min(32, (os.cpu_count() or 1) + 4)  # hashlib releases the GIL; remote reads wait on the network
SETTLE_NS = 1_000_000_000  # a local file changed this recently is hashed, not cached
CACHE_FILE = "consent_fingerprints.db"
OFF_VALUES = frozenset({"off", "false", "no", "none", "0"})
SCHEMA_VERSION = 1
BUSY_SECONDS = 10.0
LOOKUP_BATCH = 500
_DOMAIN = b"airflow-consent fingerprint cache v1\0"  # a cache signature is never a ledger signature
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_BROKEN_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})  # primary result codes
_COLUMNS = ("location", "identity", "digest", "size", "mac")
_INSERT = f"INSERT OR REPLACE INTO fingerprints ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class FileIdentity:
    """What the store's metadata proves about one file: where it is (``location``), a canonical text of
    the metadata that changes with every write (``proof``), its size, and the content SHA-256 when the
    store itself vouches for it."""

    location: str
    proof: str
    size: int
    settled: bool = True
    checksum: str | None = None


def content_digests(files: Sequence[tuple[pafs.FileSystem, str]]) -> list[tuple[str, int]]:
    """``(hex SHA-256, size)`` of the content of each ``(filesystem, path)``, in order.

    A file is read (on ``HASH_THREADS`` threads) unless its store proves its digest: a checksum the
    store computed, or a verified cache entry for its current identity. Raises what reading raises
    (``OSError`` for a missing or unreadable file).
    """
    started_ns = time.time_ns()
    remote = any(_fsspec_of(filesystem) is not None for filesystem, _ in files)
    identities = _map(lambda item: _identify(item[0], item[1], started_ns), files, parallel=remote)
    digests: list[tuple[str, int] | None] = [
        (identity.checksum, identity.size) if identity is not None and identity.checksum else None
        for identity in identities
    ]
    cache = configured_cache()
    if cache is not None:
        known = cache.lookup(
            [identity for identity, digest in zip(identities, digests, strict=True) if identity and not digest]
        )
        for index, identity in enumerate(identities):
            if digests[index] is None and identity is not None and identity.location in known:
                digests[index] = known[identity.location]
    misses = [index for index, digest in enumerate(digests) if digest is None]
    hashed = _map(lambda index: _hash_and_recheck(*files[index], identities[index], started_ns), misses, parallel=True)
    entries: list[tuple[FileIdentity, str, int]] = []
    for index, (digest, size, stable) in zip(misses, hashed, strict=True):
        digests[index] = (digest, size)
        if stable:
            entries.append((identities[index], digest, size))  # type: ignore[arg-type]  # stable implies identified
    if cache is not None and entries:
        cache.store(entries)
    return digests  # type: ignore[return-value]  # every None was filled


def hash_content(filesystem: pafs.FileSystem, path: str) -> tuple[str, int]:
    """``(hex SHA-256, size)`` of every byte of the file, read in ``CHUNK_SIZE`` chunks."""
    digest = hashlib.sha256()
    size = 0
    with filesystem.open_input_stream(path) as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _hash_and_recheck(
    filesystem: pafs.FileSystem, path: str, before: FileIdentity | None, started_ns: int
) -> tuple[str, int, bool]:
    """Read the file; it may be cached only when it was settled and its identity did not move meanwhile."""
    digest, size = hash_content(filesystem, path)
    if before is None or not before.settled or size != before.size:
        return digest, size, False
    return digest, size, _identify(filesystem, path, started_ns) == before


def _map(function: Callable[[T], R], items: Sequence[T], *, parallel: bool) -> list[R]:
    if not parallel or len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(HASH_THREADS, len(items)), thread_name_prefix="consent-fingerprint") as pool:
        return list(pool.map(function, items))


# --- identities, per backend ---------------------------------------------------------------------


def _identify(filesystem: pafs.FileSystem, path: str, started_ns: int) -> FileIdentity | None:
    """The file's identity from its metadata; None when the backend proves nothing (it is then read)."""
    import pyarrow.fs as pafs

    try:
        if isinstance(filesystem, pafs.LocalFileSystem):
            return _local_identity(path, started_ns)
        fs = _fsspec_of(filesystem)
        if fs is not None and {"s3", "s3a"} & set(_protocols(fs)) and hasattr(fs, "call_s3"):
            return _s3_identity(fs, path)
    except Exception as exc:
        log.debug("no identity for %s (%s): reading it", path, exc)
    return None


def _local_identity(path: str, started_ns: int) -> FileIdentity | None:
    # fstat of an open descriptor, not stat: an NFS client revalidates a file's attributes when it is
    # opened (close-to-open), while stat may answer from an attribute cache up to a minute old.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO never hangs
    try:
        status = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(status.st_mode):
        return None
    proof = f"local {status.st_dev} {status.st_ino} {status.st_size} {status.st_mtime_ns} {status.st_ctime_ns}"
    return FileIdentity(
        location=_file_location(path),
        proof=proof,
        size=status.st_size,
        settled=status.st_ctime_ns < started_ns - SETTLE_NS,
    )


def _file_location(path: str) -> str:
    """``file://<absolute path>``; a path that is not valid UTF-8 (SQLite stores text) is percent-escaped."""
    absolute = path if path.startswith("/") else os.path.abspath(path)
    try:
        absolute.encode()
    except UnicodeEncodeError:
        return f"file-bytes://{quote(os.fsencode(absolute), safe='/')}"
    return f"file://{absolute}"


def _s3_identity(fs: Any, path: str) -> FileIdentity | None:
    bucket, key, version = fs.split_path(path)
    head = fs.call_s3(
        "head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED", **({"VersionId": version} if version else {})
    )
    etag, size, modified = head.get("ETag"), head.get("ContentLength"), head.get("LastModified")
    if not isinstance(etag, str) or not etag or type(size) is not int or not hasattr(modified, "isoformat"):
        return None
    endpoint = getattr(getattr(getattr(fs, "s3", None), "meta", None), "endpoint_url", None) or "s3"
    proof = ["s3", etag, head.get("VersionId"), modified.isoformat(), size]
    return FileIdentity(
        location=f"s3+{endpoint}/{bucket}/{key}",
        proof=json.dumps(proof),
        size=size,
        checksum=_full_object_sha256(head, etag),
    )


def _full_object_sha256(head: dict[str, Any], etag: str) -> str | None:
    """The hex SHA-256 of the whole object when S3 holds one; never a composite (multipart) checksum."""
    value = head.get("ChecksumSHA256")
    if not isinstance(value, str) or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT" or "-" in etag:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == hashlib.sha256().digest_size else None


def _fsspec_of(filesystem: Any) -> Any:
    """The fsspec filesystem behind a ``pyarrow.fs.PyFileSystem(FSSpecHandler(...))``, else None."""
    return getattr(getattr(filesystem, "handler", None), "fs", None)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# --- the cache -----------------------------------------------------------------------------------


class FingerprintCache:
    """Signed content digests by file identity, in one SQLite file shared by a machine's processes.

    Every failure to read or write it is logged and costs only hashing: nothing it holds is used
    unless its signature, identity and format check out.
    """

    def __init__(self, path: Path, secret: bytes) -> None:
        self.path = path
        self._key = hmac.new(secret, _DOMAIN, hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._unusable = False  # cannot be opened at all (a directory, no permission): stop trying
        self._warned = False

    def lookup(self, identities: Sequence[FileIdentity]) -> dict[str, tuple[str, int]]:
        """Location -> (digest, size) for each identity with a valid entry; nothing on any error."""
        wanted = {identity.location: identity for identity in identities}
        if not wanted or self._unusable:
            return {}
        locations = list(wanted)
        found: dict[str, tuple[str, int]] = {}
        try:
            with self._lock:
                connection = self._connect()
                for start in range(0, len(locations), LOOKUP_BATCH):
                    batch = locations[start : start + LOOKUP_BATCH]
                    rows = connection.execute(
                        f"SELECT {', '.join(_COLUMNS)} FROM fingerprints WHERE location IN "
                        f"({', '.join('?' * len(batch))})",
                        batch,
                    ).fetchall()
                    for row in rows:
                        if (identity := wanted.get(row[0])) is not None and self._valid(identity, *row[1:]):
                            found[row[0]] = (row[2], row[3])
        except (sqlite3.Error, OSError, UnicodeError) as exc:
            self._failed("read", exc)
            return {}
        return found

    def store(self, entries: Sequence[tuple[FileIdentity, str, int]]) -> None:
        """Remember each (identity, digest, size), replacing what the cache held for the location."""
        if self._unusable:
            return
        rows = [
            (identity.location, identity.proof, digest, size, self._mac(identity, digest, size))
            for identity, digest, size in entries
        ]
        try:
            with self._lock:
                connection = self._connect()
                if len(rows) == 1:  # one statement commits itself: a third of the cost of BEGIN ... COMMIT
                    connection.execute(_INSERT, rows[0])
                    return
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(_INSERT, rows)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError, UnicodeError) as exc:
            self._failed("write", exc)

    def close(self) -> None:
        """Close this process's connection (a forked child never uses its parent's)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None

    def _valid(self, identity: FileIdentity, proof: object, digest: object, size: object, mac: object) -> bool:
        return (
            proof == identity.proof
            and type(size) is int
            and size == identity.size
            and isinstance(digest, str)
            and _HEX_DIGEST.fullmatch(digest) is not None
            and isinstance(mac, str)
            and hmac.compare_digest(mac, self._mac(identity, digest, size))
        )

    def _mac(self, identity: FileIdentity, digest: str, size: int) -> str:
        message = f"{SCHEMA_VERSION}\0{identity.location}\0{identity.proof}\0{digest}\0{size}"  # no NUL in any
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        self._pid = os.getpid()
        try:
            self._connection = _open_database(self.path)
        except sqlite3.DatabaseError as exc:
            if _code(exc) not in _BROKEN_CODES:
                self._unusable = _code(exc) == sqlite3.SQLITE_CANTOPEN
                raise
            log.warning("The fingerprint cache %s is broken (%s): creating it again", self.path, exc)
            _remove_database(self.path)
            self._connection = _open_database(self.path)
        except OSError:
            self._unusable = True
            raise
        return self._connection

    def _failed(self, action: str, exc: Exception) -> None:
        """Forget the connection (deleting a broken file); warn once per process, then quietly hash."""
        (log.debug if self._warned else log.warning)(
            "Cannot %s the fingerprint cache %s (%s): hashing instead", action, self.path, exc
        )
        self._warned = True
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            if isinstance(exc, sqlite3.DatabaseError) and _code(exc) in _BROKEN_CODES:
                _remove_database(self.path)


def _code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in their low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _open_database(path: Path) -> sqlite3.Connection:
    """Open (creating, mode 0600) the cache file and check its layout; a foreign layout is replaced."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    connection = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        if _layout(connection) != (SCHEMA_VERSION, _COLUMNS):
            connection.execute("BEGIN IMMEDIATE")
            if _layout(connection) != (SCHEMA_VERSION, _COLUMNS):  # another process may have just made it
                connection.execute("DROP TABLE IF EXISTS fingerprints")
                connection.execute(
                    "CREATE TABLE fingerprints (location TEXT PRIMARY KEY, identity TEXT NOT NULL, "
                    "digest TEXT NOT NULL, size INTEGER NOT NULL, mac TEXT NOT NULL) WITHOUT ROWID"
                )
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
    except BaseException:
        connection.close()
        raise
    return connection


def _layout(connection: sqlite3.Connection) -> tuple[int, tuple[str, ...]]:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    columns = tuple(row[1] for row in connection.execute("PRAGMA table_info(fingerprints)"))
    return version, columns


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Cannot remove the broken fingerprint cache %s%s: %s", path, suffix, exc)


# --- which cache: [consent] fingerprint_cache ------------------------------------------------------

_SETTING_VARIABLES = tuple(
    f"AIRFLOW__CONSENT__{name}"
    for name in ("FINGERPRINT_CACHE", "LEDGER_SECRET", "LEDGER_SECRET_CMD", "LEDGER_SECRET_SECRET")
)
_CACHES: dict[tuple[object, ...], FingerprintCache | None] = {}
_CACHES_LOCK = threading.Lock()


def configured_cache() -> FingerprintCache | None:
    """This process's cache as ``[consent] fingerprint_cache`` names it; None when it is off or cannot be
    used (no key, no writable place). Resolved again only when the process, ``$AIRFLOW_HOME`` or an
    environment variable it depends on changes (this runs once per partition: it must cost nothing)."""
    import airflow.configuration

    home: str = airflow.configuration.AIRFLOW_HOME
    memo = (os.getpid(), home, *map(os.environ.get, _SETTING_VARIABLES))
    with _CACHES_LOCK:
        if memo not in _CACHES:
            for stale in [key for key in _CACHES if key[0] == os.getpid()]:
                if (old := _CACHES.pop(stale)) is not None:
                    old.close()
            _CACHES[memo] = _open_configured(home)
        return _CACHES[memo]


def _open_configured(home: str) -> FingerprintCache | None:
    from airflow.configuration import conf

    from airflow_consent.config import settings
    from airflow_consent.errors import ConsentConfigurationError
    from airflow_consent.ledger.keys import deployment_key

    setting = (conf.get("consent", "fingerprint_cache", fallback="") or "").strip()
    if setting.lower() in OFF_VALUES:
        return None
    path = Path(setting).expanduser() if setting else Path(home) / CACHE_FILE
    try:
        key = deployment_key(settings().ledger_secret, create=True)
    except (OSError, ConsentConfigurationError) as exc:  # the gate and the ledger report their own settings
        log.warning("No fingerprint cache (%s): hashing every file", exc)
        return None
    if key is None:
        return None
    return FingerprintCache(path, key.secret)
