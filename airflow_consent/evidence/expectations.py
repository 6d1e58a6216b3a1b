"""Great Expectations suites run on every partition of a dataset.

The suite is a file in GX's own JSON format (``ExpectationSuite.to_json_dict()``: ``name``,
``expectations`` of ``{"type", "kwargs", "meta", "id"}``) beside the dataset's configuration.
Great Expectations is imported only here, when a suite is loaded: a DAG file never pays for it.

One ephemeral GX context per suite and gate evaluation; each partition is read (only the
columns the suite refers to) into a pandas DataFrame and validated. An expectation that could not
run (a missing column, say) is a problem; one that ran and failed is reported with its numeric
statistics and whether the dataset marks it consent-critical.
"""

from __future__ import annotations

import logging
import math
import numbers as numbers_module
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.evidence.config import DatasetEvidenceSettings, load_json
from airflow_consent.models import EvidenceProblem, ExpectationResults, FailedExpectation

log = logging.getLogger(__name__)

_COLUMN_KWARGS = ("column", "column_A", "column_B")
_COLUMN_LIST_KWARGS = ("column_list", "column_set")
_NEEDS_ALL_COLUMNS = ("expect_table_column", "expect_column_to_exist")


def _import_gx(source: Path | None = None):
    """Import great_expectations with its import-time INFO chatter silenced."""
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        import great_expectations as gx
    except ImportError as exc:
        raise ConsentConfigurationError(
            f"{source or 'an evidence configuration'}: expectations need Great Expectations: "
            f"pip install 'airflow-consent[evidence]' ({exc})"
        ) from exc
    return gx


class SuiteRunner:
    """Runs one dataset's suite on its partitions."""

    def __init__(self, settings: DatasetEvidenceSettings):
        assert settings.suite_path is not None and settings.config.expectations is not None
        self.settings = settings
        self.path: Path = settings.suite_path
        self.critical = set(settings.config.expectations.critical)
        gx = _import_gx(settings.source)
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        document = load_json(self.path)
        self.suite_definition = _check_suite(self.path, document, self.critical)
        context = gx.get_context(
            mode="ephemeral",
            project_config=DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            ),
        )
        self.suite = context.suites.add(gx.ExpectationSuite(**self.suite_definition))
        self.name = self.suite.name
        # Adding a suite to a context gives its expectations new ids: map them back to the file's.
        self._file_ids = {
            added.id: entry.get("id")
            for added, entry in zip(self.suite.expectations, self.suite_definition["expectations"], strict=True)
        }
        self._batches = (
            context.data_sources.add_pandas("airflow_consent")
            .add_dataframe_asset("partition")
            .add_batch_definition_whole_dataframe("whole_partition")
        )
        self.columns = _columns(self.suite_definition["expectations"], settings.config.columns.subject_id)

    def validate(self, partition: DiscoveredPartition) -> tuple[ExpectationResults | None, list[EvidenceProblem]]:
        """The suite's outcome on ``partition``, or the problems that kept it from running."""
        frame, problems = self._read(partition)
        if problems:
            return None, problems
        batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(self.suite, result_format="SUMMARY")
        failed: list[FailedExpectation] = []
        for result in outcome.results:
            config = result.expectation_config
            label = _label(config.type, config.kwargs)
            raised = _raised(result.exception_info)
            if raised is not None:
                problems.append(
                    EvidenceProblem(
                        file=partition.uri,
                        field=label,
                        message=f"expectation of suite {self.path} could not run: {raised}",
                    )
                )
            elif not result.success:
                file_id = self._file_ids.get(config.id)
                failed.append(
                    FailedExpectation(
                        type=config.type,
                        id=file_id,
                        column=config.kwargs.get("column"),
                        critical=config.type in self.critical or (file_id is not None and file_id in self.critical),
                        statistics=_statistics(result.result),
                    )
                )
        if problems:
            return None, problems
        statistics = outcome.statistics
        return ExpectationResults(
            suite=self.name,
            source=str(self.path),
            success=bool(outcome.success),
            evaluated=int(statistics["evaluated_expectations"]),
            successful=int(statistics["successful_expectations"]),
            failed=sorted(failed, key=lambda f: (f.type, f.column or "", f.id or "")),
        ), []

    def _read(self, partition: DiscoveredPartition) -> tuple[Any, list[EvidenceProblem]]:
        tables, problems = [], []
        files = [f for f in partition.files if self.settings.wants_file(f.name)]
        for data_file in files:
            uri = partition.uri_of(data_file.name)
            try:
                with partition.filesystem.open_input_file(data_file.path) as handle:
                    parquet = pq.ParquetFile(handle)
                    names = parquet.schema_arrow.names
                    wanted = names if self.columns is None else [c for c in self.columns if c in names]
                    absent = [] if self.columns is None else [c for c in self.columns if c not in names]
                    tables.append((uri, absent, parquet.read(columns=wanted, use_threads=False)))
            except (OSError, pa.ArrowException) as exc:
                problems.append(EvidenceProblem(file=uri, message=f"cannot read the data for suite {self.path}: {exc}"))
        if problems or not tables:
            return None, problems or [EvidenceProblem(file=partition.uri, message="no data file to validate")]
        missing_everywhere = set.intersection(*(set(absent) for _, absent, _ in tables))
        for uri, absent, _ in tables:
            for column in absent:
                if column not in missing_everywhere:  # missing everywhere: GX itself reports it below
                    problems.append(
                        EvidenceProblem(
                            file=uri,
                            field=column,
                            message=(
                                f"column {column!r}, used by suite {self.path}, is missing from this file but not "
                                "from others"
                            ),
                        )
                    )
        if problems:
            return None, problems
        table = pa.concat_tables([t for _, _, t in tables], promote_options="default")
        return table.to_pandas(), []


