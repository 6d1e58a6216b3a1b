"""Benchmark the evidence path: Arrow rows/s, the equivalent Great Expectations expectation, and the whole gate.

    .venv/bin/python benchmarks/evidence.py                      # full size (see README "Performance")
    .venv/bin/python benchmarks/evidence.py --partitions 4 --rows 250000 --revoked 100000 \\
        --gate-partitions 500                                    # a quick run, under a minute

It generates, in a temporary directory (``--workdir`` to choose and keep it):

- ``events``: ``--partitions`` × ``--rows`` rows of (subject_id int64, three boolean consent flags),
  each subject with ``--rows-per-subject`` rows on average inside its partition, and a revocation
  list of ``--revoked`` distinct subjects drawn from all of them (Parquet). Subject ids are
  scrambled over the whole int64 range (like hashed ids), so no partition holds a narrow id range;
- ``gate``: ``--gate-partitions`` partitions of ``--gate-rows`` rows with consent manifests, checked
  against the same revocation list.

Then it runs each phase in a fresh process (so each peak RSS is that phase's own) and prints:

1. ``arrow``: the gate's Arrow evidence pass (``EvidenceCollector``) over ``events``: rows/s.
2. ``gx``: ``expect_column_values_to_not_be_in_set(subject_id, <the revocation list>)`` through
   Great Expectations on ``--gx-partitions`` partitions of ``events``, and the Arrow pass on the
   same partitions, in the same process: seconds per partition and the per-row speed ratio (and the
   same with only ``--gx-small-set`` revoked ids: GX's cost with a large set is mostly serialising
   the set, not scanning rows).
3. ``gate``: ``evaluate_gate`` end to end on ``gate`` (discovery, fingerprints, manifests, Arrow
   evidence, one query to a local ``opa eval``): partitions/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FLAGS = {
    "face_recognition_training": "consent_face",
    "model_training": "consent_model",
    "analytics": "consent_analytics",
}
TARGETS = {"arrow_seconds": 15.0, "arrow_peak_rss_mb": 2048.0, "gx_ratio": 20.0, "gate_seconds": 10.0}


# --- data --------------------------------------------------------------------------------------


def generate_events(root: Path, partitions: int, rows: int, revoked: int, rows_per_subject: int, seed: int) -> dict:
    """``root/events/part=NNNNN/part-0.parquet``, ``root/conf/revoked.parquet`` and ``root/conf/events.json``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_partition = max(1, rows // rows_per_subject)
    started = time.perf_counter()
    for index in range(partitions):
        directory = root / "events" / f"part={index:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        subjects = scramble(index * per_partition + rng.integers(0, per_partition, rows, dtype=np.int64))
        table = pa.table(
            {
                "subject_id": subjects,
                "consent_face": rng.random(rows) < 0.999,
                "consent_model": rng.random(rows) < 0.5,
                "consent_analytics": rng.random(rows) < 0.9,
            }
        )
        pq.write_table(table, directory / "part-0.parquet", row_group_size=1 << 20)
    pool = partitions * per_partition
    listed = scramble(rng.choice(pool, size=min(revoked, pool), replace=False).astype(np.int64))
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"subject_id": listed}), conf / "revoked.parquet")
    write_config(conf, "events")
    return {"seconds": round(time.perf_counter() - started, 2), "subjects": pool, "revoked": len(listed)}


