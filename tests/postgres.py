"""A real, throwaway PostgreSQL server for the tests: initdb into a temp dir, a free loopback port.

``scripts/bootstrap`` installs PostgreSQL (apt-get, as root) when no ``initdb`` is found. The server
refuses to run as root, so as root it runs as the ``postgres`` OS user (or ``nobody``).

- ``AIRFLOW_CONSENT_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/DB``: use that server instead
  (the user must be allowed to create databases).
- ``AIRFLOW_CONSENT_SKIP_POSTGRES=1``: skip the PostgreSQL tests, for developers with neither root
  nor PostgreSQL. Ignored when ``CI`` is set: there, a PostgreSQL that cannot start fails the tests.
- ``AIRFLOW_CONSENT_PG_BIN``: the directory with ``initdb`` and ``pg_ctl`` if not found by itself.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_ENV = "AIRFLOW_CONSENT_SKIP_POSTGRES"
URL_ENV = "AIRFLOW_CONSENT_TEST_POSTGRES_URL"
BIN_ENV = "AIRFLOW_CONSENT_PG_BIN"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why and what to do."""


def pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: $AIRFLOW_CONSENT_PG_BIN, PATH, or Debian's newest."""
    candidates = [os.environ.get(BIN_ENV, "")]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def _server_user() -> str | None:
    """As root, the unprivileged user the server runs as; otherwise None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _run(command: list[str], user: str | None, what: str, cwd: Path) -> None:
    prefix = ["runuser", "-u", user, "--"] if user else []
    done = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120, cwd=cwd)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh cluster on 127.0.0.1 and yield a superuser URL to its ``postgres`` database."""
    from conftest import free_port

    bindir = pg_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no initdb/pg_ctl found on PATH or in /usr/lib/postgresql/*/bin: run scripts/bootstrap as root "
            f"(it apt-get installs postgresql), or set {BIN_ENV}"
        )
    user = _server_user()
    # /tmp, not $TMPDIR: the server's user must be able to reach it (and a socket path must stay short)
    base = Path(tempfile.mkdtemp(prefix="consent-pg-", dir="/tmp" if user and Path("/tmp").is_dir() else None))
    data, log = base / "data", base / "server.log"
    if user:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    port = free_port()
    started = False
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user,
            "initdb",
            base,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=50"
        try:
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                user,
                "pg_ctl start",
                base,
            )
        except PostgresUnavailable as exc:
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"{exc}\nserver log:\n{server_log}") from None
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user, "pg_ctl stop", base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A superuser URL of a real PostgreSQL server: started for the session unless one is given."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    if os.environ.get(SKIP_ENV) and not os.environ.get("CI"):
        pytest.skip(f"PostgreSQL tests skipped: {SKIP_ENV} is set")
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(
            f"PostgreSQL is required for the ledger tests and could not be started: {exc}\n"
            f"Developers without root or PostgreSQL may set {SKIP_ENV}=1 (ignored in CI) or "
            f"{URL_ENV} to a server of their own.",
            pytrace=False,
        )


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database on the test server, dropped afterwards.

    Only for tests marked ``postgres`` (conftest marks those it can see use this fixture), so that
    ``-m "not postgres"`` never starts the server.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(
            f"{request.node.nodeid} asks for PostgreSQL at run time: mark it @pytest.mark.postgres", pytrace=False
        )
    admin = make_url(request.getfixturevalue("postgres_server"))
    conninfo = {
        "host": admin.host,
        "port": admin.port,
        "user": admin.username,
        "password": admin.password,
        "dbname": admin.database,
    }
    name = f"consent_ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v is not None}, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(**{k: v for k, v in conninfo.items() if v is not None}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
