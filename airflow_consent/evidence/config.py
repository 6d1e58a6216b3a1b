"""Per-dataset evidence configuration: which columns hold what, the revocation list, the GX suite.

A gate finds the configuration of dataset ``<name>`` at ``<dataset_config_path>/<name>.json``
(``dataset_config_path``: the operator argument, else ``[consent] dataset_config_path``). A dataset
without such a file has no evidence configuration: its partitions are judged on their manifests
alone. A file that exists but is invalid stops the gate with ``ConsentConfigurationError`` naming the
file and the field::

    {
      "config_version": "1",
      "data_files": "*.parquet",
      "columns": {
        "subject_id": "subject_id",
        "consent": {"face_recognition_training": "consent_face_recognition"},
        "collected_at": "collected_at",
        "consent_withdrawn_at": "consent_withdrawn_at",
        "consent_expires_at": "consent_expires_at"
      },
      "revocations": {"path": "revoked_subjects.csv", "column": "subject_id"},
      "expectations": {"suite": "profile_photos.expectations.json", "critical": ["expect_column_values_to_not_be_null"]}
    }

Relative paths are resolved against the configuration file's directory.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airflow_consent.errors import ConsentConfigurationError

CONFIG_VERSION = "1"
CONFIG_SUFFIX = ".json"
SUITE_SUFFIX = ".expectations.json"
MAX_CONSENT_COLUMNS = 16
REVOCATION_FORMATS = {".parquet": "parquet", ".parq": "parquet", ".pq": "parquet", ".csv": "csv"}
SETTING = "dataset_config_path"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsConfig(_Strict):
    """Which columns of the partitions' data files hold the subject, the consent flags and the times."""

    subject_id: str = Field(min_length=1, description="integer or string column identifying the data subject")
    consent: dict[str, str] = Field(
        default_factory=dict,
        description="purpose id (from the purpose taxonomy) → boolean column: the subject consented to it",
    )
    collected_at: str | None = Field(default=None, description="timestamp column: when the row was collected")
    consent_withdrawn_at: str | None = Field(default=None, description="timestamp column: when consent was withdrawn")
    consent_expires_at: str | None = Field(default=None, description="timestamp column: when consent expires")

    @model_validator(mode="after")
    def _consistent(self) -> ColumnsConfig:
        if len(self.consent) > MAX_CONSENT_COLUMNS:
            raise ValueError(f"at most {MAX_CONSENT_COLUMNS} consent columns are supported")
        times = [self.consent_withdrawn_at, self.consent_expires_at]
        if any(times) and not self.collected_at:
            raise ValueError("consent_withdrawn_at and consent_expires_at need collected_at to compare with")
        if self.collected_at and not any(times):
            raise ValueError("collected_at needs consent_withdrawn_at or consent_expires_at to compare with")
        used = [self.subject_id, *self.consent.values(), self.collected_at, *times]
        named = [c for c in used if c]
        if len(named) != len(set(named)):
            raise ValueError(f"a column is named twice: {sorted(c for c in set(named) if named.count(c) > 1)}")
        return self


class RevocationsConfig(_Strict):
    """The list of subjects whose data must not be used: a Parquet/CSV file or a database table."""

    path: str | None = Field(default=None, description="Parquet or CSV file: relative, absolute or an fsspec URI")
    url: str | None = Field(default=None, description="SQLAlchemy URL of a database, without a password")
    conn_id: str | None = Field(default=None, description="Airflow connection of the database (holds the credentials)")
    table: str | None = Field(default=None, description="the table ('name' or 'schema.name'), for url or conn_id")
    column: str = Field(default="subject_id", min_length=1, description="the column holding the subject ids")

    @model_validator(mode="after")
    def _one_source(self) -> RevocationsConfig:
        given = [name for name in ("path", "url", "conn_id") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"set exactly one of path, url, conn_id (got {given or 'none'})")
        if self.path and self.table:
            raise ValueError("table applies to url or conn_id, not to path")
        if (self.url or self.conn_id) and not self.table:
            raise ValueError("url and conn_id need table")
        if self.path and _suffix(self.path) not in REVOCATION_FORMATS:
            raise ValueError(f"path must end in one of {sorted(REVOCATION_FORMATS)}")
        if self.url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                url = make_url(self.url)
            except ArgumentError as exc:
                raise ValueError(f"url is not a SQLAlchemy URL: {exc}") from None
            if url.password:
                raise ValueError(
                    "url must not contain a password: put the credentials in an Airflow connection "
                    "and set conn_id instead"
                )
        return self


