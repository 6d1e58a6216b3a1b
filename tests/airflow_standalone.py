"""A real Airflow for integration tests: ``airflow standalone`` in its own home, on a free port.

Use it as a context manager::

    from airflow_standalone import airflow_standalone

    with airflow_standalone(dags_folder, env={"AIRFLOW_CONSENT_SAMPLE_DATA": str(data)}) as airflow:
        airflow.wait_for_dag("my_dag")
        airflow.unpause("my_dag")
        run_id = airflow.trigger("my_dag")
        assert airflow.wait_for_run("my_dag", run_id) == "success"
        assert airflow.task_states("my_dag", run_id) == {"gate": "success", "train": "success"}
        print(airflow.task_log("my_dag", run_id, "train"))
        print(airflow.run_command("airflow", "dags", "list-import-errors", "-o", "json").stdout)

or as a pytest fixture (one instance per module keeps the suite fast: start-up takes ~20 s on an idle
2-core machine, up to ~45 s on a busy one)::

    from airflow_standalone import standalone_fixture

    airflow = standalone_fixture(scope="module", dags=lambda root: write_my_dags(root / "dags"),
                                 env=lambda root: {"AIRFLOW_CONSENT_SAMPLE_DATA": str(root / "data")})

    @pytest.mark.integration
    def test_something(airflow): ...

What it runs: scheduler, dag-processor, api-server and triggerer (``airflow standalone`` starts them
from the venv's ``bin``, which is put first on PATH), on SQLite with the LocalExecutor, in a fresh
temporary ``AIRFLOW_HOME``. Every port it needs (API server, worker and triggerer log servers) is a
free one, so several instances (and several test sessions) can run side by side: start-up waits until
the API server's port is listened on by a process of this instance, and starts again on other ports
when another process took it first. The inherited environment is cleaned of ``AIRFLOW*`` variables (a
test session's ``AIRFLOW__CORE__UNIT_TEST_MODE`` must not leak in): pass what the DAGs need in
``env``. Examples are off, the scheduler / dag-processor intervals are short, workers wait 30 s for
the API server (not 5 s: a loaded machine answers slowly) and a task's retries come 3 s apart.

On exit every process it started is stopped: SIGTERM to the process group, SIGKILL after a grace
period, then a scan of ``/proc`` for any process still carrying this instance's ``AIRFLOW_HOME``;
a survivor is killed and reported as an error. Output of all components is in
``<home>/standalone.log`` (its tail is included in start-up and wait failures); each task attempt's
log is in ``<home>/logs`` (``failed_task_logs()`` gathers the failed ones; conftest adds them to the
report of a failed ``standalone`` test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from standalone_processes import free_port, port_taken, stop_all

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
TERMINAL_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
STARTUP_TIMEOUT = 180.0
PORT_ATTEMPTS = 3
_LOG_CONTEXT = frozenset(
    {
        "event",
        "timestamp",
        "level",
        "logger",
        "run_id",
        "try_number",
        "dag_id",
        "ti_id",
        "map_index",
        "task_id",
        "filename",
        "lineno",
        "chan",
        "sources",
    }
)

FAST_SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL": "5",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__API__EXPOSE_CONFIG": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "3",
}
_RUNNING: list[StandaloneAirflow] = []


class PortTaken(RuntimeError):
    """Another process listens on the port chosen for this instance's API server."""


def running() -> list[StandaloneAirflow]:
    """The instances started in this process and not yet stopped."""
    return list(_RUNNING)


