"""Shared fixtures: a real OPA binary and server, and an isolated Airflow home.

Airflow reads its configuration at import, so the environment is set here before any test
module imports it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-consent-tests-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Tests change [consent] settings per test through AIRFLOW__CONSENT__* variables; a deployment's
# processes refuse such changes (airflow_consent.config.check_environment, tested in test_settings.py).
os.environ.setdefault("AIRFLOW_CONSENT_LIVE_SETTINGS", "1")

from dag_runs import airflow_db  # noqa: E402, F401 - the Airflow metadata DB for DagBag + dag.test() tests
from postgres import postgres_server, postgres_url  # noqa: E402, F401 - a real PostgreSQL for ledger tests

from airflow_consent.engines.opa_binary import ensure_opa  # noqa: E402
from airflow_consent.policies import policy_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that uses the PostgreSQL server, so ``-m "not postgres"`` leaves it out.

    A test uses it when it depends on a PostgreSQL fixture, or when it is parametrized on the
    ``"postgresql"`` backend (those ask for ``postgres_url`` at run time, out of pytest's sight).
    """
    for item in items:
        params = item.callspec.params.values() if hasattr(item, "callspec") else ()
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())) or any(
            isinstance(value, str) and value == "postgresql" for value in params
        ):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed ``standalone`` test's report carries the logs of the failed task instances."""
    report = yield
    if report.failed and item.get_closest_marker("standalone"):
        import airflow_standalone

        for airflow in airflow_standalone.running():
            report.sections.append(
                (f"failed task logs of the airflow standalone at {airflow.url}", airflow.failed_task_logs())
            )
    return report


@pytest.fixture(scope="session")
def opa_binary() -> Path:
    """The pinned OPA binary, provisioned (built if need be) once per machine."""
    return ensure_opa()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_opa_server(
    binary: Path,
    bundle: Path | None,
    port: int | None = None,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``opa run --server`` on a free loopback port with ``bundle`` loaded (if any), ``args`` after
    it and the environment ``env`` (default: this process's); yield its URL once it listens."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{port}",
            "--log-level",
            "error",
            *(["--bundle", str(bundle)] if bundle else []),
            *args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"opa exited: {process.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("opa did not start listening within 30 s") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def opa_server(opa_binary: Path) -> Iterator[str]:
    """A real OPA server with the shipped policies, shared by the session."""
    with running_opa_server(opa_binary, policy_dir()) as url:
        yield url
