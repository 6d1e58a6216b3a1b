"""Benchmark fingerprints: every byte hashed, then proved by the fingerprint cache, for gate and clearance.

    .venv/bin/python benchmarks/fingerprints.py                      # 10,000 partitions of 256 KiB, ~2 minutes
    .venv/bin/python benchmarks/fingerprints.py --partitions 1000    # quick

It writes ``--partitions`` partitions of ``--files`` files of ``--file-size`` random bytes each in a
temporary directory (``--workdir`` to choose and keep it), waits until the files are older than the
cache's settling time, and runs each phase in a fresh Python process with its own ``$AIRFLOW_HOME``
in the work directory, so what a phase reuses comes from the cache file and nothing else:

- ``bytes``: the floor of "hash every byte": ``hashlib.sha256`` over each file, one thread, no discovery;
- ``uncached``: discovery, then ``fingerprint(partition)`` per partition (as gate.py and clearance.py
  call it) with ``[consent] fingerprint_cache = off``: what every run cost before the cache;
- ``uncached_batched``: the same through ``fingerprints(partitions)``: every file of the run on the
  hashing threads;
- ``first``: the cache file deleted, then discovery and ``fingerprint`` per partition: a first gate;
- ``second``: the same again, the cache warm: the next gate over unchanged data;
- ``first_batched``, ``second_batched``: the same two through ``fingerprints(partitions)`` (one cache
  query per 500 files, one write per run), as gate.py and clearance.py would call it per chunk;
- ``clearance``: the real ``check_clearance`` of a training task behind a gate on the dataset, against
  a real ledger that allowed every partition in the run (written before the clock starts): discovery,
  fingerprints from the warm cache, the ledger's verified read and the comparison;
- ``clearance_uncached``: the same with the cache off.

Files are read from the page cache (the data was just written and fits in memory): these are CPU
numbers; on a cold disk or an object store the bytes cost more and the cache saves more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PHASES = (
    "bytes",
    "uncached",
    "uncached_batched",
    "first",
    "second",
    "first_batched",
    "second_batched",
    "clearance",
    "clearance_uncached",
)
PURPOSE = "face_recognition_training"
RUN = "manual__benchmark"
TARGETS = {"second_over_first": 0.20, "clearance_seconds": 2.0}


def generate(root: Path, partitions: int, files: int, file_size: int) -> dict:
    """``root/data/shard=NNNNN/part-K.bin`` of random bytes; returns how long it took."""
    started = time.perf_counter()
    for index in range(partitions):
        directory = root / "data" / f"shard={index:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        for number in range(files):
            (directory / f"part-{number}.bin").write_bytes(os.urandom(file_size))
    return {"seconds": round(time.perf_counter() - started, 2)}


# --- phases (each in its own process) -----------------------------------------------------------


def phase(name: str, root: Path) -> dict:
    data = str(root / "data")
    if name == "bytes":
        return hash_every_byte(root / "data")
    if name.startswith(("uncached", "clearance_uncached")):
        os.environ["AIRFLOW__CONSENT__FINGERPRINT_CACHE"] = "off"
    if name.startswith("first"):
        for leftover in (root / "home").glob("consent_fingerprints.db*"):
            leftover.unlink()
    if name.startswith("clearance"):
        return clearance(data, root)
    imports = warm_up()
    from airflow_consent import fingerprint_cache
    from airflow_consent.discovery import discover_partitions, fingerprint, fingerprints

    reads = counting_reads(fingerprint_cache)
    started = time.perf_counter()
    partitions = discover_partitions(data)
    listed = time.perf_counter()
    values = fingerprints(partitions) if name.endswith("batched") else [fingerprint(p) for p in partitions]
    done = time.perf_counter()
    return {
        "partitions": len(values),
        "seconds": round(done - started, 3),
        "discovery_seconds": round(listed - started, 3),
        "fingerprint_seconds": round(done - listed, 3),
        "files_read": reads.call_count,
        "digest_of_all": digest_of(values),
        "import_seconds": imports,
    }


def warm_up() -> float:
    """Import what every gate and clearance process has imported before it fingerprints: not timed."""
    started = time.perf_counter()
    import airflow.configuration  # noqa: F401
    import pyarrow.fs  # noqa: F401

    from airflow_consent.config import settings

    settings()
    return round(time.perf_counter() - started, 3)


def hash_every_byte(data: Path) -> dict:
    import hashlib

    paths = sorted(str(path) for path in data.rglob("*.bin"))
    started = time.perf_counter()
    total = 0
    for path in paths:
        with open(path, "rb") as stream:
            content = stream.read()
        hashlib.sha256(content).hexdigest()
        total += len(content)
    seconds = time.perf_counter() - started
    return {"files": len(paths), "seconds": round(seconds, 3), "mb_per_second": round(total / seconds / 1e6)}


def clearance(data: str, root: Path) -> dict:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent import fingerprint_cache
    from airflow_consent.clearance import check_clearance
    from airflow_consent.ledger import Ledger
    from airflow_consent.operators.consent import ConsentGateOperator

    with DAG(dag_id="train_benchmark", schedule=None, tags=["training"]) as dag:
        ConsentGateOperator(task_id="consent_gate", datasets=[data], purpose=PURPOSE) >> EmptyOperator(task_id="train")
    task = dag.task_dict["train"]
    imports = warm_up()
    with Ledger(f"sqlite:///{root / 'ledger.db'}") as ledger:
        reads = counting_reads(fingerprint_cache)
        started = time.perf_counter()
        cleared = check_clearance(task, {"run_id": RUN, "task": task}, ledger=ledger)
        done = time.perf_counter()
    return {
        "partitions": len(cleared),
        "seconds": round(done - started, 3),
        "files_read": reads.call_count,
        "digest_of_all": digest_of([p.fingerprint for p in cleared]),
        "import_seconds": imports,
    }


def record_allows(data: str, root: Path) -> None:
    """The ledger of a gate that allowed every partition in run RUN, with today's fingerprints."""
    from datetime import UTC, datetime

    from airflow_consent.discovery import discover_partitions, fingerprints
    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.ledger import Ledger
    from airflow_consent.models import DecidedPartition, GateReport, GateRequest

    partitions = discover_partitions(data)
    now = datetime.now(UTC)
    request = GateRequest(
        purpose=PURPOSE, dag_id="train_benchmark", run_id=RUN, task_id="consent_gate", evaluated_at=now
    )
    decided = [
        DecidedPartition(id=p.id, uri=p.uri, fingerprint=value, allow=True, violations=[])
        for p, value in zip(partitions, fingerprints(partitions), strict=True)
    ]
    report = GateReport(
        decision_id="benchmark",
        allow=True,
        purpose=PURPOSE,
        entrypoint="consent/main/decision",
        engine=LocalOpaEngine().name,
        opa_version="benchmark",
        policy_revision="sha256:0",
        evaluated_at=now,
        duration_ms=0.0,
        partitions=decided,
    )
    with Ledger(f"sqlite:///{root / 'ledger.db'}") as ledger:
        ledger.record(report, request, mode="deny", input_digest="sha256:" + "0" * 64)