class StandaloneAirflow:
    """A running ``airflow standalone``: its home, its URL and REST helpers with deadlines."""

    def __init__(self, home: Path, port: int, process: subprocess.Popen, log_path: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.log_path = log_path
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.started_in: float | None = None

    # --- plumbing --------------------------------------------------------------------------

    def output_tail(self, lines: int = 60) -> str:
        """The last lines all components wrote (scheduler, dag-processor, api-server, triggerer)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no output>"

    def port_taken(self) -> bool:
        """Whether the API server's port is listened on, and by no process of this instance."""
        return port_taken(self.port, str(self.home), self.process.pid)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with {self.process.returncode}:\n{self.output_tail()}")

    def request(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs) -> httpx.Response:
        """Call the API server; raise with the body and the output tail unless the status is expected."""
        response = self.client.request(method, path, **kwargs)
        if response.status_code not in set(expect):
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response

    def _wait(self, what: str, probe: Callable[[], object], timeout: float, interval: float = 0.5) -> object:
        """Call ``probe`` until it returns something truthy; fail with context after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self._check_alive()
            try:
                result = probe()
                if result:
                    return result
            except (httpx.HTTPError, AssertionError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:.0f} s waiting for {what}"
                    + (f" (last error: {last_error})" if last_error else "")
                    + f"\n--- standalone output ---\n{self.output_tail()}"
                )
            time.sleep(interval)

    def _wait_ready(self, timeout: float) -> None:
        started = time.monotonic()

        def api_answers() -> bool:
            if self.port_taken():  # another instance, or anything else, bound it first
                raise PortTaken(f"port {self.port} is listened on by a process that is not this instance's")
            return self.client.get("/api/v2/monitor/health").status_code == 200

        self._wait("the API server to answer", api_answers, timeout)
        password_file = self.home / "simple_auth_manager_passwords.json.generated"
        self._wait("the generated admin password", password_file.exists, timeout)
        password = json.loads(password_file.read_text())["admin"]
        token = self.request(
            "POST", "/auth/token", json={"username": "admin", "password": password}, expect=(200, 201)
        ).json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {token}"

        def components_healthy() -> bool:
            health = self.client.get("/api/v2/monitor/health").json()
            components = ("scheduler", "dag_processor", "triggerer")
            return all(health.get(c, {}).get("status") == "healthy" for c in components)

        self._wait(
            "scheduler, dag-processor and triggerer to heartbeat",
            components_healthy,
            max(timeout - (time.monotonic() - started), 5),
        )

    def run_command(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command (``airflow ...``, ``airflow-consent ...``) against this instance's home and env."""
        executable = Path(self.env["PATH"].split(os.pathsep)[0]) / argv[0]
        command = [str(executable) if executable.exists() else argv[0], *argv[1:]]
        return subprocess.run(command, env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout)

    # --- DAGs and runs ---------------------------------------------------------------------

    def wait_for_dag(self, dag_id: str, timeout: float = 60) -> dict:
        """Wait until the dag-processor has parsed and registered ``dag_id``; return its API record."""

        def parsed() -> dict | None:
            response = self.client.get(f"/api/v2/dags/{dag_id}")
            return response.json() if response.status_code == 200 else None

        return self._wait(f"DAG {dag_id!r} to be parsed", parsed, timeout)

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (new DAGs start paused)."""
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping | None = None) -> str:
        """Trigger a manual run now; return its run id."""
        body: dict = {"logical_date": None}
        if conf is not None:
            body["conf"] = dict(conf)
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The run's task instances as the API returns them (state, try_number, note, ...)."""
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task id -> state for every task instance of the run (map indexes collapsed)."""
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def wait_for_run(
        self, dag_id: str, run_id: str, *, states: Iterable[str] = TERMINAL_RUN_STATES, timeout: float = 120
    ) -> str:
        """Wait until the run reaches one of ``states`` (default: success or failed); return it."""
        wanted = set(states)
        return self._wait(
            f"run {dag_id}/{run_id} to reach {sorted(wanted)}",
            lambda: (s := self.run_state(dag_id, run_id)) in wanted and s,
            timeout,
        )

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        *,
        states: Iterable[str] = TERMINAL_TASK_STATES,
        timeout: float = 120,
    ) -> str:
        """Wait until ``task_id`` in the run reaches one of ``states``; return it."""
        wanted = set(states)
        return self._wait(
            f"task {dag_id}/{run_id}/{task_id} to reach {sorted(wanted)}",
            lambda: (s := self.task_states(dag_id, run_id).get(task_id)) in wanted and s,
            timeout,
        )

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str, note: str | None = None) -> None:
        """Mark a task instance ``success``/``failed``/``skipped`` as a UI user would (PATCH)."""
        body: dict = {"new_state": state}
        if note is not None:
            body["note"] = note
        self.request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", json=body)

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> None:
        """Clear one task instance so the scheduler runs it again (the run goes back to queued)."""
        self.request(
            "POST",
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": [task_id],
                "only_failed": False,
                "reset_dag_runs": True,
                "include_upstream": False,
                "include_downstream": False,
            },
        )

    def set_pool(self, name: str, slots: int) -> None:
        """Create the pool ``name`` or change its slots (0 slots holds its tasks in ``scheduled``)."""
        response = self.client.patch(
            f"/api/v2/pools/{name}",
            params={"update_mask": "slots"},
            json={"name": name, "slots": slots, "include_deferred": False},
        )
        if response.status_code == 404:
            self.request("POST", "/api/v2/pools", json={"name": name, "slots": slots}, expect=(200, 201))
        elif response.status_code != 200:
            raise AssertionError(f"PATCH pool {name} -> {response.status_code}: {response.text[:2000]}")

    def stop(self) -> None:
        """Stop every process of this instance (its home stays)."""
        self.client.close()
        stop_all(self.process, str(self.home))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str:
        """The task's log text for ``try_number`` (default: the latest try)."""
        if try_number is None:
            ti = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").json()
            try_number = max(ti["try_number"], 1)
        response = self.request(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        ).json()
        content = response.get("content")
        if not isinstance(content, list):
            return str(content)
        return _readable(content)

    def log_file(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> Path:
        """Where a task attempt's log is written (Airflow's default ``log_filename_template``)."""
        return (
            self.home
            / "logs"
            / f"dag_id={dag_id}"
            / f"run_id={run_id}"
            / f"task_id={task_id}"
            / f"attempt={try_number}.log"
        )

    def failed_task_logs(self, chars: int = 4000) -> str:
        """The tail of each attempt's log of every failed or retrying task instance, newest first."""
        try:
            response = self.client.get(
                "/api/v2/dags/~/dagRuns/~/taskInstances",
                params={"state": ["failed", "up_for_retry"], "order_by": "-end_date", "limit": 8},
            )
        except httpx.HTTPError as exc:
            return f"<task instances unavailable: {exc!r}>"
        if response.status_code != 200:
            return f"<task instances unavailable: {response.status_code} {response.text[:500]}>"
        parts = []
        for ti in response.json()["task_instances"]:
            for attempt in range(1, max(ti["try_number"], 1) + 1):
                path = self.log_file(ti["dag_id"], ti["dag_run_id"], ti["task_id"], attempt)
                try:
                    lines = [
                        json.loads(line) if line.startswith("{") else line
                        for line in path.read_text(errors="replace").splitlines()
                    ]
                except (OSError, json.JSONDecodeError) as exc:
                    parts.append(f"--- {path}: unreadable ({exc})")
                    continue
                parts.append(f"--- {ti['state']}: {path} (last {chars} characters)\n{_readable(lines)[-chars:]}")
        return "\n".join(parts) or "<no failed or retrying task instances>"

    def import_errors(self) -> list[dict]:
        """``GET /api/v2/importErrors``: each with ``filename`` and ``stack_trace``."""
        return self.request("GET", "/api/v2/importErrors", params={"limit": 100}).json()["import_errors"]

    def wait_for_import_error(self, filename_endswith: str, timeout: float = 60) -> dict:
        """Wait until a DAG file whose path ends with ``filename_endswith`` has an import error."""

        def found() -> dict | None:
            return next((e for e in self.import_errors() if e["filename"].endswith(filename_endswith)), None)

        return self._wait(f"an import error for {filename_endswith!r}", found, timeout)


def _readable(lines: list) -> str:
    """Task log lines as text: each JSON line's event followed by its fields other than the context,
    an exception (``error_detail``) as a Python traceback would show it."""
    return "\n".join(
        " ".join(
            [str(line.get("event", ""))]
            + [
                _traceback(v) if k == "error_detail" and isinstance(v, list) else f"{k}={v}"
                for k, v in line.items()
                if k not in _LOG_CONTEXT
            ]
        )
        if isinstance(line, dict)
        else str(line)
        for line in lines
    )


def _traceback(error_detail: list[dict]) -> str:
    return "".join(
        "\nTraceback (most recent call last):"
        + "".join(
            f'\n  File "{f.get("filename")}", line {f.get("lineno")}, in {f.get("name")}'
            for f in error.get("frames", [])
        )
        + f"\n{error.get('exc_type')}: {error.get('exc_value')}"
        for error in error_detail
    )


@contextmanager
def airflow_standalone(
    dags_folder: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[StandaloneAirflow]:
    """Start ``airflow standalone`` over ``dags_folder``; yield it once it serves; stop everything on exit.

    ``env`` adds or overrides environment variables of every component (``AIRFLOW__SECTION__KEY``
    settings included). ``home`` defaults to a new temporary directory, removed afterwards.
    """
    owns_home = home is None
    home_path = Path(tempfile.mkdtemp(prefix="airflow-standalone-") if owns_home else home).resolve()
    home_path.mkdir(parents=True, exist_ok=True)
    try:
        airflow = _launch(home_path, dags_folder, env, startup_timeout)
        _RUNNING.append(airflow)
        try:
            yield airflow
        finally:
            _RUNNING.remove(airflow)
            airflow.stop()
    finally:
        if owns_home:
            import shutil

            shutil.rmtree(home_path, ignore_errors=True)


def _launch(
    home_path: Path, dags_folder: str | os.PathLike, env: Mapping[str, str] | None, startup_timeout: float
) -> StandaloneAirflow:
    """Start an instance and wait until it serves; start again on other ports if one was taken."""
    started = time.monotonic()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        airflow = _start(home_path, dags_folder, env)
        try:
            airflow._wait_ready(startup_timeout)
            airflow.started_in = time.monotonic() - started
            return airflow
        except BaseException as exc:
            lost_port = isinstance(exc, PortTaken) or airflow.port_taken()
            airflow.stop()
            if not lost_port or attempt == PORT_ATTEMPTS:
                raise
            print(f"airflow standalone: port {airflow.port} was taken by another process, starting again")
    raise AssertionError("the last attempt returns or raises")


def _start(home_path: Path, dags_folder: str | os.PathLike, env: Mapping[str, str] | None) -> StandaloneAirflow:
    """Launch ``airflow standalone`` in ``home_path`` on newly chosen free ports; do not wait for it."""
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    child_env.update(FAST_SETTINGS)
    child_env.update(
        {
            "AIRFLOW_HOME": str(home_path),
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder).resolve()),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    child_env.update(env or {})
    log_path = home_path / "standalone.log"
    with open(log_path, "ab") as log_file:  # appended: a start again after a lost port keeps the first's output
        process = subprocess.Popen(
            [str(Path(venv_bin) / "airflow"), "standalone"],
            cwd=home_path,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg stops every component
        )
    return StandaloneAirflow(home_path, port, process, log_path, child_env)


def standalone_fixture(
    *,
    scope: str = "module",
    dags: Callable[[Path], Path],
    env: Callable[[Path], Mapping[str, str]] | None = None,
):
    """A pytest fixture yielding a ``StandaloneAirflow``.

    ``dags(root)`` writes the DAG files (and any data) under the fresh directory ``root`` and returns
    the dags folder; ``env(root)`` returns extra environment variables for the components.
    """

    @pytest.fixture(scope=scope)
    def _standalone(tmp_path_factory) -> Iterator[StandaloneAirflow]:
        root = tmp_path_factory.mktemp("standalone")
        folder = dags(root)
        with airflow_standalone(folder, env=env(root) if env else None, home=root / "airflow_home") as airflow:
            yield airflow

    return _standalone
