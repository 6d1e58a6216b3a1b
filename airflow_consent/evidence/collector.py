"""Measure the evidence of every partition of a gate evaluation.

One ``EvidenceCollector`` per gate evaluation: it reads each revocation list once and reuses it
across partitions and datasets, runs the Arrow pass over a dataset's partitions (one run of
partitions per thread: Parquet decoding and Arrow compute release the GIL), then runs the dataset's
Great Expectations suite (if any) partition by partition, on the partitions whose Arrow evidence
could be measured (the others are denied already, and their files may not even be readable).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_consent.discovery import DiscoveredPartition
from airflow_consent.evidence.arrow import Measurement, flag_combinations, measure_partitions
from airflow_consent.evidence.config import (
    DatasetEvidenceSettings,
    RevocationSource,
    config_dir,
    load_dataset_settings,
)
from airflow_consent.evidence.revocations import (
    RevocationList,
    RevocationListUnreadable,
    RevocationMatcher,
    load_revocation_list,
)
from airflow_consent.models import (
    ConsentFlagRows,
    ContentEvidence,
    Evidence,
    EvidenceProblem,
    RevokedSubjects,
)

if TYPE_CHECKING:
    from airflow_consent.evidence.expectations import SuiteRunner
    from airflow_consent.gate import Log

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1000
Measured = tuple[Evidence, list[EvidenceProblem]]


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class EvidenceCollector:
    """Measures partitions' evidence; caches revocation lists, their matchers and GX suites for one evaluation."""

    def __init__(self, *, threads: int | None = None, logger: Log = log):
        self.threads = threads or default_threads()
        self.log = logger
        self._lists: dict[RevocationSource, RevocationList | RevocationListUnreadable] = {}
        self._matchers: dict[tuple[RevocationSource, str], RevocationMatcher | RevocationListUnreadable] = {}
        self._suites: dict[Path, SuiteRunner] = {}
        self._lock = threading.Lock()

    def settings(self, dataset_config_path: str | os.PathLike | None, dataset: str) -> DatasetEvidenceSettings | None:
        """The evidence configuration of ``dataset``, or None when it has none."""
        if not dataset_config_path:
            return None
        directory = config_dir(dataset_config_path)
        found = load_dataset_settings(directory, dataset)
        if found is None:
            self.log.info(
                "Dataset %r has no evidence configuration in %s: judged on its manifests alone", dataset, directory
            )
        return found

    def measure(
        self, partitions: Sequence[DiscoveredPartition], dataset_config_path: str | os.PathLike | None
    ) -> list[Measured]:
        """Evidence and problems for each of ``partitions`` (all of one dataset), in order."""
        if not partitions:
            return []
        settings = self.settings(dataset_config_path, partitions[0].dataset)
        if settings is None:
            return [(Evidence(), []) for _ in partitions]
        runner = self._suite(settings)  # a bad suite stops the gate before any data is read
        started = time.perf_counter()

        def matcher_for(kind: str) -> RevocationMatcher | None:
            return self._matcher(settings.revocations, kind) if settings.revocations else None

        threads = min(self.threads, len(partitions))
        if threads > 1:
            runs = [partitions[i::threads] for i in range(threads)]
            with ThreadPoolExecutor(threads, thread_name_prefix="consent-evidence") as pool:
                measured_runs = list(pool.map(lambda run: measure_partitions(run, settings, matcher_for), runs))
            measurements: list[Measurement] = [Measurement()] * len(partitions)
            for offset, run in enumerate(measured_runs):
                measurements[offset::threads] = run
        else:
            measurements = measure_partitions(partitions, settings, matcher_for)
        rows = sum(m.rows for m in measurements)
        elapsed = time.perf_counter() - started
        self.log.info(
            "%s: measured %d row(s) of %d partition(s) in %.2f s (%.0f rows/s)",
            settings.dataset,
            rows,
            len(partitions),
            elapsed,
            rows / elapsed if elapsed else 0.0,
        )

        results = []
        for done, (partition, measurement) in enumerate(zip(partitions, measurements, strict=True), start=1):
            evidence = Evidence(config_source=str(settings.source))
            problems = list(measurement.problems)
            if not problems:
                evidence.content = self._content(settings, measurement)
                if runner is not None:
                    evidence.expectations, suite_problems = runner.validate(partition)
                    problems += suite_problems
                    if done % PROGRESS_EVERY == 0 or done == len(partitions):
                        self.log.info(
                            "%s: ran suite %r on %d/%d partition(s)",
                            settings.dataset,
                            runner.name,
                            done,
                            len(partitions),
                        )
            if problems:
                evidence.content = evidence.expectations = None
            results.append((evidence, problems))
        return results

    def _content(self, settings: DatasetEvidenceSettings, measurement: Measurement) -> ContentEvidence:
        purposes = list(settings.config.columns.consent)
        revoked = None
        if measurement.revoked is not None:
            found = measurement.revoked
            revoked = RevokedSubjects.model_construct(
                source=settings.revocations.describe(),
                listed=self._lists[settings.revocations].listed,
                rows=found.rows,
                subjects=found.subjects,
                examples=found.examples,
            )
        # Built from our own measurements: model_construct skips re-validating them (10k partitions: 0.3 s).
        return ContentEvidence.model_construct(
            rows=measurement.rows,
            distinct_subjects=measurement.distinct_subjects,
            consent_flags=None
            if measurement.flag_rows is None
            else [
                ConsentFlagRows.model_construct(**entry) for entry in flag_combinations(measurement.flag_rows, purposes)
            ],
            revoked=revoked,
            collected_after_withdrawal=measurement.collected_after_withdrawal,
            collected_after_expiry=measurement.collected_after_expiry,
        )

    def revocation_list(self, source: RevocationSource) -> RevocationList:
        """Read once per evaluation; a failure is remembered and raised for every partition that needs the list."""
        if source not in self._lists:
            started = time.perf_counter()
            try:
                self._lists[source] = load_revocation_list(source)
                self.log.info(
                    "Read revocation list %s: %d subject(s) in %.2f s",
                    source.describe(),
                    self._lists[source].listed,
                    time.perf_counter() - started,
                )
            except RevocationListUnreadable as exc:
                self.log.error("%s", exc)
                self._lists[source] = exc
        found = self._lists[source]
        if isinstance(found, RevocationListUnreadable):
            raise found
        return found

    def _matcher(self, source: RevocationSource, kind: str) -> RevocationMatcher:
        with self._lock:
            key = (source, kind)
            if key not in self._matchers:
                try:
                    self._matchers[key] = RevocationMatcher(self.revocation_list(source), kind)
                except RevocationListUnreadable as exc:
                    self._matchers[key] = exc
            found = self._matchers[key]
        if isinstance(found, RevocationListUnreadable):
            raise found
        return found

    def _suite(self, settings: DatasetEvidenceSettings) -> SuiteRunner | None:
        if settings.suite_path is None:
            return None
        from airflow_consent.evidence.expectations import SuiteRunner  # imports great_expectations (seconds)

        if settings.source not in self._suites:
            started = time.perf_counter()
            self._suites[settings.source] = SuiteRunner(settings)
            self.log.info("Loaded expectation suite %s in %.2f s", settings.suite_path, time.perf_counter() - started)
        return self._suites[settings.source]