def counting_reads(module):
    """A spy on ``module.hash_content`` (which still hashes): its ``call_count`` is the files read."""
    from unittest import mock

    return mock.patch.object(module, "hash_content", wraps=module.hash_content).start()


def digest_of(values: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(values).encode()).hexdigest()[:16]


# --- driver ----------------------------------------------------------------------------------------


def run_phase(root: Path, name: str) -> dict:
    environment = {**os.environ, "AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    environment.pop("AIRFLOW__CONSENT__FINGERPRINT_CACHE", None)
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--workdir", str(root)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def report(results: dict) -> str:
    lines = [
        (
            f"{results['partitions']:,} partitions x {results['files']} file(s) x {results['file_size']:,} bytes; "
            f"load average before: {' '.join(f'{load:.2f}' for load in results['load'])}"
        ),
        (
            f"  hash every byte, bare loop, 1 thread : {results['bytes']['seconds']:7.3f} s "
            f"({results['bytes']['mb_per_second']} MB/s)"
        ),
    ]
    for name in ("uncached", "uncached_batched", "first", "second", "first_batched", "second_batched"):
        row = results[name]
        lines.append(
            f"  {name:<37}: {row['seconds']:7.3f} s (discovery {row['discovery_seconds']:.3f} s, "
            f"fingerprints {row['fingerprint_seconds']:.3f} s, {row['files_read']:,} files read)"
        )
    for name in ("clearance", "clearance_uncached"):
        row = results[name]
        lines.append(f"  {name:<37}: {row['seconds']:7.3f} s ({row['files_read']:,} files read)")
    for calls in ("", "_batched"):
        first, second = results[f"first{calls}"], results[f"second{calls}"]
        lines.append(
            f"  second / first{calls or ' (per partition)':<23}: {second['seconds'] / first['seconds']:.1%} with discovery, "
            f"{second['fingerprint_seconds'] / first['fingerprint_seconds']:.1%} fingerprints alone "
            f"(target <= {TARGETS['second_over_first']:.0%})"
        )
    lines.append(
        f"  clearance, warm cache                 : {results['clearance']['seconds']:.3f} s "
        f"(target <= {TARGETS['clearance_seconds']:g} s)"
    )
    digests = {results[name]["digest_of_all"] for name in PHASES if name != "bytes"}
    lines.append(
        "  every phase computed the same fingerprints"
        if len(digests) == 1
        else f"  FINGERPRINTS DIFFER between phases: {digests}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1, help="data files per partition")
    parser.add_argument("--file-size", type=int, default=256 << 10, help="bytes per data file")
    parser.add_argument("--workdir", type=Path, help="keep the data here (reused when the sizes match)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--phase", choices=(*PHASES, "record"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        if args.phase == "record":
            record_allows(str(args.workdir / "data"), args.workdir)
            print("{}")
        else:
            print(json.dumps(phase(args.phase, args.workdir)))
        return 0

    root = args.workdir or Path(tempfile.mkdtemp(prefix="fingerprints-bench-"))
    sizes = {"partitions": args.partitions, "files": args.files, "file_size": args.file_size}
    marker = root / "sizes.json"
    if not marker.exists() or json.loads(marker.read_text()) != sizes:
        shutil.rmtree(root / "data", ignore_errors=True)
        shutil.rmtree(root / "home", ignore_errors=True)
        (root / "ledger.db").unlink(missing_ok=True)
        print(f"generating in {root}: {generate(root, **sizes)['seconds']} s", flush=True)
        marker.write_text(json.dumps(sizes))
    (root / "home").mkdir(exist_ok=True)
    from airflow_consent.fingerprint_cache import SETTLE_NS

    time.sleep(SETTLE_NS / 1e9 + 0.1)  # files changed within the settling time are never cached
    results: dict = {**sizes, "load": os.getloadavg()}
    if not (root / "ledger.db").exists():
        run_phase(root, "record")
    for name in PHASES:
        results[name] = run_phase(root, name)
        print(f"{name}: {results[name]}", flush=True)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
