"""Read what the consent gates approved for this run, and nothing else.

A training task that opens the dataset directory itself reads every partition on disk: the ones a
gate in ``on_violation="exclude"`` mode left out, and the ones added after the gate ran. Training
code should read through ``approved_dataset`` instead::

    @task
    def train(**context):
        from airflow_consent.reader import approved_dataset

        table = approved_dataset(context).to_table(columns=["image", "subject_id"])

It runs the run-time clearance again (``airflow_consent.clearance``) at the moment of reading:
the partitions are discovered and fingerprinted again and compared with the ledger's records of
the gates upstream of the task in this run (or, in a DAG scheduled on a gate's approved asset,
with the triggering event's decision). Anything the clearance refuses — a partition changed since
its check, one the gate never decided, a tampered ledger — raises ``ClearanceDenied`` (the task
fails without retries). The dataset returned lists exactly the data files of the cleared
partitions, as fingerprinted: partitions denied by an exclude-mode gate are not in it, nor is any
file added afterwards. Data files are read lazily, when the dataset is scanned.

``approved_dataset`` checks, then reads lazily: a file rewritten between the two is read unchecked.
``approved_table`` closes that window for data that fits in memory: it fingerprints the very bytes
it parses.

Cheap to import: pyarrow and the clearance code are imported when a reader runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_consent.errors import ConsentConfigurationError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

    from airflow_consent.clearance import RequiredPartition

log = logging.getLogger(__name__)


def approved_dataset(
    context: Mapping[str, Any], *, dataset: Any = None, format: str = "parquet", ledger: Any = None
) -> pads.Dataset:
    """A ``pyarrow.dataset.Dataset`` over exactly the partitions the running task is cleared for.

    :param context: the task's Airflow context (``**context`` of a ``@task`` callable, or
        ``get_current_context()``): its ``task``, ``run_id`` and, for a DAG scheduled on an approved
        asset, ``triggering_asset_events``.
    :param dataset: which dataset, when the task's gates check more than one: a dataset name (the
        first segment of its partition ids), a dataset root URI, or the ``Asset`` given to the gate.
    :param format: the data files' format, as ``pyarrow.dataset`` names it.
    :param ledger: the decision ledger to check against; default ``[consent] ledger_url``.
    :raises ClearanceDenied: the clearance refuses the task (see ``airflow_consent.clearance``).
    :raises ConsentConfigurationError: ``dataset`` names none of the cleared datasets, or is needed
        and not given.

    Partition keys are columns (hive partitioning, types inferred from the approved partitions).
    """
    import pyarrow.dataset as pads

    from airflow_consent.clearance import enforce_clearance

    task = context["task"]
    cleared = enforce_clearance(task, context, ledger=ledger)
    selected = _one_dataset(cleared, dataset, task.task_id)
    first = selected[0].partition
    base_dir = _dataset_dir(first)
    files = [data_file.path for p in selected for data_file in p.partition.files]
    log.info(
        "Reading %d approved partition(s) of %s (%d data file(s)): %s",
        len(selected),
        first.root,
        len(files),
        ", ".join(p.id for p in selected),
    )
    return pads.dataset(
        files, filesystem=first.filesystem, format=format, partitioning="hive", partition_base_dir=base_dir
    )


def approved_table(
    context: Mapping[str, Any], *, dataset: Any = None, columns: list[str] | None = None, ledger: Any = None
) -> pa.Table:
    """The rows of exactly the partitions the running task is cleared for, verified as they are read.

    Like ``approved_dataset``, but each partition's Parquet files are read whole into memory, the
    partition's fingerprint is computed from those very bytes, and the rows are parsed from them only
    when it is the one the ledger allowed: a file swapped after the clearance (while training runs)
    raises ``ClearanceDenied`` instead of being trained on. Partition keys are string columns. Holds
    one partition's bytes at a time besides the result; for data larger than memory, use
    ``approved_dataset`` and accept the window between its check and the scan.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_consent.clearance import ClearanceDenied, ClearanceProblem, ClearanceRefused, enforce_clearance
    from airflow_consent.discovery import fingerprint_of_contents

    task = context["task"]
    tables = []
    for required in _one_dataset(enforce_clearance(task, context, ledger=ledger), dataset, task.task_id):
        partition = required.partition
        contents = {}
        for data_file in partition.files:
            with partition.filesystem.open_input_stream(data_file.path) as stream:
                contents[data_file.name] = stream.read()
        now = fingerprint_of_contents(partition, contents)
        if now != required.fingerprint:
            problem = ClearanceProblem(
                kind="changed",
                partition_id=required.id,
                gate=required.gate,
                allowed_fingerprint=required.fingerprint,
                current_fingerprint=now,
                message=f"{required.id}: changed while being read for training: allowed with fingerprint "
                f"{required.fingerprint}, read {now}",
            )
            raise ClearanceDenied(ClearanceRefused(f"Consent clearance refused: {problem.message}", [problem]))
        for data in contents.values():
            table = pq.read_table(pa.BufferReader(data), columns=columns)
            for key, value in partition.keys.items():
                table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
            tables.append(table)
    return pa.concat_tables(tables, promote_options="default")


def _one_dataset(cleared: list[RequiredPartition], wanted: Any, task_id: str) -> list[RequiredPartition]:
    """The cleared partitions of one dataset: the only one, or the one ``wanted`` names."""
    by_dataset: dict[tuple[str, str], list[RequiredPartition]] = {}
    for required in cleared:
        if required.partition is None:  # clearance always attaches it; never read what was not discovered
            raise ConsentConfigurationError(f"{required.id}: cleared without its files; cannot read it")
        by_dataset.setdefault((required.partition.root, required.partition.dataset), []).append(required)
    if wanted is None:
        if len(by_dataset) == 1:
            return next(iter(by_dataset.values()))
        raise ConsentConfigurationError(
            f"{task_id!r} is cleared for partitions of {len(by_dataset)} datasets ({_names(by_dataset)}): "
            "pass dataset= to choose one"
        )
    names = {getattr(wanted, "name", None), getattr(wanted, "uri", None)} - {None} or {str(wanted)}
    matches = [group for (root, name), group in by_dataset.items() if names & {root, name, root.rstrip("/")}]
    if len(matches) != 1:
        found = "none" if not matches else f"{len(matches)}"
        raise ConsentConfigurationError(
            f"dataset={wanted!r} matches {found} of the datasets {task_id!r} is cleared for ({_names(by_dataset)})"
        )
    return matches[0]


def _names(by_dataset: Mapping[tuple[str, str], Any]) -> str:
    return ", ".join(f"{name} at {root}" for root, name in sorted(by_dataset))


def _dataset_dir(partition: Any) -> str:
    """The dataset's root directory on the partition's filesystem: the partition's path without its
    ``key=value`` directories (hive partitioning reads the keys from the rest of each file path)."""
    return partition.path.rstrip("/").rsplit("/", len(partition.keys))[0]
