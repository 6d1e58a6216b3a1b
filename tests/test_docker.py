"""docker/: what can be checked without a Docker engine.

The compose file's structure (healthchecks, ``service_healthy`` dependencies, the ``[consent]``
settings), the Dockerfile's pins, ``.dockerignore``, and the OPA server as the image runs it: the
policy bundle beside the token authorization bundle under a real ``opa run --server``, with the
compose healthcheck command run against it. ``compose config`` runs when a compose binary is found
(``$AIRFLOW_CONSENT_COMPOSE``, else ``docker-compose`` or ``docker compose`` on PATH, else one built
from the Go module into the airflow-consent cache, ``<cache>/compose/<version>/compose``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import REPO, running_opa_server

from airflow_consent.engines.opa_binary import OPA_VERSION, cache_dir
from airflow_consent.policies import policy_revision

DOCKER = REPO / "docker"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _interpolated(value: str, env_file: Path = DOCKER / "env.example") -> str:
    """``value`` with compose's ``${NAME}`` / ``${NAME:?message}`` filled from ``env_file``."""
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    return re.sub(r"\$\{(\w+)(?::?[?-][^}]*)?\}", lambda m: values[m.group(1)], value)


def test_every_dependency_waits_for_a_healthy_service(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], f"{name} has no healthcheck"
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for dependency, condition in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}: {condition}"
    for name in AIRFLOW_SERVICES:
        assert {"postgres", "opa"} <= set(services[name]["depends_on"]), name
        if name != "airflow-apiserver":  # the api-server migrates the metadata DB first
            assert "airflow-apiserver" in services[name]["depends_on"], name


def test_airflow_components_share_one_consent_configuration(compose: dict) -> None:
    services = compose["services"]
    assert {name: services[name]["command"] for name in AIRFLOW_SERVICES} == AIRFLOW_SERVICES
    environments = [_environment(services[name]) for name in AIRFLOW_SERVICES]
    consent = {key: value for key, value in environments[0].items() if key.startswith("AIRFLOW__CONSENT__")}
    assert {"AIRFLOW__CONSENT__OPA_CONN_ID", "AIRFLOW__CONSENT__LEDGER_URL", "AIRFLOW__CONSENT__LEDGER_SECRET"} <= set(
        consent
    )
    for env in environments:
        assert {k: v for k, v in env.items() if k.startswith("AIRFLOW__CONSENT__")} == consent
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == environments[0]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    env = environments[0]
    assert env["AIRFLOW__CONSENT__LEDGER_SECRET"].startswith("${")  # from docker/.env, never a literal
    metadata_db = _interpolated(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).rsplit("/", 1)[1]
    ledger_db = _interpolated(env["AIRFLOW__CONSENT__LEDGER_URL"]).rsplit("/", 1)[1]
    assert (metadata_db, ledger_db) == ("airflow", "consent_ledger")
    init_sql = (DOCKER / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE airflow" in init_sql and "CREATE DATABASE consent_ledger" in init_sql
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]

    connection = json.loads(_interpolated(env[f"AIRFLOW_CONN_{env['AIRFLOW__CONSENT__OPA_CONN_ID'].upper()}"]))
    opa_env = _environment(services["opa"])
    assert connection["host"] == "opa" and connection["port"] == 8181
    assert connection["password"] == _interpolated(opa_env["OPA_AUTH_TOKEN"])  # the server's token


def test_compose_paths_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        if build := service.get("build"):
            context = DOCKER / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source}"


def test_image_pins_opa_and_the_locked_dependencies() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"ARG OPA_VERSION={OPA_VERSION}\n" in dockerfile
    assert "--constraint /opt/airflow-consent/requirements/dev.lock" in dockerfile
    assert "sha256sum -c" in dockerfile
    assert "python -m airflow_consent.sample_data" in dockerfile
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements" / "dev.lock").read_text(), re.M)
    assert airflow_pin and f"apache/airflow:{airflow_pin.group(1)}-python3.11" in dockerfile
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".airflow-home", "sample_data", ".pytest_cache", ".mypy_cache", "docker/.env"} <= ignored


