"""Benchmark the Arrow row check against a bare ``pyarrow.compute.is_in`` scan of the same files.

    .venv/bin/python benchmarks/row_check.py                             # 10 M rows, 1 k and 1 M revoked ids
    .venv/bin/python benchmarks/row_check.py --rows 100000000 --workdir /tmp/row-check-100m   # ~0.9 GB of data

It writes ``--rows`` rows in partitions of ``--partition-rows`` (the data of ``evidence.py``: subject
id int64 scrambled over the int64 range, ``--rows-per-subject`` rows per subject, three consent
flags), and for each size in ``--ids`` a revocation list: ``--hit-fraction`` of the subjects (at
most the list's size) plus ids that are in no partition. Then, in this process, for each list and
each thread count in ``--threads``, best of ``--repeat``:

- ``project``: ``EvidenceCollector.measure`` over all partitions (rows, distinct subjects, consent
  flag combinations, revoked rows and subjects, examples): what a gate runs. The list is read
  before the clock starts; matching it is timed.
- ``bare``: for each data file, its subject column read with ``ParquetFile.read`` and
  ``pc.sum(pc.is_in(column, value_set=ids))``, the files spread over the same threads: the least a
  row check can do. One ``is_in`` call per file, so each call hashes the list again (about 0.1-0.2 s
  for a million ids);
- ``bare, same columns``: the same, reading every column the project reads (subject and consent
  flags), which the consent-coverage rule needs.

and prints project / bare and project / bare-same-columns. All must count the same revoked rows.
Files are read once before the first round, so every pass reads from the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from evidence import FLAGS, generate_events, scramble, warm_up, write_config  # noqa: E402 - the same data

TARGET_RATIO = 1.5


def generate(
    root: Path,
    rows: int,
    partition_rows: int,
    rows_per_subject: int,
    id_sizes: list[int],
    hit_fraction: float,
    seed: int,
) -> dict:
    """The events (``root/events``) and one revocation list per size (``root/ids_<n>/``), reused when present."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = {
        "rows": rows,
        "partition_rows": partition_rows,
        "rows_per_subject": rows_per_subject,
        "ids": id_sizes,
        "hit_fraction": hit_fraction,
        "seed": seed,
    }
    marker = root / "generated.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return wanted
    shutil.rmtree(root / "events", ignore_errors=True)
    partitions = -(-rows // partition_rows)
    generated = generate_events(root, partitions, partition_rows, 0, rows_per_subject, seed)
    pool = generated["subjects"]  # the subjects are scramble(0 .. pool - 1)
    rng = np.random.default_rng(seed + 2)
    for size in id_sizes:
        hits = min(size, int(pool * hit_fraction))
        listed = np.concatenate(
            [rng.choice(pool, size=hits, replace=False), pool + rng.choice(10 * size, size=size - hits, replace=False)]
        )
        conf = root / f"ids_{size}"
        conf.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"subject_id": scramble(listed.astype(np.int64))}), conf / "revoked.parquet")
        write_config(conf, "events")
    marker.write_text(json.dumps(wanted))
    return wanted


def spread(partitions: list, threads: int, measure) -> list:
    """``measure(run)`` over ``threads`` runs of ``partitions``, as the collector spreads them."""
    if threads == 1:
        return [measure(partitions)]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(measure, [partitions[i::threads] for i in range(threads)]))