def scramble(ids):
    """A bijection of the int64 ids (an odd multiplier modulo 2**63): ids look like hashes."""
    import numpy as np

    return ((ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & np.uint64(2**63 - 1)).astype(np.int64)


def write_config(conf: Path, dataset: str) -> None:
    document = {
        "config_version": "1",
        "columns": {"subject_id": "subject_id", "consent": FLAGS},
        "revocations": {"path": "revoked.parquet"},
    }
    (conf / f"{dataset}.json").write_text(json.dumps(document))


def generate_gate(root: Path, partitions: int, rows: int, revoked_from: Path, seed: int) -> dict:
    """``root/gate/shard=NNNNN/`` with a Parquet file and a valid consent manifest each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_consent.manifests import SIDECAR_NAME
    from airflow_consent.models import MANIFEST_VERSION, Manifest
    from airflow_consent.sample_data import _studio_optin

    rng = np.random.default_rng(seed + 1)
    consent, provenance = _studio_optin(2024)
    manifest = Manifest(manifest_version=MANIFEST_VERSION, consent=consent, provenance=provenance).model_dump_json()
    started = time.perf_counter()
    for index in range(partitions):
        directory = root / "gate" / f"shard={index:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "subject_id": rng.integers(10**12, 2 * 10**12, rows, dtype=np.int64),  # never revoked
                    "consent_face": np.ones(rows, dtype=bool),
                    "consent_model": np.zeros(rows, dtype=bool),
                    "consent_analytics": np.ones(rows, dtype=bool),
                }
            ),
            directory / "part-0.parquet",
        )
        (directory / SIDECAR_NAME).write_text(manifest)
    conf = root / "gate_conf"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(revoked_from, conf / "revoked.parquet")
    write_config(conf, "gate")
    return {"seconds": round(time.perf_counter() - started, 2)}


# --- phases (each in its own process) -----------------------------------------------------------


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def warm_up() -> float:
    """Import what the evidence path imports on first use (once per process), so that it is timed apart.

    pyarrow imports pandas on its first array, and ``Table.group_by`` imports ``pyarrow.acero``
    (with ``pyarrow.dataset``): about 1 s here, where ``PYTHONDONTWRITEBYTECODE`` keeps Python from
    caching bytecode.
    """
    started = time.perf_counter()
    import pyarrow as pa
    import pyarrow.acero

    import airflow_consent.discovery
    import airflow_consent.evidence.collector
    import airflow_consent.manifests  # noqa: F401

    pa.array([0])
    return round(time.perf_counter() - started, 3)


def phase_arrow(root: Path, threads: int | None) -> dict:
    imports = warm_up()
    from airflow_consent.discovery import discover_partitions
    from airflow_consent.evidence.collector import EvidenceCollector

    started = time.perf_counter()
    collector = EvidenceCollector(threads=threads)
    settings = collector.settings(root / "conf", "events")
    collector.revocation_list(settings.revocations)
    listed = time.perf_counter()
    partitions = discover_partitions(str(root / "events"))
    measured = collector.measure(partitions, root / "conf")
    done = time.perf_counter()
    problems = [p for _, problems in measured for p in problems]
    if problems:
        raise SystemExit(f"evidence problems: {problems[:3]}")
    rows = sum(e.content.rows for e, _ in measured)
    return {
        "threads": collector.threads,
        "partitions": len(partitions),
        "rows": rows,
        "revoked_rows": sum(e.content.revoked.rows for e, _ in measured),
        "revocation_list_seconds": round(listed - started, 3),
        "seconds": round(done - started, 3),
        "rows_per_second": round(rows / (done - started)),
        "import_seconds": imports,
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_gx(root: Path, count: int, small_set: int) -> dict:
    import pyarrow.parquet as pq

    warm_up()
    from airflow_consent.discovery import discover_partitions
    from airflow_consent.evidence.collector import EvidenceCollector
    from airflow_consent.evidence.expectations import _import_gx

    partitions = discover_partitions(str(root / "events"))[:count]
    # The Arrow pass on exactly these partitions, one thread like GX; the list read (GX's
    # equivalent is building the expectation) is timed apart.
    collector = EvidenceCollector(threads=1)
    collector.revocation_list(collector.settings(root / "conf", "events").revocations)
    started = time.perf_counter()
    measured = collector.measure(partitions, root / "conf")
    arrow_seconds = time.perf_counter() - started
    arrow_rows = sum(e.content.rows for e, _ in measured)
    arrow_revoked = sum(e.content.revoked.rows for e, _ in measured)

    started = time.perf_counter()
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    imported = time.perf_counter()
    revoked = pq.read_table(root / "conf" / "revoked.parquet").column("subject_id").to_pylist()
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    batches = (
        context.data_sources.add_pandas("bench").add_dataframe_asset("p").add_batch_definition_whole_dataframe("w")
    )
    expectation = gx.expectations.ExpectColumnValuesToNotBeInSet(column="subject_id", value_set=revoked)
    small = gx.expectations.ExpectColumnValuesToNotBeInSet(column="subject_id", value_set=revoked[:small_set])
    prepared = time.perf_counter()
    validate_seconds = small_seconds = read_seconds = 0.0
    gx_rows = unexpected = 0
    for partition in partitions:
        t0 = time.perf_counter()
        frame = pq.read_table(partition.files[0].path, columns=["subject_id"]).to_pandas()
        t1 = time.perf_counter()
        result = batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation, result_format="BASIC")
        t2 = time.perf_counter()
        batches.get_batch(batch_parameters={"dataframe": frame}).validate(small, result_format="BASIC")
        t3 = time.perf_counter()
        read_seconds += t1 - t0
        validate_seconds += t2 - t1
        small_seconds += t3 - t2
        gx_rows += len(frame)
        unexpected += int(result.result["unexpected_count"])
    if unexpected != arrow_revoked:
        raise SystemExit(f"GX found {unexpected} revoked rows, Arrow {arrow_revoked}: not the same measurement")
    arrow_per_row = arrow_seconds / arrow_rows
    return {
        "partitions": len(partitions),
        "rows": gx_rows,
        "revoked_rows": unexpected,
        "import_seconds": round(imported - started, 2),
        "setup_seconds": round(prepared - imported, 2),
        "read_to_pandas_seconds_per_partition": round(read_seconds / len(partitions), 3),
        "validate_seconds_per_partition": round(validate_seconds / len(partitions), 3),
        "gx_rows_per_second": round(gx_rows / validate_seconds),
        "arrow_rows_per_second_same_partitions": round(arrow_rows / arrow_seconds),
        "ratio_per_row": round(validate_seconds / gx_rows / arrow_per_row, 1),
        "small_set": small_set,
        "small_set_validate_seconds_per_partition": round(small_seconds / len(partitions), 3),
        "small_set_ratio_per_row": round(small_seconds / gx_rows / arrow_per_row, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_gate(root: Path) -> dict:
    began = time.perf_counter()
    warm_up()
    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.engines.opa_binary import ensure_opa
    from airflow_consent.gate import DatasetSpec, evaluate_gate
    from airflow_consent.models import GateRequest

    engine = LocalOpaEngine(opa_binary=ensure_opa())
    engine.opa_version  # noqa: B018 - `opa version`, once per engine: timed apart
    imported = time.perf_counter()
    marks: list[tuple[float, str]] = []

    class Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            marks.append((time.perf_counter(), record.getMessage()))

    logger = logging.getLogger("benchmark.gate")
    logger.setLevel(logging.INFO)
    logger.addHandler(Marks())
    request = GateRequest(purpose="face_recognition_training", evaluated_at=datetime.now(UTC))
    started = time.perf_counter()
    report = evaluate_gate(
        request,
        [DatasetSpec(uri=str(root / "gate"), dataset_config_path=str(root / "gate_conf"))],
        engine,
        logger=logger,
    )
    done = time.perf_counter()
    asked = next(t for t, message in marks if message.startswith("Asking "))
    measured = next(message for _, message in marks if " row(s) of " in message)
    denied = [p.id for p in report.partitions if not p.allow]
    if denied:
        raise SystemExit(f"the benchmark's gate data should pass; denied: {denied[:3]}")
    return {
        "partitions": len(report.partitions),
        "seconds": round(done - started, 3),
        "partitions_per_second": round(len(report.partitions) / (done - started)),
        "collect_seconds": round(asked - started, 3),
        "query_seconds": round(done - asked, 3),
        "import_seconds": round(imported - began, 3),
        "evidence": measured,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- driver ------------------------------------------------------------------------------------


def run_phase(args: argparse.Namespace, phase: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--workdir",
        str(args.workdir),
        "--gx-partitions",
        str(args.gx_partitions),
        "--gx-small-set",
        str(args.gx_small_set),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _faster(ratio: float) -> str:
    """'Arrow 3.1x faster' or 'GX 2.0x faster' from GX's time per row over Arrow's."""
    return f"Arrow {ratio:g}x faster per row" if ratio >= 1 else f"GX {round(1 / ratio, 1):g}x faster per row"


def report(results: dict) -> str:
    arrow, gx, gate = results.get("arrow"), results.get("gx"), results.get("gate")
    lines = [f"cores: {results['cores']}  python {sys.version.split()[0]}  workdir {results['workdir']}"]
    if arrow:
        lines.append(
            f"arrow: {arrow['rows']:,} rows in {arrow['partitions']} partition(s) against {results['revoked']:,} revoked "
            f"subjects: {arrow['seconds']} s ({arrow['rows_per_second']:,} rows/s, {arrow['threads']} thread(s); "
            f"list read {arrow['revocation_list_seconds']} s; imports before, not counted: {arrow['import_seconds']} s), "
            f"{arrow['revoked_rows']:,} revoked rows, "
            f"peak RSS {arrow['peak_rss_mb']} MB"
        )
    if gx:
        lines.append(
            f"gx: expect_column_values_to_not_be_in_set on {gx['partitions']} partition(s): "
            f"{gx['validate_seconds_per_partition']} s/partition validating "
            f"(+{gx['read_to_pandas_seconds_per_partition']} s reading into pandas; import {gx['import_seconds']} s, "
            f"suite setup {gx['setup_seconds']} s), {gx['gx_rows_per_second']:,} rows/s vs Arrow "
            f"{gx['arrow_rows_per_second_same_partitions']:,} rows/s on the same partitions (1 thread): "
            f"Arrow {gx['ratio_per_row']}x faster per row; with only {gx['small_set']:,} revoked ids GX takes "
            f"{gx['small_set_validate_seconds_per_partition']} s/partition: {_faster(gx['small_set_ratio_per_row'])}; "
            f"peak RSS {gx['peak_rss_mb']} MB"
        )
    if gate:
        lines.append(
            f"gate: {gate['partitions']:,} partitions end to end in {gate['seconds']} s "
            f"({gate['partitions_per_second']:,} partitions/s; collect {gate['collect_seconds']} s, "
            f"OPA query + checks {gate['query_seconds']} s; imports before, not counted: {gate['import_seconds']} s), "
            f"peak RSS {gate['peak_rss_mb']} MB"
        )
    lines.append("targets:")
    checks = []
    if arrow:
        checks.append(
            (
                f"{arrow['rows']:,} rows vs {results['revoked']:,} revoked <= {TARGETS['arrow_seconds']:g} s",
                arrow["seconds"] <= TARGETS["arrow_seconds"],
                f"{arrow['seconds']} s",
            )
        )
        checks.append(
            (
                f"peak RSS <= {TARGETS['arrow_peak_rss_mb']:g} MB",
                arrow["peak_rss_mb"] <= TARGETS["arrow_peak_rss_mb"],
                f"{arrow['peak_rss_mb']} MB",
            )
        )
    if gx:
        checks.append(
            (
                f"Arrow >= {TARGETS['gx_ratio']:g}x faster per row than GX",
                gx["ratio_per_row"] >= TARGETS["gx_ratio"],
                f"{gx['ratio_per_row']}x",
            )
        )
    if gate:
        checks.append(
            (
                f"{gate['partitions']:,} partitions gated <= {TARGETS['gate_seconds']:g} s",
                gate["seconds"] <= TARGETS["gate_seconds"],
                f"{gate['seconds']} s",
            )
        )
    for label, ok, value in checks:
        lines.append(f"  [{'met' if ok else 'MISSED'}] {label}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100, help="partitions of the events dataset (100)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per events partition (1,000,000)")
    parser.add_argument("--revoked", type=int, default=1_000_000, help="subjects on the revocation list (1,000,000)")
    parser.add_argument("--rows-per-subject", type=int, default=4, help="average rows per subject (4)")
    parser.add_argument("--gx-partitions", type=int, default=1, help="events partitions run through GX (1)")
    parser.add_argument(
        "--gx-small-set",
        type=int,
        default=1000,
        help="also time GX with only this many revoked ids, to separate its per-row cost (1,000)",
    )
    parser.add_argument("--gate-partitions", type=int, default=10_000, help="partitions of the gate dataset (10,000)")
    parser.add_argument("--gate-rows", type=int, default=100, help="rows per gate partition (100)")
    parser.add_argument("--threads", type=int, default=0, help="evidence threads (default: the collector's)")
    parser.add_argument("--phases", default="arrow,gx,gate", help="which phases to run (arrow,gx,gate)")
    parser.add_argument("--workdir", type=Path, help="keep the data here; reused if it already holds data")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        root = args.workdir
        phases = {
            "arrow": lambda: phase_arrow(root, args.threads or None),
            "gx": lambda: phase_gx(root, args.gx_partitions, args.gx_small_set),
            "gate": lambda: phase_gate(root),
        }
        result = phases[args.phase]()
        print(json.dumps(result))
        return 0

    temporary = args.workdir is None
    args.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="consent-evidence-bench-")).resolve()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    results: dict = {
        "cores": os.cpu_count(),
        "workdir": str(args.workdir),
        "args": {k: v for k, v in vars(args).items() if k not in {"phase", "json", "workdir"}},
    }
    try:
        marker = args.workdir / "generated.json"
        wanted = {
            k: getattr(args, k)
            for k in ("partitions", "rows", "revoked", "rows_per_subject", "gate_partitions", "gate_rows", "seed")
        }
        if marker.exists() and json.loads(marker.read_text()).get("args") == wanted:
            generated = json.loads(marker.read_text())
            print(f"reusing the data in {args.workdir}", flush=True)
        else:
            shutil.rmtree(args.workdir / "events", ignore_errors=True)
            shutil.rmtree(args.workdir / "gate", ignore_errors=True)
            print(
                f"generating {args.partitions} x {args.rows:,} rows and {args.gate_partitions:,} gate partitions "
                f"in {args.workdir} ...",
                flush=True,
            )
            events = generate_events(
                args.workdir, args.partitions, args.rows, args.revoked, args.rows_per_subject, args.seed
            )
            gate = generate_gate(
                args.workdir, args.gate_partitions, args.gate_rows, args.workdir / "conf" / "revoked.parquet", args.seed
            )
            generated = {"args": wanted, "events": events, "gate": gate}
            marker.write_text(json.dumps(generated))
        results["generated"] = generated
        results["revoked"] = generated["events"]["revoked"]
        for phase in phases:
            print(f"running {phase} ...", flush=True)
            results[phase] = run_phase(args, phase)
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