def _check_suite(path: Path, document: object, critical: set[str]) -> dict:
    """The suite document, each expectation built once by GX to catch unknown types and bad kwargs."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
        raise ConsentConfigurationError(
            f"{path}: not an expectation suite: expected an object with 'name' and a list 'expectations'"
        )
    if not isinstance(document.get("name"), str) or not document["name"]:
        raise ConsentConfigurationError(f"{path}: name: the suite needs a non-empty name")
    known: set[str] = set()
    for index, entry in enumerate(document["expectations"]):
        where = f"{path}: expectations[{index}]"
        try:
            ExpectationConfiguration(**entry).to_domain_obj()
        except Exception as exc:
            kind = entry.get("type") if isinstance(entry, dict) else None
            raise ConsentConfigurationError(f"{where} ({kind}): invalid expectation: {_one_line(exc)}") from exc
        known.update(filter(None, (entry.get("type"), entry.get("id"))))
    unknown = sorted(critical - known)
    if unknown:
        raise ConsentConfigurationError(
            f"{path}: expectations.critical names {unknown}, which match no expectation type or id in the suite"
        )
    return {key: document[key] for key in ("name", "expectations", "meta", "id", "notes") if key in document}


def _columns(expectations: list[dict], fallback: str) -> list[str] | None:
    """The columns the suite reads (``fallback`` if none); None when it needs them all (table-shape expectations)."""
    columns: list[str] = []
    for entry in expectations:
        if entry["type"].startswith(_NEEDS_ALL_COLUMNS):
            return None
        kwargs = entry.get("kwargs", {})
        columns += [kwargs[k] for k in _COLUMN_KWARGS if isinstance(kwargs.get(k), str)]
        for key in _COLUMN_LIST_KWARGS:
            columns += [c for c in kwargs.get(key) or [] if isinstance(c, str)]
    return list(dict.fromkeys(columns)) or [fallback]


def _raised(exception_info: dict) -> str | None:
    """GX's exception info is either one record or a record per metric; the first message, if any raised."""
    records = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for record in records:
        if isinstance(record, dict) and record.get("raised_exception"):
            return str(record.get("exception_message") or "an exception was raised")
    return None


def _statistics(result: dict) -> dict[str, int | float]:
    """The finite numbers of a GX result (numpy scalars included); lists of raw values are left out."""
    numbers: dict[str, int | float] = {}
    for key, value in sorted(result.items()):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers_module.Real, np.number)):
            continue
        if isinstance(value, (numbers_module.Integral, np.integer)):
            numbers[key] = int(value)
        elif math.isfinite(float(value)):
            numbers[key] = float(value)
    return numbers


def _label(kind: str, kwargs: dict) -> str:
    column = kwargs.get("column")
    return f"{kind}(column={column!r})" if column else kind


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]