def _compose_command() -> list[str] | None:
    if explicit := os.environ.get("AIRFLOW_CONSENT_COMPOSE"):
        return explicit.split()
    if found := shutil.which("docker-compose"):
        return [found]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    built = sorted((cache_dir() / "compose").glob("*/compose"))
    return [str(built[-1])] if built else None


def test_compose_config_passes() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no compose binary (set AIRFLOW_CONSENT_COMPOSE); the YAML checks above still ran")
    done = subprocess.run(
        [*command, "-f", str(DOCKER / "compose.yaml"), "--env-file", str(DOCKER / "env.example"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


# --- the OPA server as the opa-server image runs it ---------------------------------------------


@pytest.fixture(scope="module")
def policy_bundle(opa_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle the Dockerfile builds: a copy of policies/ with roots ["consent"], bundled by the CLI."""
    work = tmp_path_factory.mktemp("bundle")
    shutil.copytree(REPO / "policies", work / "policies")
    (work / "policies" / ".manifest").write_text('{"roots": ["consent"]}\n')
    target = work / "policies.tar.gz"
    cli = Path(sys.executable).parent / "airflow-consent"
    subprocess.run(
        [str(cli), "policy", "bundle", str(work / "policies"), "--opa", str(opa_binary), "-o", str(target)],
        check=True,
        capture_output=True,
    )
    return target


@contextmanager
def _opa_server(binary: Path, bundle: Path, token: str | None) -> Iterator[str]:
    """The image's OPA server: the policy bundle, the authz bundle, token authentication."""
    env = {key: value for key, value in os.environ.items() if key != "OPA_AUTH_TOKEN"}
    if token is not None:
        env["OPA_AUTH_TOKEN"] = token
    args = ["--authentication=token", "--authorization=basic", str(DOCKER / "opa")]
    with running_opa_server(binary, bundle, args=args, env=env) as url:
        yield url


def _status(url: str, token: str | None = None, body: dict | None = None) -> int | None:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _decision(url: str, token: str) -> dict:
    request = urllib.request.Request(
        f"{url}/v1/data/consent/main/decision?provenance=true", data=b'{"input": {"partitions": []}}'
    )
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_opa_server_requires_the_token(opa_binary: Path, policy_bundle: Path) -> None:
    decision = "/v1/data/consent/main/decision"
    with _opa_server(opa_binary, policy_bundle, TOKEN) as url:
        assert _status(f"{url}/health") == 200  # the healthcheck needs no token
        assert _status(f"{url}{decision}", body={"input": {}}) == 401
        assert _status(f"{url}{decision}", token="wrong", body={"input": {}}) == 401
        assert _status(f"{url}/v1/policies", token="wrong") == 401
        assert _status(f"{url}/v1/data", token="") == 401
        answer = _decision(url, TOKEN)
        assert answer["result"]["allow"] is False
        assert answer["provenance"]["version"] == OPA_VERSION
        assert answer["provenance"]["bundles"][str(policy_bundle)]["revision"] == policy_revision(REPO / "policies")


def test_opa_server_without_a_token_serves_nobody(opa_binary: Path, policy_bundle: Path) -> None:
    with _opa_server(opa_binary, policy_bundle, "") as url:
        assert _status(f"{url}/v1/data/consent/main/decision", body={"input": {}}) == 401
        assert _status(f"{url}/v1/data/consent/main/decision", token="", body={"input": {}}) == 401


def test_opa_healthcheck_command(compose: dict, opa_binary: Path, policy_bundle: Path) -> None:
    """The compose healthcheck (OPA asking itself, the image has no curl) passes on a healthy server
    and fails with none listening."""
    test = compose["services"]["opa"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "/opa"]
    with _opa_server(opa_binary, policy_bundle, TOKEN) as url:
        port = url.rsplit(":", 1)[1]
        command = [str(opa_binary), *(arg.replace("127.0.0.1:8181", f"127.0.0.1:{port}") for arg in test[2:])]
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


def test_opa_authz_policy_passes_opa_check(opa_binary: Path) -> None:
    for args in (["check", "--strict"], ["fmt", "--list", "--fail"]):
        done = subprocess.run([str(opa_binary), *args, str(DOCKER / "opa")], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
