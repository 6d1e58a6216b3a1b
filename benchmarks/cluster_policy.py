"""Benchmark the cluster policy on training DAGs of growing size, against two baselines from the same run.

    .venv/bin/python benchmarks/cluster_policy.py                        # 100, 400 and 800 tasks
    .venv/bin/python benchmarks/cluster_policy.py --tasks 800 --shape fan --repeat 3

Each DAG is tagged ``training`` and starts with a consent gate (so it imports and every other task
is a training task that gets the clearance). ``--shape chain`` (the default, the worst case for a
walk per task): gate >> t1 >> t2 >> ... ; ``fan``: gate >> [t1 ... tN] >> join.

For each size it writes the DAG file and, in this one process, times (best of ``--repeat``):

- ``parse``: ``DagBag`` of the file with Airflow's policy hooks replaced by no-ops: the baseline a
  DAG author pays anyway;
- ``policy``: this checkout's ``dag_policy(dag)`` and ``task_policy(task)`` for every task, as
  ``DagBag.bag_dag`` calls them, on a freshly parsed copy of the DAG (the clearance is installed on
  it, so each round needs a new copy);
- ``previous``: the same with ``airflow_consent/cluster_policy.py`` as of ``--previous`` (a git
  revision: the quadratic implementation, loaded from git into its own module).

and prints policy / parse and previous / policy. Both implementations must wrap the same tasks.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PREVIOUS = "49b670b6aaa8ff573574027c0cfd210eca35ec8d"  # the last commit with the quadratic policy
TARGET_SECONDS = {800: 0.050}

HEADER = """\
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_consent.operators.consent import ConsentGateOperator

with DAG(dag_id="bench_training", schedule=None, tags=["training"]):
    gate = ConsentGateOperator(task_id="consent_gate", datasets=["/data/x"], purpose="face_recognition_training")
"""
SHAPES = {
    "chain": "    previous = gate\n    for i in range({n}):\n"
    '        previous = previous >> EmptyOperator(task_id=f"t{{i}}")\n',
    "fan": '    gate >> [EmptyOperator(task_id=f"t{{i}}") for i in range({n})] >> EmptyOperator(task_id="join")\n',
}


def dag_file(folder: Path, shape: str, tasks: int) -> Path:
    """A training DAG of ``tasks`` tasks, the gate included."""
    others = tasks - 1 if shape == "chain" else tasks - 2
    path = folder / f"bench_{shape}_{tasks}.py"
    path.write_text(HEADER + SHAPES[shape].format(n=others))
    return path


def load_previous(revision: str):
    """``airflow_consent/cluster_policy.py`` at ``revision``, as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:airflow_consent/cluster_policy.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("consent_cluster_policy_previous", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{revision[:8]}:airflow_consent/cluster_policy.py", "exec"), module.__dict__)
    return module


def parsed(path: Path):
    """The file's DAG, parsed by a ``DagBag`` with no cluster policy, and the seconds it took."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    hooks = settings.dag_policy, settings.task_policy
    settings.dag_policy = settings.task_policy = lambda _: None
    try:
        started = time.perf_counter()
        dagbag = DagBag(dag_folder=str(path))
        seconds = time.perf_counter() - started
    finally:
        settings.dag_policy, settings.task_policy = hooks
    if dagbag.import_errors:
        raise SystemExit(f"the benchmark DAG does not import: {dagbag.import_errors}")
    return dagbag.dags["bench_training"], seconds


def run_policy(module, dag) -> tuple[float, set[str]]:
    """Seconds for ``module``'s hooks over ``dag`` as ``DagBag.bag_dag`` calls them, and the tasks wrapped."""
    started = time.perf_counter()
    module.dag_policy(dag)
    for task in dag.tasks:
        module.task_policy(task)
    seconds = time.perf_counter() - started
    wrapped = {t.task_id for t in dag.tasks if getattr(vars(t).get("pre_execute"), module.CLEARANCE_MARKER, False)}
    return seconds, wrapped


def measure(path: Path, repeat: int, previous) -> dict:
    from airflow_consent import cluster_policy

    parse, policy, before = [], [], []
    for _ in range(repeat):
        dag, seconds = parsed(path)
        parse.append(seconds)
        seconds, wrapped = run_policy(cluster_policy, dag)
        policy.append(seconds)
        if previous is not None:
            dag, _ = parsed(path)
            seconds, wrapped_before = run_policy(previous, dag)
            before.append(seconds)
            if wrapped_before != wrapped:
                raise SystemExit(f"the two implementations wrap different tasks: {wrapped ^ wrapped_before}")
    return {
        "tasks": len(dag.tasks),
        "wrapped": len(wrapped),
        "parse": min(parse),
        "policy": min(policy),
        "previous": min(before) if before else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="100,400,800", help="DAG sizes, tasks per DAG (100,400,800)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="chain", help="chain (default) or fan")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per size; the best is printed (5)")
    parser.add_argument(
        "--previous", default=PREVIOUS, help="git revision of the previous implementation; 'none' to skip it"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="consent-policy-bench-home-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # not "Filling up the DagBag" each round
    previous = None if args.previous == "none" else load_previous(args.previous)
    sizes = [int(n) for n in args.tasks.split(",")]
    print(
        f"cores: {os.cpu_count()}  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
        f"shape: {args.shape}  best of {args.repeat}  previous: {args.previous[:12]}"
    )
    with tempfile.TemporaryDirectory(prefix="consent-policy-bench-") as folder:
        for size in sizes:
            row = measure(dag_file(Path(folder), args.shape, size), args.repeat, previous)
            line = (
                f"{row['tasks']:>5} tasks ({row['wrapped']} wrapped): policy {row['policy'] * 1000:8.1f} ms | "
                f"parse without policy {row['parse'] * 1000:8.1f} ms, policy/parse {row['policy'] / row['parse']:.3f}"
            )
            if row["previous"] is not None:
                line += (
                    f" | previous {row['previous'] * 1000:8.1f} ms, previous/policy "
                    f"{row['previous'] / row['policy']:.1f}x"
                )
            if (target := TARGET_SECONDS.get(size)) is not None:
                line += f" [{'met' if row['policy'] <= target else 'MISSED'}: <= {target * 1000:g} ms]"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
