"""The deployment's ledger key: every record carries an HMAC-SHA256 of its ``record_hash``.

The hash chain proves a record was not edited after it was appended; it does not prove who
appended it: anyone who can write to the database can append a record with a correct hash. The
signature does: a record is signed by a process holding the deployment's secret, ``[consent]
ledger_secret`` (a sensitive option, so ``ledger_secret_cmd``, ``ledger_secret_secret`` and secrets
backends work as for Airflow's own secrets). Without it, one machine's deployment gets a random key
created once in ``$AIRFLOW_HOME/consent_ledger.key`` (mode 0600); the machines of a shared
deployment must all be given the same ``ledger_secret``, or each refuses the others' records.

Limit: every process that can sign can also forge. Workers hold the secret, and a task's own Python
runs in a worker: a DAG author who reads the secret and calls the ledger's code deliberately can
sign a record. What the signature stops is every writer without the secret: rows inserted through
a database connection, an edited or swapped SQLite file, a ledger from another deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from airflow_consent.errors import ConsentConfigurationError

SCHEME = "hmac-sha256"
KEY_FILE = "consent_ledger.key"
MIN_SECRET_LENGTH = 16
_SIGNATURE = re.compile(rf"^{SCHEME}:(?P<key_id>[0-9a-f]{{12}}):(?P<mac>[0-9a-f]{{64}})$")


@dataclass(frozen=True)
class LedgerKey:
    """The secret that signs ledger records, and where it came from (for messages; never the secret)."""

    secret: bytes = field(repr=False)
    source: str

    @property
    def id(self) -> str:
        """Names the key in signatures and messages without revealing it."""
        return hashlib.sha256(b"airflow-consent ledger key id\0" + self.secret).hexdigest()[:12]

    def sign(self, record_hash: str) -> str:
        """``hmac-sha256:<key id>:<hex>`` over ``record_hash``."""
        return f"{SCHEME}:{self.id}:{self._mac(record_hash)}"

    def problem(self, record_hash: str, signature: str | None) -> str | None:
        """Why ``signature`` is not this key's signature of ``record_hash``; None when it is."""
        if not signature:
            return "unsigned: not appended by a consent gate"
        match = _SIGNATURE.match(signature)
        if match is None:
            return f"its signature {signature[:40]!r} is not {SCHEME}:<key id>:<hex>"
        if match["key_id"] != self.id:
            return (
                f"signed with key {match['key_id']}, not this deployment's key {self.id} ({self.source}): written "
                "by another deployment, or [consent] ledger_secret differs between machines"
            )
        if not hmac.compare_digest(match["mac"], self._mac(record_hash)):
            return "its signature does not match its content: forged"
        return None

    def _mac(self, record_hash: str) -> str:
        return hmac.new(self.secret, record_hash.encode("ascii"), hashlib.sha256).hexdigest()


def deployment_key(secret: str | None, *, create: bool) -> LedgerKey | None:
    """The key from ``[consent] ledger_secret``, else from the key file in ``$AIRFLOW_HOME``, created
    when ``create`` (appending); None when there is neither (a reader on a machine that never signed)."""
    if secret:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConsentConfigurationError(
                f"[consent] ledger_secret is {len(secret)} characters; use at least {MIN_SECRET_LENGTH} (e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return LedgerKey(secret.encode("utf-8"), "[consent] ledger_secret")
    from airflow.configuration import AIRFLOW_HOME

    path = Path(AIRFLOW_HOME) / KEY_FILE
    if create and not path.exists():
        _create_key_file(path)
    if not path.exists():
        return None
    return LedgerKey(_read_key_file(path), str(path))


def _create_key_file(path: Path) -> None:
    """Write a random key, readable by its owner only; a key another process wrote first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)  # atomic, and never replaces a key that exists
    finally:
        draft.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsentConfigurationError(f"cannot read the consent ledger key {path}: {exc}") from exc
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConsentConfigurationError(
            f"{path} is not a consent ledger key (64 hex digits): restore it, or set [consent] ledger_secret"
        )
    return text.encode("ascii")