def bare_scan(partitions: list, ids, threads: int, columns: list[str]) -> int:
    """Revoked rows of ``partitions``: each file's ``columns`` read, the first through ``pc.is_in``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def measure(run: list) -> int:
        revoked = 0
        for partition in run:
            for data_file in partition.files:
                column = pq.ParquetFile(data_file.path).read(columns=columns, use_threads=False).column(0)
                revoked += pc.sum(pc.is_in(column, value_set=ids)).as_py() or 0
        return revoked

    return sum(spread(partitions, threads, measure))


def project_scan(partitions: list, conf: Path, threads: int) -> tuple[float, int, int]:
    """Seconds, revoked rows and rows of ``partitions`` as the gate measures them, the list read apart."""
    from airflow_consent.evidence.collector import EvidenceCollector

    collector = EvidenceCollector(threads=threads)
    collector.revocation_list(collector.settings(conf, "events").revocations)
    started = time.perf_counter()
    measured = collector.measure(partitions, conf)
    seconds = time.perf_counter() - started
    if problems := [p for _, found in measured for p in found]:
        raise SystemExit(f"evidence problems: {problems[:3]}")
    return seconds, sum(e.content.revoked.rows for e, _ in measured), sum(e.content.rows for e, _ in measured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in all (10,000,000)")
    parser.add_argument("--partition-rows", type=int, default=1_000_000, help="rows per partition (1,000,000)")
    parser.add_argument("--rows-per-subject", type=int, default=4, help="average rows per subject (4)")
    parser.add_argument("--ids", default="1000,1000000", help="revocation list sizes (1000,1000000)")
    parser.add_argument(
        "--hit-fraction", type=float, default=0.04, help="share of the subjects on each list, at most its size (0.04)"
    )
    parser.add_argument("--threads", default="1", help="thread counts, both sides alike (1; e.g. 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is printed (3)")
    parser.add_argument("--workdir", type=Path, help="keep the data here; reused if it already holds it")
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args(argv)

    temporary = args.workdir is None
    root = Path(args.workdir or tempfile.mkdtemp(prefix="consent-row-check-bench-")).resolve()
    id_sizes = [int(n) for n in args.ids.split(",")]
    try:
        started = time.perf_counter()
        generate(root, args.rows, args.partition_rows, args.rows_per_subject, id_sizes, args.hit_fraction, args.seed)
        print(f"data in {root}: {time.perf_counter() - started:.1f} s to make or find", flush=True)
        imports = warm_up()

        import pyarrow.parquet as pq

        from airflow_consent.discovery import discover_partitions

        partitions = discover_partitions(str(root / "events"))
        size = sum(f.stat().st_size for f in (root / "events").rglob("*.parquet"))
        for partition in partitions:  # into the page cache
            for data_file in partition.files:
                Path(data_file.path).read_bytes()
        print(
            f"cores: {os.cpu_count()}  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
            f"{len(partitions)} partitions, {size / 1e6:.0f} MB  imports before, not counted: {imports} s  "
            f"best of {args.repeat}",
            flush=True,
        )
        for ids_size in id_sizes:
            conf = root / f"ids_{ids_size}"
            ids = pq.ParquetFile(conf / "revoked.parquet").read().column(0).combine_chunks()
            for threads in [int(n) for n in args.threads.split(",")]:
                project, bare, same_columns = [], [], []
                for _ in range(args.repeat):
                    seconds, revoked, rows = project_scan(partitions, conf, threads)
                    project.append(seconds)
                    for times, columns in ((bare, ["subject_id"]), (same_columns, ["subject_id", *FLAGS.values()])):
                        began = time.perf_counter()
                        bare_revoked = bare_scan(partitions, ids, threads, columns)
                        times.append(time.perf_counter() - began)
                        if bare_revoked != revoked:
                            raise SystemExit(f"bare is_in found {bare_revoked} revoked rows, the project {revoked}")
                best, ratio, ratio_same = min(project), min(project) / min(bare), min(project) / min(same_columns)
                print(
                    f"{rows:,} rows vs {ids_size:,} ids, {threads} thread(s): project {best:.3f} s "
                    f"({rows / best / 1e6:.1f} M rows/s) | bare is_in {min(bare):.3f} s, project/bare {ratio:.2f} "
                    f"[{'met' if ratio <= TARGET_RATIO else 'MISSED'}: <= {TARGET_RATIO}] | bare is_in, same "
                    f"columns {min(same_columns):.3f} s, project/that {ratio_same:.2f} | revoked rows {revoked:,}",
                    flush=True,
                )
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