class ExpectationsConfig(_Strict):
    """The Great Expectations suite run on every partition, and which of its expectations are consent-critical."""

    suite: str | None = Field(
        default=None, description="suite file in GX's JSON format; default <dataset>.expectations.json"
    )
    critical: list[str] = Field(
        default_factory=list,
        description="expectation types or ids whose failure denies the partition (each must be in the suite)",
    )


class DatasetEvidenceConfig(_Strict):
    """The evidence configuration of one dataset (``<dataset_config_path>/<dataset>.json``)."""

    config_version: Literal["1"]
    data_files: str = Field(
        default="*",
        min_length=1,
        description="glob every data file of a partition must match; a file that does not is denied as unmeasured "
        "(a reader of the partition reads every file not starting with '_' or '.')",
    )
    batch_rows: int = Field(default=1 << 20, ge=1, description="rows per record batch read")
    columns: ColumnsConfig
    revocations: RevocationsConfig | None = None
    expectations: ExpectationsConfig | None = None


@dataclass(frozen=True)
class RevocationSource:
    """Where a revocation list is read from, resolved; ``describe`` never shows credentials."""

    column: str
    path: str | None = None
    format: str | None = None
    url: str | None = None
    conn_id: str | None = None
    table: str | None = None

    def describe(self) -> str:
        if self.path:
            return self.path
        if self.conn_id:
            return f"table {self.table!r} of connection {self.conn_id!r}"
        return f"table {self.table!r} of {self.url}"


@dataclass(frozen=True)
class DatasetEvidenceSettings:
    """One dataset's configuration with its paths resolved."""

    dataset: str
    source: Path
    config: DatasetEvidenceConfig
    revocations: RevocationSource | None
    suite_path: Path | None

    def wants_file(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.config.data_files)


def config_dir(path: str | os.PathLike) -> Path:
    """The configuration directory, checked: it must exist (a typo must not turn evidence off)."""
    directory = Path(os.path.expanduser(os.fspath(path)))
    if not directory.is_dir():
        raise ConsentConfigurationError(
            f"{SETTING} {os.fspath(path)!r} is not a directory (operator argument dataset_config_path or "
            f"[consent] {SETTING})"
        )
    return directory.resolve()


def load_dataset_settings(directory: Path, dataset: str) -> DatasetEvidenceSettings | None:
    """The resolved configuration of ``dataset`` in ``directory``; None when it has none."""
    source = directory / f"{dataset}{CONFIG_SUFFIX}"
    if not source.is_file():
        return None
    try:
        text = source.read_text(encoding="utf-8")
        config = DatasetEvidenceConfig.model_validate_json(text, strict=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsentConfigurationError(f"{source}: cannot read the evidence configuration: {exc}") from exc
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(document)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ConsentConfigurationError(f"{source}: invalid evidence configuration: {details}") from exc
    suite_path = None
    if config.expectations is not None:
        suite = config.expectations.suite or f"{dataset}{SUITE_SUFFIX}"
        suite_path = _resolve_local(source, suite, "expectations.suite")
        if not suite_path.is_file():
            raise ConsentConfigurationError(f"{source}: expectations.suite: no such file {str(suite_path)!r}")
    return DatasetEvidenceSettings(
        dataset=dataset,
        source=source,
        config=config,
        revocations=_revocation_source(source, config.revocations),
        suite_path=suite_path,
    )


def _revocation_source(source: Path, config: RevocationsConfig | None) -> RevocationSource | None:
    if config is None:
        return None
    if config.path:
        path = config.path if "://" in config.path else str(_resolve_local(source, config.path, "revocations.path"))
        return RevocationSource(column=config.column, path=path, format=REVOCATION_FORMATS[_suffix(config.path)])
    if config.url:
        return RevocationSource(
            column=config.column, url=_expand(source, config.url, "revocations.url"), table=config.table
        )
    return RevocationSource(column=config.column, conn_id=config.conn_id, table=config.table)


def _resolve_local(source: Path, value: str, field: str) -> Path:
    path = Path(_expand(source, value, field))
    return path if path.is_absolute() else (source.parent / path).resolve()


def _expand(source: Path, value: str, field: str) -> str:
    """``~`` and ``$VAR`` expanded; a variable left unset is an error, not a literal path."""
    expanded = os.path.expandvars(os.path.expanduser(value))
    if "$" in expanded:
        raise ConsentConfigurationError(f"{source}: {field}: {value!r} names an unset environment variable")
    return expanded


def _suffix(path: str) -> str:
    return os.path.splitext(path.rstrip("/"))[1].lower()


def load_json(path: Path) -> object:
    """JSON from a configuration file, with errors naming the file and position."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsentConfigurationError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConsentConfigurationError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
