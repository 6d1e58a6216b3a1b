"""Benchmark how long a consent trigger's evaluation blocks the triggerer's event loop.

    .venv/bin/python benchmarks/triggerer_loop.py                       # 10,000 partitions
    .venv/bin/python benchmarks/triggerer_loop.py --partitions 2000     # quick

``aevaluate_gate`` (what ``ConsentPolicyTrigger`` runs) evaluates the partitions of a generated
dataset while a probe coroutine on the same loop sleeps 1 ms at a time; every gap between the
probe's wake-ups beyond its sleep is time the loop was blocked. Printed per engine (a local
``opa eval``, and an ``opa run --server`` through ``OpaHook``'s async client) and per chunk size:
the longest stall, the stalls over 50 ms, and the evaluation's wall time. The baseline is the
same evaluation in one chunk (the query size before chunking).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BUDGET_MS = 50.0


async def measure(engine, specs, chunk_size: int) -> dict:
    from airflow_consent.gate import aevaluate_gate
    from airflow_consent.models import GateRequest

    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            stalls.append((loop.time() - before - 0.001) * 1000)

    watcher = asyncio.create_task(probe())
    request = GateRequest(purpose="face_recognition_training", evaluated_at=datetime.now(UTC))
    started = time.perf_counter()
    report = await aevaluate_gate(request, specs, engine, chunk_size=chunk_size)
    seconds = time.perf_counter() - started
    done.set()
    await watcher
    if not report.allow:
        raise SystemExit("the benchmark's data should pass")
    return {
        "chunk_size": chunk_size,
        "seconds": round(seconds, 2),
        "max_stall_ms": round(max(stalls), 1),
        "stalls_over_budget": sum(s > BUDGET_MS for s in stalls),
    }


def opa_server(opa: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(opa), "run", "--server", "--addr", f"127.0.0.1:{port}", "--bundle", str(REPO / "policies")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.kill()
    raise SystemExit("opa run --server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--workdir", type=Path, help="keep the generated data here (reused when present)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="consent-bench-loop-"))
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
    from evidence import generate_events, generate_gate

    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.engines.opa_binary import ensure_opa
    from airflow_consent.gate import DatasetSpec
    from airflow_consent.hooks.opa import OpaHook

    data = workdir / f"loop-{args.partitions}"
    if not (data / "gate").exists():
        generate_events(data, partitions=1, rows=1000, revoked=100, rows_per_subject=1, seed=7)
        generate_gate(data, args.partitions, 10, data / "conf" / "revoked.parquet", seed=7)
    specs = [DatasetSpec(uri=str(data / "gate"), dataset_config_path=str(data / "gate_conf"))]

    opa = ensure_opa()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    os.environ["AIRFLOW_CONN_OPA_BENCH"] = json.dumps({"conn_type": "opa", "host": "127.0.0.1", "port": port})
    server = opa_server(opa, port)
    try:
        engines = {"local opa eval": LocalOpaEngine(opa_binary=opa), "opa server (OpaHook)": OpaHook("opa_bench")}
        print(
            f"{args.partitions} partitions; a stall is loop time lost beyond the probe's 1 ms sleep "
            f"(budget {BUDGET_MS:g} ms)"
        )
        for name, engine in engines.items():
            for chunk in [*args.chunks, args.partitions]:
                result = asyncio.run(measure(engine, specs, chunk))
                label = "one query (baseline)" if chunk == args.partitions else f"chunks of {chunk}"
                print(
                    f"  {name:22} {label:22} longest stall {result['max_stall_ms']:7.1f} ms, "
                    f"{result['stalls_over_budget']:3d} over budget, {result['seconds']:6.2f} s"
                )
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
